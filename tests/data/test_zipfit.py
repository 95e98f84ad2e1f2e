"""ZIP-FIT selection (Obbad et al. 2024, arXiv 2410.18194): `data.select.by='zipfit'` keeps the
documents most aligned, by gzip compression distance, with a target task's documents
(research/data/selection.py)."""

import gzip
import json

import ml_collections
import numpy as np
import pytest

from research import errors
from research.data import pipeline, selection, tasks
from research.data.synthetic import arithmetic

NUM_PROSE, NUM_SUMS = 180, 20


def _gzip(text: str) -> int:
  return len(gzip.compress(text.encode('utf-8')))


def test_alignment_is_one_minus_the_mean_gzip_ncd_to_the_targets():
  texts = ['12+34=64', 'The assert statement checks a condition.', '']
  targets = ['5*6=03', '71+2=37', 'Assert statements insert debugging checks.']
  expected = []
  for x in texts:
    ncds = [(_gzip(x + y) - min(_gzip(x), _gzip(y))) / max(_gzip(x), _gzip(y)) for y in targets]
    expected.append(1 - sum(ncds) / len(ncds))
  np.testing.assert_allclose(selection.zipfit_alignment(texts, targets), expected, rtol=1e-12)


def _mixed(data_config, tmp_path, prose_documents):
  """A files task 'mixed' of stdlib prose with ~10% arithmetic problems (another seed than the
  target task 'sums') among it, each document's `kind` in its metadata."""
  rng = np.random.default_rng(0)
  prose = [prose_documents[i][1] for i in rng.choice(len(prose_documents), NUM_PROSE, False)]
  sums = [d['text'] for d in arithmetic.documents('train', 12345, NUM_SUMS)]
  documents = [{'text': t, 'kind': 'prose'} for t in prose] + [
      {'text': t, 'kind': 'arithmetic'} for t in sums]
  path, held_out = tmp_path / 'mixed.jsonl', tmp_path / 'held_out.jsonl'
  path.write_text(''.join(json.dumps(documents[i]) + '\n' for i in rng.permutation(len(documents))))
  held_out.write_text(json.dumps({'text': 'held out', 'kind': 'prose'}) + '\n')
  data_config.tasks = ml_collections.ConfigDict({  # every document of `path` in train
      'mixed': {'source': 'files', 'pattern': str(path), 'format': 'jsonl',
                'validation_pattern': str(held_out)},
      'sums': {'source': 'arithmetic', 'num_documents': 200}})
  data_config.mixture = ml_collections.ConfigDict({'mixed': 1.0})
  data_config.seq_len, data_config.mixture_block = 64, 16
  data_config.select.update({'by': 'zipfit', 'keep': 'highest', 'fraction': 0.1,
                             'zipfit': {'target': 'sums', 'split': 'train', 'size': 50}})
  return data_config


def test_zipfit_finds_arithmetic_hidden_in_prose(data_config, tmp_path, prose_documents):
  config = _mixed(data_config, tmp_path, prose_documents)
  data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  kept = data.rows.stores['mixed'].metadata
  report = data.rows.selected['mixed']
  assert report.kept_documents == len(kept) == round(0.1 * report.documents)
  share = sum(m['kind'] == 'arithmetic' for m in kept) / len(kept)
  assert share > 0.9, share
  # The sample of target documents is seeded: the same run keeps the same documents.
  again = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  assert again.rows.stores['mixed'].doc_ids == data.rows.stores['mixed'].doc_ids


@pytest.mark.parametrize('zipfit, match', [
    ({'target': '', 'split': 'train', 'size': 50}, r'data\.select\.zipfit\.target=\'\''),
    ({'target': 'sumz', 'split': 'train', 'size': 50}, r'data\.select\.zipfit\.target.*sumz'),
    ({'target': 'sums', 'split': 'test', 'size': 50}, r"data\.select\.zipfit\.split='test'"),
    ({'target': 'sums', 'split': 'train', 'size': 0}, r'data\.select\.zipfit\.size=0'),
    ({'target': 'sums', 'split': 'train'}, r'data\.select\.zipfit=.*exactly the keys'),
])
def test_bad_zipfit_config_names_the_key(data_config, zipfit, match):
  data_config.tasks = ml_collections.ConfigDict({'sums': {'source': 'arithmetic',
                                                          'num_documents': 200}})
  tasks.register_config_tasks(data_config)
  data_config.select.update({'by': 'zipfit', 'keep': 'highest', 'fraction': 0.1})
  data_config.select.zipfit = ml_collections.ConfigDict(zipfit)
  with pytest.raises(errors.UserError, match=match):
    selection.bind(data_config, ['sums'])
