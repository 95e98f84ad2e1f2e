"""Mixture schedules: exact proportions, stage switches at their step, replay, resumable slicing."""

import ml_collections
import numpy as np
import pytest

from research import errors
from research.data import pipeline, sampler

TASKS = ['a', 'b', 'c']


def test_block_counts_are_the_largest_remainder_apportionment():
  np.testing.assert_array_equal(sampler.block_counts(np.array([0.3, 0.7]), 64), [19, 45])
  np.testing.assert_array_equal(sampler.block_counts(np.array([0.5, 0.25, 0.25]), 6), [3, 2, 1])
  np.testing.assert_array_equal(sampler.block_counts(np.array([1 / 3] * 3), 1024), [342, 341, 341])


def test_realised_proportions_over_1000_batches_match_the_weights():
  weights = {'a': 0.2, 'b': 0.5, 'c': 0.3}
  mix = sampler.MixtureSampler(TASKS, [sampler.Stage(0, weights)], 16, 1024, seed=3, stream=0)
  tasks_SB = np.stack([mix.sources(step)[0] for step in range(1000)])
  realised = np.bincount(tasks_SB.ravel(), minlength=3) / tasks_SB.size
  np.testing.assert_allclose(realised, [0.2, 0.5, 0.3], atol=0.02)
  assert np.abs(realised - [0.2, 0.5, 0.3]).max() <= 1 / 1024 + 1e-9  # exact per block of 1024


def test_each_task_reads_its_examples_in_order_without_gaps_or_repeats():
  stages = [sampler.Stage(0, {'a': 0.5, 'b': 0.5}), sampler.Stage(7, {'a': 0.1, 'c': 0.9})]
  mix = sampler.MixtureSampler(TASKS, stages, 12, 40, seed=0, stream=0)
  sources = [mix.sources(step) for step in range(20)]
  tasks, local = np.concatenate([t for t, _ in sources]), np.concatenate([j for _, j in sources])
  for task in range(3):
    np.testing.assert_array_equal(np.sort(local[tasks == task]), np.arange(np.sum(tasks == task)))
  for step in (0, 5, 7, 13, 20):  # what the steps before `step` consumed, computed in closed form
    consumed = np.bincount(tasks[:step * 12], minlength=3)
    np.testing.assert_array_equal(mix.examples_before(step), consumed)


def test_a_stage_switch_takes_effect_at_exactly_its_step():
  stages = [sampler.Stage(0, {'a': 1.0, 'b': 1.0}), sampler.Stage(10, {'c': 1.0})]
  mix = sampler.MixtureSampler(TASKS, stages, 8, 64, seed=0, stream=0)
  assert set(mix.sources(9)[0]) <= {0, 1} and 2 not in np.concatenate(
      [mix.sources(s)[0] for s in range(10)])
  for step in (10, 11, 50):
    np.testing.assert_array_equal(mix.sources(step)[0], 2)
  np.testing.assert_array_equal(mix.sources(10)[1], np.arange(8))  # task c starts at its first example


def test_weights_zero_drops_a_task_and_bad_weights_name_the_key():
  mix = sampler.MixtureSampler(TASKS, [sampler.Stage(0, {'a': 1.0, 'b': 0.0})], 8, 64, 0, 0)
  assert set(np.concatenate([mix.sources(s)[0] for s in range(10)])) == {0}
  with pytest.raises(errors.UserError, match=r'data.mixture has no task with a positive weight'):
    sampler.MixtureSampler(TASKS, [sampler.Stage(0, {'a': 0.0, 'b': 0.0})], 8, 64, 0, 0)
  with pytest.raises(errors.UserError, match=r'data.mixture.b=-0.5 must be a finite weight >= 0'):
    sampler.MixtureSampler(TASKS, [sampler.Stage(0, {'a': 1.0, 'b': -0.5})], 8, 64, 0, 0)


def _config(data_config, **stages):
  data_config.mixture = {'stdlib_code': 0.5, 'stdlib_prose': 0.5}
  data_config.stages = ml_collections.ConfigDict(stages)
  return data_config


def test_train_data_stages_and_replay(data_config):
  config = _config(data_config, cooldown=ml_collections.ConfigDict(
      {'at_fraction': 0.8, 'mixture': {'stdlib_prose': 1.0}}))
  config.replay.fraction = 0.25
  config.replay.mixture = ml_collections.ConfigDict({'stdlib_code': 1.0})
  data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=50)
  code, prose = data.task_names.index('stdlib_code'), data.task_names.index('stdlib_prose')
  tasks_39, _ = data.example_sources(39)
  tasks_40, _ = data.example_sources(40)  # 0.8 * 50: the cooldown stage
  assert set(tasks_39[:6]) == {code, prose}
  np.testing.assert_array_equal(tasks_40[:6], prose)
  np.testing.assert_array_equal(tasks_40[6:], code)  # the last quarter of every batch is replay
  # The logged mixture weights: 6 rows of 50/50 and 2 replay rows of code, then 6 rows of prose.
  assert data.mixture_weights(39) == {'stdlib_code': 0.625, 'stdlib_prose': 0.375}
  assert data.mixture_weights(40) == {'stdlib_code': 0.25, 'stdlib_prose': 0.75}
  read = np.concatenate([data.example_sources(step)[0] for step in range(50)])
  epochs = data.epochs_before(50)
  for name in ('stdlib_code', 'stdlib_prose'):
    index = data.task_names.index(name)
    assert epochs[name] * data.rows.num_rows[name] == pytest.approx(np.sum(read == index))


def test_resumed_and_sliced_batches_equal_the_uninterrupted_single_host_ones(data_config):
  config = _config(data_config, late=ml_collections.ConfigDict(
      {'at_step': 3, 'mixture': {'stdlib_code': 1.0}}))
  first = pipeline.TrainData(config, batch_size=8, seed=5, total_steps=10)
  reference = [first.batch(step) for step in range(6)]
  resumed = pipeline.TrainData(config, batch_size=8, seed=5, total_steps=10)  # restart at step 4
  for step in (4, 5):
    for rows in ([0, 2, 4, 6], [1, 3, 5, 7]):  # interleaved rows, as some meshes split them
      part = resumed.batch(step, rows=np.array(rows))
      for key, value in reference[step].items():
        np.testing.assert_array_equal(part[key], value[rows])


@pytest.mark.parametrize('stage, match', [
    ({'at_step': 100, 'mixture': {'stdlib_code': 1.0}}, r'data.stages.s starts at step 100, outside'),
    ({'mixture': {'stdlib_code': 1.0}}, r'data.stages.s needs exactly one of at_step or at_fraction'),
    ({'at_step': 5}, r'data.stages.s has no mixture'),
    ({'at_step': 5, 'weights': {}}, r'data.stages.s must be a ConfigDict with keys'),
    ({'at_step': 5, 'mixture': {'stdlib_code': 0.0}}, r'stage at step 5\) has no task with a positive'),
])
def test_bad_stages_name_the_key(data_config, stage, match):
  config = _config(data_config, s=ml_collections.ConfigDict(stage))
  with pytest.raises(errors.UserError, match=match):
    pipeline.TrainData(config, batch_size=8, seed=0, total_steps=50)


def test_bad_replay_fraction(data_config):
  data_config.replay.fraction = 0.01
  with pytest.raises(errors.UserError, match=r'data.replay.fraction=0.01 must be in \[0, 1\)'):
    pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=50)
