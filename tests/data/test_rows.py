"""Rows stores: a task packed shard by shard (the same bytes with any number of Beam workers),
read by row index; training reads only the rows it asks for and never the documents."""

import os

import numpy as np
import pytest

from experiments import base
from research import errors
from research.data import build, packing, pipeline, records, rows, store as store_lib
from research.data import task_rows, vocabularies
from research.objectives import registry
from tests.data.test_store import _files, _notes


def _recipe(seq_len=32):
  return rows.recipe(registry.causal_objective(seq_len))


def test_rows_are_each_shard_packed_in_its_seeded_order_with_global_documents(
    tmp_path, small_parts):
  task, root = _notes(tmp_path), str(tmp_path / 'stores')
  recipe = _recipe()
  manifest = rows.build_rows(task, 'byte', root, recipe)
  store = store_lib.load_store(task, 'train', 'byte', root)
  directory = rows.rows_path(store.directory, recipe)
  row_store = rows.load(task, 'byte', root, recipe)
  assert len(manifest['shards']) == 4 and row_store.num_rows == manifest['num_rows']
  read = row_store.take(np.arange(row_store.num_rows))
  first, expected = 0, []
  for k, summary in enumerate(store.manifest['shards']):
    shard = store_lib.read_documents(store.directory, store.manifest, [summary])
    packed = packing.pack_documents(shard, 32, 0, order_D=packing.random_documents(
        shard.num_documents, k))
    packed['documents'][packed['documents'] >= 0] += first  # the task's document index
    expected.append(packed)
    first += shard.num_documents
  for key in ('targets', 'segment_ids', 'positions', 'documents'):
    np.testing.assert_array_equal(read[key], np.concatenate([p[key] for p in expected]))
  assert read['documents'].dtype == np.int64
  # Every token of every document is in exactly one row.
  assert np.sum(read['segment_ids'] > 0) == store.manifest['num_tokens'] == manifest['num_tokens']
  assert set(np.unique(read['documents'])) - {-1} == set(range(store.num_documents))
  assert manifest['num_documents'] == store.num_documents
  assert os.path.dirname(directory) == store.directory


def test_rows_in_any_order_across_shards_and_a_shard_is_opened_only_when_read(
    tmp_path, small_parts):
  task, root = _notes(tmp_path), str(tmp_path / 'stores')
  row_store = rows.load(task, 'byte', root, _recipe())
  whole = row_store.take(np.arange(row_store.num_rows))
  asked = np.random.default_rng(0).permutation(row_store.num_rows)[:40]
  for key, value in row_store.take(asked).items():
    np.testing.assert_array_equal(value, whole[key][asked])
  # A fresh store whose last shard is gone: reading the others works, then the error names it.
  last = row_store.manifest['shards'][-1]
  os.remove(os.path.join(row_store.directory, last['file']))
  fresh = rows.load(task, 'byte', root, _recipe())
  first_rows = np.arange(row_store.num_rows - last['num_rows'])
  np.testing.assert_array_equal(fresh.take(first_rows)['targets'], whole['targets'][first_rows])
  with pytest.raises(errors.UserError, match=r'The rows store .* cannot be read .*rebuild it'):
    fresh.take([row_store.num_rows - 1])


def test_one_and_two_workers_pack_the_same_bytes_and_a_rerun_keeps_them(tmp_path, small_parts):
  task = _notes(tmp_path)
  for workers in (1, 2):
    rows.build_rows(task, 'byte', str(tmp_path / f'w{workers}'), _recipe(),
                    build.pipeline_options('DirectRunner', num_workers=workers))
  one, two = _files(str(tmp_path / 'w1')), _files(str(tmp_path / 'w2'))
  assert one == two and sum('/rows-' in name for name in one) == 9  # 4 shards, 4 summaries
  directory = rows.rows_path(store_lib.built_manifest(task, 'train', 'byte',
                                                      str(tmp_path / 'w1'))[0], _recipe())
  os.remove(os.path.join(directory, records.MANIFEST))
  shard = records.shard_name(1, 4, 'rows')
  for name in (shard, records.summary_of(shard)):
    os.remove(os.path.join(directory, name))  # as a build stopped while it packed shard 1
  before = {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in os.listdir(directory)}
  rows.build_rows(task, 'byte', str(tmp_path / 'w1'), _recipe())
  assert _files(str(tmp_path / 'w1')) == one  # only shard 1 was packed again
  assert {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in before} == before


