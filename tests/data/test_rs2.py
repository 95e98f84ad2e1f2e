"""RS2 without replacement (Okanovic et al. 2023, arXiv 2305.18424): the `rs2` ordering
(research/data/orderings.py) reads a fresh random subset of the rows each epoch, every row once
before any again."""

import numpy as np
import pytest

from research import errors
from research.data import orderings, pipeline, task_rows


def _epochs(num_rows, fraction, num_epochs, seed=0, task_key=3):
  return [orderings.rs2(num_rows, seed, task_key, epoch, None, fraction)
          for epoch in range(num_epochs)]


@pytest.mark.parametrize('num_rows, fraction, size', [(100, 0.1, 10), (103, 0.1, 10),
                                                      (7, 0.3, 2), (5, 0.01, 1)])
def test_each_epoch_reads_the_stated_number_of_rows(num_rows, fraction, size):
  assert orderings.rs2_sizes(num_rows, fraction) == [size]
  assert all(len(rows) == size for rows in _epochs(num_rows, fraction, 25))


def test_subsets_differ_per_epoch_and_are_deterministic_in_the_seed():
  epochs = _epochs(200, 0.1, 10)
  assert all(len(set(rows.tolist())) == 20 for rows in epochs)
  assert len({tuple(sorted(rows.tolist())) for rows in epochs}) == 10
  for again, rows in zip(_epochs(200, 0.1, 10), epochs):
    np.testing.assert_array_equal(again, rows)
  other = _epochs(200, 0.1, 10, seed=1)
  assert not all(np.array_equal(a, b) for a, b in zip(other, epochs))


@pytest.mark.parametrize('num_rows', [100, 103])
def test_every_row_is_read_once_before_any_row_again(num_rows):
  """Without replacement: each pass of num_rows reads (a permutation of) every row."""
  rows = np.concatenate(_epochs(num_rows, 0.1, 3 * num_rows // 10 + 1))  # >= 3 passes
  passes = [rows[start:start + num_rows] for start in (0, num_rows, 2 * num_rows)]
  for read in passes:
    assert sorted(read.tolist()) == list(range(num_rows))
  assert not np.array_equal(passes[0], passes[1])  # each pass a fresh permutation


def test_fraction_one_is_the_random_ordering():
  for epoch in range(3):
    np.testing.assert_array_equal(orderings.rs2(50, 0, 3, epoch, None, 1.0),
                                  orderings.random_order(50, 0, 3, epoch))


def test_a_run_reads_the_rs2_epochs(data_config):
  data_config.tasks = {'sums': {'source': 'arithmetic', 'num_documents': 300, 'max_digits': 4}}
  data_config.mixture = {'sums': 1.0}
  data_config.seq_len, data_config.mixture_block = 64, 16
  data_config.order.name, data_config.order.rs2.fraction = 'rs2', 0.25
  data = pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=100)
  num_rows = data.rows.num_rows['sums']
  size = round(0.25 * num_rows)
  rows = np.concatenate([data.example_sources(step)[1] for step in range(-(-3 * size // 8))])
  for epoch in range(3):
    np.testing.assert_array_equal(rows[epoch * size:(epoch + 1) * size], orderings.rs2(
        num_rows, 0, task_rows.task_key('sums'), epoch, None, 0.25))


@pytest.mark.parametrize('rs2', [{'fraction': 0.0}, {'fraction': 1.5}, {'fraction': True},
                                 {'fraction': 0.1, 'replace': True}])
def test_bad_rs2_config_names_the_key(data_config, rs2):
  data_config.order.name, data_config.order.rs2 = 'rs2', rs2
  with pytest.raises(errors.UserError, match=r'data\.order\.rs2=.*fraction, in \(0, 1\]'):
    orderings.bind(data_config.order, 100)
