"""Scores computed by launch.score as data options read them (research/data/score_files.py):
orderings by a score file, selection and pruning (research/data/selection.py), the manifest checks,
and launch.score writing beside the document store."""

import json
import logging
import os
import re

import ml_collections
import numpy as np
import pytest

from experiments import base
from launch import score as score_command
from research import errors
from research.data import orderings, pipeline, score_files, selection, tasks, vocabularies
from research.data import store as store_lib
from research.objectives import registry
from tests import commands, test_scores

NUM_NOTES = 60


def _notes(data_config, tmp_path, ordering='easy_to_hard', order_by='quality'):
  """A files task 'notes' whose documents carry a distinct float `quality` in their metadata."""
  quality = np.random.default_rng(0).permutation(NUM_NOTES) / 7
  path = tmp_path / 'notes.jsonl'
  path.write_text(''.join(json.dumps({'text': f'note {i} ' + 'ab' * (i % 11), 'quality': q}) + '\n'
                          for i, q in enumerate(quality.tolist())))
  data_config.tasks = ml_collections.ConfigDict(
      {'notes': {'source': 'files', 'pattern': str(path), 'format': 'jsonl'}})
  data_config.mixture = ml_collections.ConfigDict({'notes': 1.0})
  data_config.seq_len = 32
  data_config.mixture_block = 16
  data_config.order.name, data_config.order.by = ordering, order_by
  tasks.register_config_tasks(data_config)
  return data_config, store_lib.load_store('notes', 'train', 'byte', data_config.store_dir)


