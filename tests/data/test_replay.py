"""Power-law replay (Gandhi et al. 2024, arXiv 2401.10393; research/data/replay.py): each earlier
domain's share of the replay rows follows (steps since last trained + 1)^-alpha, the batches before
an earlier stage are all current data, and a batch is the same computed fresh or after iterating."""

import ml_collections
import numpy as np
import pytest

from research import errors
from research.data import pipeline, replay, sampler

STEPS, BATCH, BLOCK = 400, 16, 256  # 4 replay rows: the weights are updated every 64 steps


def _sequence(data_config, first, second, third, at=(100, 200), exponent=1.0):
  """Domain sequence first -> second -> third with power-law replay of a quarter of every batch."""
  data_config.mixture = ml_collections.ConfigDict({first: 1.0})
  data_config.stages = ml_collections.ConfigDict(
      {name: {'at_step': step, 'mixture': {task: 1.0}}
       for name, step, task in (('second', at[0], second), ('third', at[1], third))})
  data_config.replay.update(fraction=0.25, sampler='power_law', exponent=exponent)
  return data_config


@pytest.mark.parametrize('exponent', [1.0, 0.0])
def test_replayed_shares_follow_the_power_law_at_two_points(data_config, exponent):
  config = _sequence(data_config, 'stdlib_prose', 'stdlib_code', 'arithmetic', exponent=exponent)
  config.mixture_block = BLOCK
  plan = pipeline.mixture_plan(config, BATCH, STEPS)
  mix = sampler.MixtureSampler(plan.task_names, plan.replay, plan.replay_rows, BLOCK, seed=1,
                               stream=7)
  prose, code = plan.task_names.index('stdlib_prose'), plan.task_names.index('stdlib_code')
  for start in (200, 328):  # the steps of one update of the third stage (prose last 99, code 199)
    tasks = np.concatenate([mix.sources(step)[0] for step in range(start, start + 64)])
    raw = np.array([(start - 99 + 1) ** -exponent, (start - 199 + 1) ** -exponent])
    shares = [np.mean(tasks == prose), np.mean(tasks == code)]
    np.testing.assert_allclose(shares, raw / raw.sum(), atol=0.02)
  assert {int(t) for step in range(100, 200) for t in mix.sources(step)[0]} == {prose}


def _two_task_data(data_config, seed=3):
  """code -> prose -> code over 12 steps of 8 rows, 2 of them replay, weights updated every 4."""
  config = _sequence(data_config, 'stdlib_code', 'stdlib_prose', 'stdlib_code', at=(4, 8))
  config.mixture_block = 8
  return pipeline.TrainData(config, batch_size=8, seed=seed, total_steps=12)


def test_replay_rows_re_read_earlier_data_and_are_current_data_before_any(data_config):
  data = _two_task_data(data_config)
  code, prose = data.task_names.index('stdlib_code'), data.task_names.index('stdlib_prose')
  first_tasks, first_rows = data.example_sources(0)
  np.testing.assert_array_equal(first_tasks, code)  # stage 0: the whole batch is current data
  assert len(set(first_rows.tolist())) == 8
  assert data.mixture_weights(0) == {'stdlib_code': 1.0, 'stdlib_prose': 0.0}
  tasks, rows = data.example_sources(4)
  np.testing.assert_array_equal(tasks, [prose] * 6 + [code] * 2)  # the last quarter replays code
  np.testing.assert_array_equal(rows[6:], first_rows[:2])  # the code rows read first
  np.testing.assert_array_equal(data.example_sources(8)[0], [code] * 6 + [prose] * 2)
  assert data.mixture_weights(8) == {'stdlib_code': 0.75, 'stdlib_prose': 0.25}
  read = np.concatenate([data.example_sources(step)[0] for step in range(12)])
  epochs = data.epochs_before(12)
  for index, name in enumerate(data.task_names):
    assert epochs[name] * data.rows.num_rows[name] == pytest.approx(np.sum(read == index))


def test_a_batch_is_the_same_computed_fresh_or_after_iterating(data_config):
  iterated = list(_two_task_data(data_config).batches(0, 12, prefetch=1))
  fresh = _two_task_data(data_config)
  for step in (3, 4, 9):
    for key, value in fresh.batch(step).items():
      np.testing.assert_array_equal(value, iterated[step][key])


@pytest.mark.parametrize('replay_config, num_stages, match', [
    ({'sampler': 'uniform'}, 3, r"data.replay.sampler='uniform' must be one of \['constant', "),
    ({'exponent': -0.5}, 3, r'data.replay.exponent=-0.5 must be a finite number >= 0'),
    ({'mixture': {'stdlib_prose': 1.0}}, 3,
     r'data.replay.sampler=power_law .* so data.replay.mixture .* would not be used'),
    ({}, 2, r'data.replay.sampler=power_law needs data.stages with at least 2 stages \(it has 1\)'),
    ({'fraction': 0.0}, 3, r'power_law needs data.replay.fraction > 0'),
])
def test_bad_replay_settings_name_the_key(data_config, replay_config, num_stages, match):
  config = _sequence(data_config, 'stdlib_prose', 'stdlib_code', 'arithmetic')
  if num_stages == 2:
    del config.stages['third']
  config.replay.update(replay_config)
  with pytest.raises(errors.UserError, match=match):
    pipeline.mixture_plan(config, BATCH, STEPS)


def test_power_law_weights_normalise_over_the_earlier_domains():
  weights = replay.power_law_weights(10, {'a': 9, 'b': 4}, 1.0)  # 2^-1 and 7^-1
  assert weights == pytest.approx({'a': 7 / 9, 'b': 2 / 9})
