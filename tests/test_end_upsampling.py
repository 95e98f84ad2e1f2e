"""experiments/end_upsampling.py: its arms and seeds, every point valid, and the mixture switching
to the upsampled arithmetic share at the window's first step (and the equal-token constant arm
reading as many arithmetic rows as the 20% window)."""

import jax
import pytest

from experiments import end_upsampling as experiment
from research import config as config_lib
from research.analysis import sweep
from research.data import sampler as sampler_lib

STEPS = experiment.STEPS
BASE, UPSAMPLED = 93 / 1024, 768 / 1024  # the shares of every mixture block of 1024 rows
# (arm's overrides without the seed) -> (the stage's start step, arithmetic share before, after)
ARMS = {
    (('data.stages.upsample.mixture.addition', 0.1),): (288, BASE, BASE),
    (('data.stages.upsample.at_fraction', 0.9),): (324, BASE, UPSAMPLED),
    (('data.stages.upsample.at_fraction', 0.8),): (288, BASE, UPSAMPLED),
    (('data.stages.upsample.at_fraction', 0.6),): (216, BASE, UPSAMPLED),
    (('data.mixture.addition', 0.2865), ('data.stages.upsample.mixture.addition', 0.2865)): (
        288, 228 / 1024, 228 / 1024),
}


@pytest.fixture(scope='module')
def plans(tmp_path_factory):
  """Each point's name -> (its overrides, the mixture plan its validated config runs)."""
  config = experiment.get_config()
  workdir = str(tmp_path_factory.mktemp('end_upsampling') / 'run')
  return {point.name: (point.overrides, config_lib.validate(
      sweep.point_config(config, point), workdir, jax.devices()).plan)
          for point in sweep.points(experiment.get_sweep(), config)}


def _sampler(plan) -> sampler_lib.MixtureSampler:
  """The sampler of the run's rows (batch 16, mixture blocks of 1024), seed 0."""
  config = experiment.get_config()
  assert (config.train.batch_size, config.data.mixture_block) == (16, 1024)
  return sampler_lib.MixtureSampler(plan.task_names, plan.stages, 16, 1024, seed=0, stream=0)


def test_the_sweep_is_every_arm_with_every_seed(plans):
  arms = [tuple((k, v) for k, v in overrides.items() if k != 'seed')
          for overrides, _ in plans.values()]
  assert sorted(set(arms)) == sorted(ARMS) and len(plans) == len(ARMS) * 3
  assert sorted(overrides['seed'] for overrides, _ in plans.values()) == sorted(
      list(experiment.SEEDS) * len(ARMS))
  assert experiment.get_config().train.steps == STEPS == 360


def test_each_arm_switches_the_arithmetic_share_at_its_stated_step(plans):
  for overrides, plan in plans.values():
    start, before, after = ARMS[tuple((k, v) for k, v in overrides.items() if k != 'seed')]
    assert plan.task_names == ['addition', 'stdlib_code', 'stdlib_prose']
    assert [stage.start_step for stage in plan.stages] == [0, start]
    sampler = _sampler(plan)
    assert sampler.proportions(start - 1)[0] == pytest.approx(before)
    assert sampler.proportions(start)[0] == pytest.approx(after)
    # the general domains share the rest one to one
    assert sampler.proportions(start)[1] == pytest.approx(sampler.proportions(start)[2], abs=1e-3)


def test_the_constant_arm_reads_the_20_percent_windows_arithmetic_rows(plans):
  rows = {name: _sampler(plan).examples_before(STEPS)[0] for name, (_, plan) in plans.items()
          if name.endswith('seed=0')}
  window = rows['data.stages.upsample.at_fraction=0.8,seed=0']
  constant = rows['data.mixture.addition=0.2865,data.stages.upsample.mixture.addition=0.2865,'
                  'seed=0']
  # 288 steps x 16 rows = 4.5 blocks of 93, then 72 x 16 = 1.125 blocks of 768 (the partial block's
  # slots drawn at random); the constant: 5.625 blocks of 228
  assert (window, constant) == (4 * 93 + 46 + 768 + 97, 5 * 228 + 140) == (1283, 1280)
  assert abs(constant - window) / window < 0.01
  assert experiment.share(experiment.EQUAL_TOKENS_WEIGHT) == pytest.approx(
      0.8 * experiment.share(0.1) + 0.2 * experiment.share(3.0), abs=1e-4)
  assert rows['data.stages.upsample.mixture.addition=0.1,seed=0'] == 526  # the 0% window
