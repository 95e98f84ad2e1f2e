"""Non-finite steps: the update is skipped inside the step; policy 'skip' goes on, 'stop' ends the
run with a message naming the step and the last checkpoint, which stays intact.

The fault-injection tests run launch.train in a subprocess whose TrainData.batch is patched (in
that subprocess only, by the `_INJECT` script) to fill one step's float `weights` with NaN, so no
production code path exists for tests.
"""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from research import checkpoint, config as config_lib, errors, train
from research.data import pipeline
from tests import commands
from tests.test_preemption import TINY
from tests.test_train import read_metrics, tiny_config

BAD_STEP = 3  # the 0-based batch index poisoned; metrics.jsonl logs it as step 4

_INJECT = """
import runpy, sys
import numpy as np
from research.data import pipeline
bad, original = int(sys.argv[1]), pipeline.TrainData.batch
def batch(self, step, **kwargs):
  rows = original(self, step, **kwargs)
  return {**rows, 'weights': np.full_like(rows['weights'], np.nan)} if step == bad else rows
pipeline.TrainData.batch = batch
sys.argv = ['launch.train', *sys.argv[2:]]
runpy.run_module('launch.train', run_name='__main__')
"""


def _run(workdir, data_dir, *overrides):
  command = [sys.executable, '-c', _INJECT, str(BAD_STEP),
             '--config=experiments/quickstart.py', f'--workdir={workdir}',
             f'--config.data.store_dir={data_dir}', '--config.train.steps=6',
             *TINY, '--config.checkpoint.every=2', '--config.checkpoint.keep=10', *overrides]
  return subprocess.run(command, capture_output=True, text=True, check=False, timeout=600,
                        env=commands.device_env(1))


def _restore_latest(workdir):
  """(step, params) of the run's latest checkpoint, restored as this process places it."""
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    config = ml_collections.ConfigDict(json.load(f))
  trainer = train.Trainer(config)
  manager = checkpoint.make_manager(workdir, config.checkpoint)
  state = checkpoint.restore_latest(manager, trainer.abstract_state)
  step = manager.latest_step()
  manager.close()
  return step, state.params


def _all_finite(tree):
  return all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(tree))


def test_a_nonfinite_step_leaves_parameters_and_optimizer_state_unchanged(data_dir):
  config = tiny_config(data_dir, data=1)
  trainer = train.Trainer(config, jax.devices()[:1])
  data = pipeline.TrainData(config.data, config.train.batch_size, config.seed, config.train.steps)
  state, metrics = trainer.step(trainer.init_state(), trainer.place(data.batch(0)),
                                train.step_rng(0, 0))
  assert float(metrics['nonfinite']) == 0.0
  before = jax.device_get(state)
  bad = data.batch(1)
  bad['weights'] = np.full_like(bad['weights'], np.nan)
  after, metrics = trainer.step(state, trainer.place(bad), train.step_rng(0, 1))
  assert float(metrics['nonfinite']) == 1.0 and not np.isfinite(float(metrics['loss']))
  assert int(after.step) == 2  # the data order stays a function of the step
  after = jax.device_get(after)
  schedule_counts = [int(train.schedule_position(s.opt_state)) for s in (before, after)]
  assert schedule_counts == [1, 2]  # the learning rate follows the step
  strip = lambda s: jax.tree.map(lambda x: x, s.opt_state, is_leaf=train._is_schedule_state)
  for a, b in zip(jax.tree.leaves((before.params, strip(before))),
                  jax.tree.leaves((after.params, strip(after)))):
    if a.shape:  # parameters, Adam's moments; the scalar counts are checked above and below
      np.testing.assert_array_equal(a, b)
  adam = [s for s in jax.tree.leaves(after.opt_state, is_leaf=lambda n: hasattr(n, 'mu'))
          if hasattr(s, 'mu')]
  assert [int(s.count) for s in adam] == [1]  # Adam's bias correction did not count the step
  # The next good step updates from the kept state and stays finite.
  final, metrics = trainer.step(jax.device_put(after, trainer.state_shardings),
                                trainer.place(data.batch(2)), train.step_rng(0, 2))
  assert float(metrics['nonfinite']) == 0.0 and _all_finite(final.params)


@pytest.mark.parametrize('key, value, message', [
    ('nonfinite', 'ignore', r"'train.nonfinite' must be one of \['skip', 'stop'\], got 'ignore'"),
    ('max_nonfinite', 0, r"'train.max_nonfinite' must be >= 1, got 0"),
])
def test_policy_values_are_checked(data_dir, key, value, message):
  config = tiny_config(data_dir, data=1)
  config.train[key] = value
  with pytest.raises(errors.UserError, match=message):
    config_lib.validate(config, '/tmp/unused', jax.devices()[:1])


def test_loss_spike_is_the_window_loss_over_the_average_of_earlier_windows():
  config = tiny_config('unused').train
  divergence = train.Divergence(config)
  window = lambda *values: [{'loss': v, 'nonfinite': 0.0} for v in values]
  assert divergence.observe(0, window(4.0, 4.0)) == {'nonfinite_steps': 0}
  assert divergence.observe(2, window(8.0, 8.0))['loss_spike'] == pytest.approx(2.0)
  # A non-finite step's loss is left out of the spike and counted.
  logged = divergence.observe(4, window(4.4) + [{'loss': np.nan, 'nonfinite': 1.0}])
  assert logged == {'nonfinite_steps': 1, 'loss_spike': pytest.approx(4.4 / 4.4)}


def test_skip_goes_on_and_counts_the_skipped_step(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  result = _run(workdir, data_dir, '--config.train.nonfinite=skip')
  assert result.returncode == 0, result.stderr[-3000:]
  lines = [m for m in read_metrics(workdir) if 'loss' in m]
  assert [m['step'] for m in lines] == [1, 2, 3, 4, 5, 6]
  assert [m['nonfinite'] for m in lines] == [0, 0, 0, 1, 0, 0]
  assert [m['nonfinite_steps'] for m in lines] == [0, 0, 0, 1, 1, 1]
  assert np.isfinite(lines[-1]['loss']) and np.isfinite(lines[-1]['loss_spike'])
  step, params = _restore_latest(workdir)
  assert step == 6 and _all_finite(params)


def test_stop_ends_the_run_naming_the_step_and_the_intact_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  result = _run(workdir, data_dir, '--config.train.nonfinite=stop',
                '--config.train.max_nonfinite=1')
  assert result.returncode == 2, result.stderr[-3000:]
  directory = checkpoint.checkpoint_dir(workdir)
  assert ('error: training diverged: 1 consecutive non-finite steps (loss or gradient NaN or '
          f'inf), the first at step {BAD_STEP + 1}, reached train.max_nonfinite=1; the last '
          f'checkpoint is step 2 in {directory} (no update of a non-finite step is in it)'
          ) in result.stderr
  assert "set train.nonfinite='skip'" in result.stderr
  assert 'Traceback' not in result.stderr
  assert os.listdir(directory) == ['2']  # nothing saved at or after the bad step
  assert [m['step'] for m in read_metrics(workdir) if 'loss' in m][-1] == BAD_STEP + 1  # flushed
  step, params = _restore_latest(workdir)
  assert step == 2 and _all_finite(params)
