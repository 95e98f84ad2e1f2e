"""SIGTERM ends a real training run at a step boundary with a checkpoint; re-running resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

TINY = ['--config.model.d_model=64', '--config.model.num_layers=2', '--config.model.mlp_dim=128',
        '--config.model.num_heads=2', '--config.model.head_dim=32', '--config.data.seq_len=64',
        '--config.train.batch_size=8', '--config.eval.batch_size=8', '--config.eval.batches=1',
        '--config.train.log_every=1', '--config.checkpoint.every=1000', '--config.eval.every=1000']


def _command(workdir, data_dir, steps):
  return [sys.executable, '-m', 'launch.train', '--config=experiments/quickstart.py',
          f'--workdir={workdir}', f'--config.data.cache_dir={data_dir}',
          f'--config.train.steps={steps}', *TINY]


def _logged_steps(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line)['step'] for line in f if '"loss"' in line]


@pytest.mark.parametrize('signum', [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_at_a_step_with_a_checkpoint_and_the_rerun_resumes(data_dir, tmp_path, signum):
  workdir = str(tmp_path / 'run')
  run = subprocess.Popen(_command(workdir, data_dir, 10_000), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while len(_logged_steps(workdir)) < 3 and time.monotonic() < deadline and run.poll() is None:
    time.sleep(0.2)
  run.send_signal(signum)
  _, stderr = run.communicate(timeout=120)
  assert run.returncode == 0, stderr[-3000:]
  stopped = _logged_steps(workdir)[-1]
  assert 3 <= stopped < 10_000
  assert f'Stopped by a signal after step {stopped}' in stderr
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [str(stopped)]  # no other save
  resumed = subprocess.run(_command(workdir, data_dir, stopped + 2), capture_output=True,
                           text=True, check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resuming from the checkpoint at step {stopped}' in resumed.stderr
  assert _logged_steps(workdir)[-3:] == [stopped, stopped + 1, stopped + 2]


def _final_state(workdir):
  """The latest checkpoint of `workdir` as numpy arrays, by path."""
  import jax
  import orbax.checkpoint as ocp
  steps = sorted(int(p) for p in os.listdir(os.path.join(workdir, 'checkpoints')) if p.isdigit())
  tree = ocp.PyTreeCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(steps[-1]), 'default'))
  return steps[-1], {jax.tree_util.keystr(path): jax.device_get(leaf)
                     for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize('every', [1000, 1])
def test_a_signalled_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(
    data_dir, tmp_path, every):
  """SIGTERM at whatever step the run has reached after 3 logged steps; with checkpoint.every=1
  every step starts an (asynchronous) save, so the signal arrives while one is being written."""
  steps = 40
  saving = [f'--config.checkpoint.every={every}']
  signalled, whole = str(tmp_path / 'signalled'), str(tmp_path / 'whole')
  run = subprocess.Popen(_command(signalled, data_dir, steps) + saving, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while len(_logged_steps(signalled)) < 3 and time.monotonic() < deadline and run.poll() is None:
    time.sleep(0.05)
  run.send_signal(signal.SIGTERM)
  _, stderr = run.communicate(timeout=120)
  assert run.returncode == 0, stderr[-3000:]
  stopped = _logged_steps(signalled)[-1]
  assert stopped < steps, 'the run ended before the signal; make it longer'
  assert _final_state(signalled)[0] == stopped  # a checkpoint at the step it stopped
  for workdir in (signalled, whole):  # resume the first, run the second from scratch
    done = subprocess.run(_command(workdir, data_dir, steps) + saving, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
  (step, resumed), (whole_step, uninterrupted) = _final_state(signalled), _final_state(whole)
  assert step == whole_step == steps
  assert resumed.keys() == uninterrupted.keys()
  for path, value in uninterrupted.items():
    assert (resumed[path] == value).all(), path  # bit-identical, parameters and optimizer state



def test_a_second_sigint_stops_at_once_and_the_last_complete_checkpoint_still_resumes(
    data_dir, tmp_path):
  """Two Ctrl-C's in a row while a save starts at every step: the run stops without finishing its
  step (a KeyboardInterrupt, not exit 0), and whatever checkpoint it had completed restores."""
  workdir = str(tmp_path / 'run')
  saving = ['--config.checkpoint.every=1', '--config.checkpoint.keep=100']
  run = subprocess.Popen(_command(workdir, data_dir, 10_000) + saving, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 240
  while len(_logged_steps(workdir)) < 3 and time.monotonic() < deadline and run.poll() is None:
    time.sleep(0.05)
  # Ctrl-C every 50 ms until it exits: signals sent back to back merge into one (POSIX does not
  # queue them, and Python runs its handler once), so the second must come a little later.
  while run.poll() is None:
    run.send_signal(signal.SIGINT)
    time.sleep(0.05)
  _, stderr = run.communicate(timeout=120)
  assert run.returncode != 0, stderr[-3000:]
  assert 'KeyboardInterrupt' in stderr
  last = _final_state(workdir)[0]  # the newest complete checkpoint restores
  resumed = subprocess.run(_command(workdir, data_dir, last + 1) + saving, capture_output=True,
                           text=True, check=False)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resuming from the checkpoint at step {last}' in resumed.stderr
  assert 'failed to restore' not in resumed.stderr