def test_the_recipe_is_the_objective_s_packing_and_keys_the_store():
  causal = registry.causal_objective(64)
  config = base.get_config()
  config.data.seq_len, config.objective.name, config.data.extra_ids = 64, 'ul2', 100
  ul2 = registry.make_objective(config, vocabularies.make_vocabulary('byte', 100))
  plain, denoised = rows.recipe(causal), rows.recipe(ul2)
  np.testing.assert_array_equal(plain.costs(np.array([1, 5, 64])), [[1], [5], [64]])
  np.testing.assert_array_equal(denoised.costs(np.array([3, 40])), ul2.costs(np.array([3, 40])))
  assert denoised.chunk_len == ul2.chunk_len < 64 and plain.key != denoised.key
  assert rows.recipe(registry.causal_objective(64)).key == plain.key  # stable


def test_training_reads_only_its_rows_and_never_the_documents(data_config, monkeypatch):
  data_config.seq_len, data_config.mixture = 64, {'stdlib_prose': 1.0}
  pipeline.TrainData(data_config, 8, 0, 100)  # builds the stores
  monkeypatch.setattr(store_lib, 'read_documents',
                      lambda *a, **k: pytest.fail('training read the documents'))
  taken = []
  take = rows.RowStore.take
  monkeypatch.setattr(rows.RowStore, 'take', lambda self, r: taken.append(list(r)) or take(self, r))
  data = pipeline.TrainData(data_config, 8, 0, 100)
  whole = data.batch(3)
  taken.clear()
  part = data.batch(3, rows=np.array([1, 6]))
  assert len(taken) == 1 and len(taken[0]) == 2  # two rows read, for the two rows asked
  for k in whole:
    np.testing.assert_array_equal(part[k], whole[k][[1, 6]])
  # The prefetched batches (Grain, background threads) are the same batches.
  for step, batch in zip(range(5, 8), data.batches(5, 8, np.array([0, 7]), prefetch=2)):
    for k, v in data.batch(step, rows=np.array([0, 7])).items():
      np.testing.assert_array_equal(batch[k], v)


def test_a_whole_task_feature_above_the_in_memory_size_is_refused(data_config, monkeypatch):
  data_config.seq_len, data_config.mixture = 64, {'stdlib_prose': 1.0}
  data_config.order.pack, data_config.order.by = 'score', 'length'
  monkeypatch.setattr(task_rows, 'IN_MEMORY_TOKENS', 1000)
  with pytest.raises(errors.UserError, match=r"data.order.by='length' \(data.order.pack='score'\) "
                     r"reads the whole training split of task 'stdlib_prose' into memory, and it "
                     r'holds [\d,]+ tokens, over the 1,000'):
    pipeline.TrainData(data_config, 8, 0, 100)


def test_damaged_rows_shard_is_named_with_the_rebuild_command(tmp_path):
  task, root = _notes(tmp_path, files=1), str(tmp_path / 'stores')
  rows.build_rows(task, 'byte', root, _recipe())
  directory = rows.rows_path(store_lib.built_manifest(task, 'train', 'byte', root)[0], _recipe())
  path = os.path.join(directory, records.shard_name(0, 1, 'rows'))
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  with pytest.raises(errors.UserError, match=r'The rows store .*rows-[0-9a-f]{16} cannot be read '
                     r'.*rebuild it with `python -m launch\.build_data'):
    rows.load(task, 'byte', root, _recipe()).take(np.arange(3))


def test_a_large_task_without_rows_names_the_build_command(tmp_path, monkeypatch):
  task, root = _notes(tmp_path, files=1), str(tmp_path / 'stores')
  store_lib.load_store(task, 'train', 'byte', root)  # its documents are built
  monkeypatch.setattr(store_lib, 'builds_on_first_use', lambda name: False)  # as for 1 TB
  with pytest.raises(errors.UserError, match=r"The packed rows of task 'notes' \(rows of 32 "
                     r'tokens\) are not built .* run `python -m launch\.build_data'):
    rows.load(task, 'byte', root, _recipe())
