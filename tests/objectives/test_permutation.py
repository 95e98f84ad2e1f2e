"""Reverse and permutation training: reversed units, seeded shuffles, alternating steps."""

import re

import ml_collections
import numpy as np
import pytest

from experiments import base
from research import config as config_lib
from research import errors
from research.data import pipeline
from research.data import store as store_lib
from research.data import vocabularies
from research.objectives import documents, permutation, registry

VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=8)
_TEXTS = ['Ada Lovelace was born in London. She studied mathematics!\nHer tutor was De Morgan.',
          'x', '']


def _store(texts):
  pieces = [np.array(VOCABULARY.encode(t) + [VOCABULARY.eos_id], np.int32) for t in texts]
  offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
  return store_lib.DocumentStore(tokens=np.concatenate(pieces), offsets=offsets,
                                 doc_ids=[str(i) for i in range(len(texts))], manifest={},
                                 directory='')


def _texts(store):
  return [VOCABULARY.decode(store.document(i)[:-1].tolist()) for i in range(store.num_documents)]


def test_words_sentences_and_tokens_are_reversed():
  store = _store(_TEXTS)
  rewritten = {unit: documents.Permute(1.0, unit, 'reverse', False).apply(
      store, 'task', VOCABULARY, seed=0) for unit in permutation.UNITS}
  by_unit = {unit: _texts(reversed_store) for unit, reversed_store in rewritten.items()}
  assert by_unit['word'][0] == ('Morgan. De was tutor Her mathematics! studied She London. in '
                                'born was Lovelace Ada')
  assert by_unit['sentence'][0] == ('Her tutor was De Morgan. She studied mathematics! Ada '
                                    'Lovelace was born in London.')
  assert by_unit['token'][0] == _TEXTS[0][::-1]
  assert [texts[1:] for texts in by_unit.values()] == [['x', '']] * 3
  for reversed_store in rewritten.values():  # EOS stays last, every token in the loss
    assert all(reversed_store.document(i)[-1] == VOCABULARY.eos_id for i in range(3))
    assert np.all(reversed_store.weights == 1.0)


def test_a_shuffle_is_a_seeded_permutation_and_the_rate_is_realised():
  store = _store(_TEXTS[:1] * 400)
  shuffle = documents.Permute(0.3, 'word', 'shuffle', False)
  texts = _texts(shuffle.apply(store, 'task', VOCABULARY, seed=1))
  changed = [text != _TEXTS[0] for text in texts]
  assert abs(sum(changed) - 120) < 4 * np.sqrt(400 * 0.3 * 0.7)
  assert all(sorted(text.split()) == sorted(_TEXTS[0].split()) for text in texts)
  assert texts == _texts(shuffle.apply(store, 'task', VOCABULARY, seed=1))
  assert texts != _texts(shuffle.apply(store, 'task', VOCABULARY, seed=2))


def _config(**settings):
  config = base.get_config()
  config.objective.name = 'permute'
  config.objective.permute.update(settings)
  return config


def test_alternate_steps_read_reversed_and_plain_documents(data_dir):
  config = _config(rate=1.0, unit='token', order='reverse', alternate=True)
  config.data.tasks = ml_collections.ConfigDict(
      {'sums': {'source': 'arithmetic', 'num_documents': 200}})
  config.data.mixture = ml_collections.ConfigDict({'sums': 1.0})
  config.data.store_dir, config.data.seq_len, config.train.steps = data_dir, 64, 10
  objective = registry.make_objective(config, VOCABULARY)
  data = pipeline.TrainData(config.data, 4, config.seed, 10, objective)
  for step in (0, 1, 2, 3):
    batch = data.batch(step)
    assert np.all(batch['weights'] == (batch['segment_ids'] > 0))
    first = batch['targets'][0][batch['segment_ids'][0] == batch['segment_ids'][0][0]].tolist()
    # An arithmetic document reads 'a+b=c'; reversed, 'c=b+a'.
    text = VOCABULARY.decode(first[:-1])
    forward = re.fullmatch(r'\d+[-+*]\d+=\d+', text)
    backward = re.fullmatch(r'\d+=\d+[-+*]\d+', text)
    assert bool(forward) == (step % 2 == 0) and bool(forward or backward), (step, text)


@pytest.mark.parametrize('settings, match', [
    ({'rate': 1.5}, r'objective\.permute\.rate=1\.5 is not a probability'),
    ({'unit': 'line'}, r"objective\.permute\.unit='line' must be one of \['token', 'word'"),
    ({'order': 'sorted'}, r"objective\.permute\.order='sorted' must be one of"),
])
def test_config_errors_name_the_key(settings, match):
  with pytest.raises(errors.UserError, match=match):
    registry.make_objective(_config(**settings), VOCABULARY)


@pytest.mark.parametrize('section, key, value', [
    ('permute', 'rate', 1.5), ('permute', 'unit', 'line'), ('permute', 'order', 'sorted'),
    ('mlm', 'rate', 0.0)])
def test_permute_and_mlm_keys_are_checked_while_another_objective_runs(section, key, value):
  """A typo in a switch that is off fails before a later switch turns it on."""
  config = base.get_config()
  config.objective[section][key] = value
  with pytest.raises(errors.UserError, match=rf"'objective\.{section}\.{key}'"):
    config_lib.check_ranges(config, config_lib.SWITCHED_RANGES)
    config_lib.check_choices(config)