def _write_scores(path, store, values, field='q', **manifest):
  """A score file of `values` (store order) in launch.score's format, with its manifest."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.writelines(json.dumps({'id': doc_id, 'num_tokens': 1, 'nll': 1.0, field: value}) + '\n'
                 for doc_id, value in zip(store.doc_ids, values))
  manifest = {'task': 'notes', 'split': 'train', 'vocabulary': 'byte',
              'store_fingerprint': store.manifest['fingerprint'], **manifest}
  with open(path + score_files.MANIFEST_SUFFIX, 'w') as f:
    json.dump(manifest, f)
  return path


def _data(config):
  return pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)


def _quality(store):
  return [m['quality'] for m in store.metadata]


def test_ordering_by_a_score_file_equals_ordering_by_the_same_metadata(data_config, tmp_path):
  config, store = _notes(data_config, tmp_path)
  by_metadata = _data(config)
  stored = _write_scores(score_files.stored_path(store.directory, 'hand'), store, _quality(store))
  elsewhere = _write_scores(str(tmp_path / 'elsewhere' / 'hand.jsonl'), store, _quality(store))
  for reference in ('hand:q', f'{elsewhere}:q'):
    config.order.by = reference
    by_file = _data(config)
    np.testing.assert_array_equal(by_file.rows.row_scores[False][0], by_metadata.rows.row_scores[False][0])
    for step in (0, 3, 11):
      np.testing.assert_array_equal(by_file.example_sources(step)[1],
                                    by_metadata.example_sources(step)[1])
  assert np.ptp(by_metadata.rows.row_scores[False][0]) > 1  # the order is by a score that varies
  assert stored == os.path.join(store.directory, 'scores', 'hand.jsonl')


@pytest.mark.parametrize('manifest, match', [
    ({'task': 'sums'}, r"its manifest: task 'sums', not 'notes'"),
    ({'vocabulary': 'spm:/models/other.model'},
     r"its manifest: vocabulary 'spm:/models/other.model', not 'byte'"),
    ({'split': 'validation'}, r"its manifest: split 'validation', not 'train'"),
    ({'store_fingerprint': 'files of yesterday'}, r'an older version of the documents'),
])
def test_a_score_file_of_another_task_or_vocabulary_is_refused(data_config, tmp_path, manifest,
                                                               match):
  config, store = _notes(data_config, tmp_path, order_by='hand:q')
  path = _write_scores(score_files.stored_path(store.directory, 'hand'), store, _quality(store),
                       **manifest)
  with pytest.raises(errors.UserError) as error:
    _data(config)
  message = str(error.value)
  assert message.startswith("data.order.by='hand:q' (data.order.name='easy_to_hard'): score file "
                            f'{path} scores ')
  assert 'refused' in message and 'python -m launch.score --checkpoint=DIR --task=notes' in message
  assert re.search(match, message), message


def test_a_score_file_without_a_manifest_or_missing_documents_is_refused(data_config, tmp_path):
  config, store = _notes(data_config, tmp_path, order_by='hand:q')
  path = _write_scores(score_files.stored_path(store.directory, 'hand'), store, _quality(store))
  os.remove(path + score_files.MANIFEST_SUFFIX)
  with pytest.raises(errors.UserError, match=f'score file {path} has no manifest'):
    _data(config)
  _write_scores(path, store, _quality(store)[:-3])
  # Three documents of the store are not in the file; a document of another store is ignored.
  with open(path, 'a') as f:
    f.write(json.dumps({'id': 'elsewhere:1', 'q': 0.0}) + '\n')
  with pytest.raises(errors.UserError, match=rf"3 of the {store.num_documents} training documents "
                     rf"of task 'notes' have no score in {path}"):
    _data(config)


def test_a_score_that_was_not_computed_names_it_and_the_command(data_config, tmp_path):
  config, store = _notes(data_config, tmp_path, order_by='ref:el2n')
  command = (r'python -m launch\.score --checkpoint=DIR --task=notes --scores={} {} '
             rf'--store_dir={data_config.store_dir} ')
  with pytest.raises(errors.UserError, match=r"score 'el2n' of 'ref' was not computed for task "
                     r"'notes' \(no file .*scores/ref\.jsonl\)\. Compute it: "
                     + command.format('el2n', '--name=ref')):
    _data(config)
  path = _write_scores(score_files.stored_path(store.directory, 'ref'), store, _quality(store))
  config.order.by = 'ref:min_k_prob'  # the file has nll and q only
  with pytest.raises(errors.UserError, match=rf"score 'min_k_prob' was not computed in {path} .*"
                     + command.format('min_k', '--name=ref')):
    _data(config)
  config.order.by = 'ref:learnability'
  with pytest.raises(errors.UserError, match=r'--scores=learnability --early_checkpoint=EARLY_DIR'):
    _data(config)
  missing = str(tmp_path / 'nowhere.jsonl')
  config.order.by = f'{missing}:nll'
  with pytest.raises(errors.UserError, match=rf'no file {missing}.*--out={missing}'):
    _data(config)


def test_kept_documents_are_the_top_bottom_or_a_window_of_the_scores():
  scores = np.array([5, 1, 4, 2, 3, 0, 9, 7, 8, 6, 4.0])  # 11 documents, two scored 4
  kept = lambda *args: selection.kept_documents(scores, *args).tolist()
  assert kept('lowest', 0.3) == [1, 3, 5]  # scores 1, 2, 0: round(3.3) = 3 documents
  assert kept('highest', 0.3) == [6, 7, 8]  # 9, 7, 8
  assert kept('highest', 0.3, 0.1) == [7, 8, 9]  # skip the one highest (9): 8, 7, 6
  assert kept('lowest', 0.2, 0.4) == [2, 10]  # ranks 4, 5 ascending: the two 4s, in store order
  assert kept('lowest', 0.01) == [5]  # at least one
  assert kept('highest', 1.0) == list(range(11))
  assert kept('lowest', 0.5, 0.5) == [0, 6, 7, 8, 9, 10]  # 6 of 11 kept: the offset gives way


def test_a_token_share_keeps_the_ranked_documents_whose_middle_is_in_the_token_window():
  scores = np.array([3, 0, 2, 1, np.nan])  # ranked lowest first: 1, 3, 2, 0; 4 is not scored
  lengths = np.array([10, 40, 30, 20, 1000])  # tokens: 40, 20, 30, 10 in rank order, 100 in all
  kept = lambda *args: selection.kept_documents(scores, *args, lengths_D=lengths).tolist()
  # In rank order the documents hold tokens [0, 40), [40, 60), [60, 90), [90, 100): middles 20,
  # 50, 75, 95; highest first, [0, 10), [10, 40), [40, 60), [60, 100): middles 5, 25, 50, 80.
  assert kept('lowest', 0.5) == [1]  # [0, 50): middle 50 is out
  assert kept('lowest', 0.51) == [1, 3]
  assert kept('highest', 0.5) == [0, 2]
  assert kept('lowest', 0.3, 0.65) == [2]  # [65, 95)
  assert kept('lowest', 0.1, 0.1) == [1]  # [10, 20) holds no middle: the document around 15
  assert kept('lowest', 1.0) == [0, 1, 2, 3]


def test_selection_keeps_the_window_of_a_score_file_and_reports_it(data_config, tmp_path, caplog):
  config, store = _notes(data_config, tmp_path, order_by='hand:q')
  values = np.array(_quality(store))
  _write_scores(score_files.stored_path(store.directory, 'hand'), store, values)
  config.select.update({'by': 'hand:q', 'keep': 'highest', 'fraction': 0.5, 'offset': 0.1})
  with caplog.at_level(logging.WARNING):
    data = _data(config)
  num = store.num_documents
  ranked = np.argsort(-values)  # distinct values: no ties
  expected = sorted(ranked[round(0.1 * num):round(0.1 * num) + round(0.5 * num)])
  assert data.rows.stores['notes'].doc_ids == [store.doc_ids[i] for i in expected]
  assert _quality(data.rows.stores['notes']) == values[expected].tolist()
  packed = data.rows.packed[0].packed['documents']
  assert sorted(set(packed[packed >= 0].tolist())) == list(range(len(expected)))  # all, only
  report = data.rows.selected['notes']
  assert (report.kept_documents, report.documents) == (len(expected), num)
  assert report.fraction == len(expected) / num
  lengths = np.diff(store.offsets)
  assert (report.kept_tokens, report.tokens) == (lengths[expected].sum(), lengths.sum())
  assert (f"data.select keeps {len(expected) / num:.1%} of the training documents of task 'notes' "
          f'({len(expected)} of {num};') in caplog.text
  assert "the highest 0.5 by 'hand:q' after skipping the 0.1 highest" in caplog.text
  # Ordering after selection reads the kept documents' scores: the same as their metadata's.
  config.order.by = 'quality'
  by_metadata = _data(config)
  np.testing.assert_array_equal(data.rows.row_scores[False][0], by_metadata.rows.row_scores[False][0])
  np.testing.assert_array_equal(data.example_sources(5)[1], by_metadata.example_sources(5)[1])
  # A score file of another task is refused for selection as for ordering.
  _write_scores(score_files.stored_path(store.directory, 'hand'), store, values, task='sums')
  with pytest.raises(errors.UserError, match=r"data\.select\.by='hand:q': score file .* task "
                                             r"'sums', not 'notes'"):
    _data(config)


def test_random_selection_is_a_seeded_sample(data_config, tmp_path):
  config, store = _notes(data_config, tmp_path, ordering='random')
  config.select.update({'by': 'random', 'fraction': 0.25})
  ids = [pipeline.TrainData(config, 8, seed, 100).rows.stores['notes'].doc_ids for seed in (0, 0, 1)]
  assert len(ids[0]) == round(0.25 * store.num_documents) and set(ids[0]) < set(store.doc_ids)
  assert ids[0] == ids[1] != ids[2]
  config.select.unit = 'tokens'  # a quarter of the tokens, to the nearest document boundary
  report = pipeline.TrainData(config, 8, 0, 100).rows.selected['notes']
  lengths = np.diff(store.offsets)
  assert abs(report.kept_tokens - 0.25 * report.tokens) <= lengths.max() / 2
  assert report.tokens == lengths.sum() and report.kept_documents < store.num_documents


def test_a_rewriting_objective_packs_only_the_kept_documents(data_config):
  """MeCo rewrites the whole store, then the selection applies to its rows as to the plain ones."""
  config = base.get_config()
  config.data = data_config
  config.data.tasks = ml_collections.ConfigDict({'sums': {'source': 'arithmetic',
                                                          'num_documents': 200, 'max_digits': 3}})
  config.data.mixture = ml_collections.ConfigDict({'sums': 1.0})
  config.data.seq_len, config.data.extra_ids, config.objective.name = 64, 8, 'meco'
  config.data.order.name = 'easy_to_hard'
  config.data.select.update({'by': 'random', 'fraction': 0.5})
  objective = registry.make_objective(config, vocabularies.make_vocabulary('byte', extra_ids=8))
  data = pipeline.TrainData(config.data, 8, 0, 100, objective)
  kept = data.rows.selected['sums'].kept_documents
  for rewritten, packed in ((False, data.rows.packed[0].packed), (True, data.rows.rewritten[0].packed)):
    documents = packed['documents']
    assert sorted(set(documents[documents >= 0].tolist())) == list(range(kept))
    assert len(data.rows.row_scores[rewritten][0]) == len(packed['targets'])


@pytest.mark.parametrize('change, match', [
    ({'fraction': 0.5}, r'data\.select\.fraction=0\.5.*set data\.select\.by'),
    ({'by': 'hand:q', 'keep': 'middle'}, r"data\.select\.keep='middle'"),
    ({'by': 'hand:q', 'fraction': 0.0}, r'data\.select\.fraction=0\.0'),
    ({'by': 'hand:q', 'fraction': 0.8, 'offset': 0.3}, r'offset \+ fraction <= 1'),
    ({'by': 'hand:', 'fraction': 0.5}, r"data\.select\.by='hand:' must be a score reference"),
    ({'by': 'random', 'tasks': ('sums',)}, r"data\.select\.tasks names \['sums'\]"),
])
def test_bad_selection_config_names_the_key(data_config, change, match):
  data_config.select.update(change)
  with pytest.raises(errors.UserError, match=match):
    pipeline.mixture_plan(data_config, 8, 100)


def test_score_names_match_launch_score():
  from research.analysis import scores
  for name, field in scores.SCORES.items():
    assert score_files._SCORE_NAMES.get(field, field) == name


# --- launch.score writing beside the store -------------------------------------------------------

def _run_score(**flag_values) -> str:
  values = {'task': None, 'text_file': None, 'out': None, 'name': None, 'early_checkpoint': [],
            'batch_size': 0, 'scores': ['nll', 'el2n', 'length'], 'min_k': 0.2, 'split': 'train',
            'metadata': False, 'store_dir': None, **flag_values}
  return commands.run_main(score_command.main, **values)


def test_launch_score_writes_beside_the_store_for_orderings_and_selection(data_config, tmp_path):
  config = base.get_config()
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads, config.model.head_dim = 2, 16
  config.data, store = _notes(data_config, tmp_path, order_by='ref:nll')
  config.eval.batch_size = 8
  workdir = str(tmp_path / 'ref')
  test_scores.save_run(config, workdir)

  printed = _run_score(checkpoint=[workdir], task='notes')  # no --out: beside the store, as 'ref'
  path = score_files.stored_path(store.directory, 'ref')
  assert f'wrote {path}.' in printed and "data.order.by='ref:nll'" in printed
  with open(path) as f:
    nll = {line['id']: line['nll'] for line in map(json.loads, f)}
  data = _data(config.data)  # orders by 'ref:nll'
  np.testing.assert_array_equal(
      data.rows.row_scores[False][0],
      orderings.row_scores(data.rows.packed[0].packed['documents'],
                           np.array([nll[doc_id] for doc_id in store.doc_ids]), 'mean'))
  config.data.select.update({'by': 'ref:el2n', 'keep': 'highest', 'fraction': 0.5})
  assert pipeline.TrainData(config.data, 8, 0, 100).rows.selected['notes'].kept_documents == round(
      0.5 * store.num_documents)
  _run_score(checkpoint=[os.path.join(workdir, 'checkpoints', '0')], task='notes')
  assert os.path.exists(score_files.stored_path(store.directory, 'ref-0'))
  for flag_values, message in [
      (dict(task='notes', name='x', out=str(tmp_path / 'x.jsonl')), 'not both'),
      (dict(text_file=str(tmp_path / 'notes.jsonl')), '--out is required with --text_file'),
      (dict(task='notes', name='a/b'), r"--name='a/b'"),
  ]:
    with pytest.raises(SystemExit, match=r'^error: .*' + message):
      _run_score(checkpoint=[workdir], **flag_values)
