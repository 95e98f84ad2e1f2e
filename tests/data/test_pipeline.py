"""The stateless batch source, its mixture sampling, eval batches, host slices and the causal-LM
inputs it adds."""

import numpy as np
import pytest

from research import errors
from research.data import pipeline
from research.data import store as store_lib
from research.objectives import causal_lm

_KEYS = {'targets', 'segment_ids', 'positions', 'inputs', 'weights'}


def test_causal_lm_example_shifts_within_segments():
  targets = np.array([[5, 6, 7, 8, 9, 0],
                      [4, 3, 2, 1, 5, 6]])
  segment_ids = np.array([[1, 1, 1, 2, 2, 0],
                          [1, 2, 2, 2, 3, 3]])
  np.testing.assert_array_equal(causal_lm.causal_lm_example(targets, segment_ids),
                                [[0, 5, 6, 0, 8, 0],
                                 [0, 0, 3, 2, 0, 5]])


@pytest.fixture
def train_data(data_config):
  return pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=100)


def test_batch_format(train_data, data_config):
  batch = train_data.batch(0)
  assert set(batch) == _KEYS
  assert all(v.shape == (8, data_config.seq_len) for v in batch.values())
  assert batch['weights'].dtype == np.float32 and batch['targets'].dtype == np.int32
  np.testing.assert_array_equal(batch['inputs'],
                                causal_lm.causal_lm_example(batch['targets'], batch['segment_ids']))
  np.testing.assert_array_equal(batch['weights'], batch['segment_ids'] > 0)


def test_batch_is_a_pure_function_of_the_step(train_data, data_config):
  later, earlier = train_data.batch(5), train_data.batch(3)
  fresh = pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=100)
  for k in _KEYS:
    np.testing.assert_array_equal(fresh.batch(3)[k], earlier[k])
    np.testing.assert_array_equal(fresh.batch(5)[k], later[k])
  far = train_data.batch(10**6)  # many epochs later: still just a function of the step
  np.testing.assert_array_equal(far['targets'], fresh.batch(10**6)['targets'])


def test_seeds_give_different_batches(train_data, data_config):
  other = pipeline.TrainData(data_config, batch_size=8, seed=1, total_steps=100)
  assert not np.array_equal(train_data.batch(0)['targets'], other.batch(0)['targets'])


def test_mixture_counts_are_exact_in_every_block(data_config):
  data_config.mixture = {'stdlib_code': 0.3, 'stdlib_prose': 0.7}
  data_config.mixture_block = 64
  data = pipeline.TrainData(data_config, batch_size=16, seed=0, total_steps=100)
  assert data.task_names == ['stdlib_code', 'stdlib_prose']
  tasks_GB = np.stack([data.example_sources(step)[0] for step in range(16)])  # 4 blocks of 64
  per_block = tasks_GB.reshape(4, 64)
  assert all(np.sum(block == 0) == 19 for block in per_block)
  assert abs(np.mean(tasks_GB == 0) - 0.3) <= 1 / 64
  assert not np.array_equal(per_block[0], per_block[1])  # each block has its own slot order


def test_every_row_is_seen_once_per_epoch(data_config):
  data_config.mixture = {'stdlib_prose': 1.0}
  data_config.seq_len = 2048
  data = pipeline.TrainData(data_config, batch_size=16, seed=0, total_steps=100)
  num_rows = data.rows.num_rows['stdlib_prose']
  rows = np.concatenate([data.example_sources(step)[1] for step in range(-(-2 * num_rows // 16))])
  assert sorted(rows[:num_rows]) == list(range(num_rows))
  assert sorted(rows[num_rows:2 * num_rows]) == list(range(num_rows))
  assert not np.array_equal(rows[:num_rows], rows[num_rows:2 * num_rows])


@pytest.mark.parametrize('mixture, match', [
    ({'stdlib_code': 1.0, 'no_such_task': 1.0}, r'data\.mixture.*no_such_task.*stdlib_code'),
    ({'stdlib_code': 0.0}, r'data\.mixture has no task with a positive weight'),
    ({'stdlib_code': -1.0}, r'data\.mixture\.stdlib_code=-1\.0 must be a finite weight >= 0'),
    ({}, r'data\.mixture has no task with a positive weight'),
    ({'stdlib_code': 1.0, 'stdlib_prose': 1e-4}, r'data\.mixture_block'),
])
def test_bad_mixture_names_the_config_key(data_config, mixture, match):
  data_config.mixture = mixture
  with pytest.raises(errors.UserError, match=match):
    pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=100)


def test_eval_batches_are_the_first_validation_rows(data_config):
  batches = pipeline.eval_batches(data_config, 'stdlib_code', 4, 3)
  again = pipeline.eval_batches(data_config, 'stdlib_code', 4, 3)
  assert len(batches) == 3
  for batch, same in zip(batches, again):
    assert set(batch) == _KEYS and batch['targets'].shape == (4, data_config.seq_len)
    for k in _KEYS:
      np.testing.assert_array_equal(batch[k], same[k])
  assert np.all(batches[-1]['weights'].sum(axis=1) > 0)


def test_eval_batches_pad_a_short_validation_split(data_config):
  data_config.seq_len = 1 << 16  # a few rows only
  batches = pipeline.eval_batches(data_config, 'stdlib_prose', 4, 100)
  rows = np.concatenate([b['segment_ids'] for b in batches])
  num_real = int(np.sum(rows.max(axis=1) > 0))
  assert len(batches) == -(-num_real // 4) < 100
  assert np.all(np.concatenate([b['weights'] for b in batches])[num_real:] == 0)


def test_any_rows_of_a_batch_equal_those_rows_of_the_whole_batch(train_data):
  batch = train_data.batch(7)
  for rows in ([0, 1, 2, 3], [4, 5, 6, 7], [1, 6], [5]):  # what hosts of any mesh ask for
    part = train_data.batch(7, rows=np.array(rows))
    for k in _KEYS:
      np.testing.assert_array_equal(part[k], batch[k][rows])


def test_the_long_document_notice_is_one_line_for_every_task(data_config):
  data_config.tasks = {'sums': {'source': 'arithmetic', 'num_documents': 200}}
  data_config.mixture = {'stdlib_code': 0.4, 'stdlib_prose': 0.4, 'sums': 0.2}
  data = pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=100)
  lengths = {name: np.diff(store_lib.load_store(name, 'train', 'byte',
                                                data_config.store_dir).offsets)
             for name in ('stdlib_code', 'stdlib_prose', 'sums')}
  long = {name: int(np.sum(lengths_D > data_config.seq_len)) for name, lengths_D in lengths.items()}
  assert long['sums'] == 0 and long['stdlib_code'] > 100 and long['stdlib_prose'] > 100
  code, prose = (f'{name} {long[name]:,} of {len(lengths[name]):,}'
                 for name in ('stdlib_code', 'stdlib_prose'))
  total = sum(len(lengths_D) for lengths_D in lengths.values())
  assert pipeline.long_document_notice(data) == (
      f"{long['stdlib_code'] + long['stdlib_prose']:,} of the {total:,} training documents "
      f'({code}, {prose}) are longer than a chunk of {data_config.seq_len} tokens (what a row of '
      'objective causal_lm holds) and span several rows (none is dropped).')
  data_config.mixture = {'sums': 1.0}
  assert pipeline.long_document_notice(pipeline.TrainData(data_config, 8, 0, 100)) == ''
