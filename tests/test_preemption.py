"""SIGTERM ends a real training run at a step boundary with a checkpoint; re-running resumes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from research import preemption
from tests import commands

TINY = ['--config.model.d_model=64', '--config.model.num_layers=1', '--config.model.mlp_dim=128',
        '--config.model.num_heads=2', '--config.model.head_dim=32', '--config.data.seq_len=64',
        '--config.train.batch_size=8', '--config.eval.batch_size=8', '--config.eval.batches=1',
        '--config.train.log_every=1', '--config.checkpoint.every=1000', '--config.eval.every=1000']


def _command(workdir, data_dir, steps):
  return [sys.executable, '-m', 'launch.train', '--config=experiments/quickstart.py',
          f'--workdir={workdir}', f'--config.data.store_dir={data_dir}',
          f'--config.train.steps={steps}', *TINY]


def run_command(command):
  """Runs a training command to its end on one CPU device (commands.device_env), output kept."""
  return subprocess.run(command, capture_output=True, text=True, check=False,
                        env=commands.device_env(1))


@pytest.fixture(name='start')
def _start_fixture(tmp_path):
  """start(command) starts a run on one CPU device (tests.commands.start_processes: its output goes
  to a file, read by `_read`) and returns it as [(process, log)]; one still running at teardown (a
  failed or timed-out test) is killed."""
  runs = []

  def start(command):
    runs.append(commands.start_processes([(command, commands.device_env(1))], str(tmp_path)))
    return runs[-1]

  yield start
  for started in runs:
    commands.kill_processes(started)


def _read(log):
  with open(log, encoding='utf-8') as f:
    return f.read()


def _wait_for_steps(run, workdir, steps=3):
  """Waits (up to 240 s) until `run` has logged `steps` steps."""
  deadline = time.monotonic() + 240
  while len(_logged_steps(workdir)) < steps and time.monotonic() < deadline and run.poll() is None:
    time.sleep(0.05)


def _logged_steps(workdir):
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line)['step'] for line in f if '"loss"' in line]


def _final_state(workdir):
  """The latest checkpoint of `workdir` as numpy arrays, by path."""
  import jax
  import orbax.checkpoint as ocp
  steps = sorted(int(p) for p in os.listdir(os.path.join(workdir, 'checkpoints')) if p.isdigit())
  tree = ocp.PyTreeCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(steps[-1]), 'default'))
  return steps[-1], {jax.tree_util.keystr(path): jax.device_get(leaf)
                     for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_a_signalled_and_resumed_run_ends_bit_identical_to_an_uninterrupted_one(
    data_dir, tmp_path, start):
  """SIGTERM at whatever step the run has reached after 3 logged steps; with checkpoint.every=1
  every step starts an (asynchronous) save, so the signal arrives while one is being written (the
  two-host Ctrl-C test below stops between saves; the unit test below takes both signals)."""
  steps = 20
  saving = ['--config.checkpoint.every=1']
  signalled, whole = str(tmp_path / 'signalled'), str(tmp_path / 'whole')
  started = start(_command(signalled, data_dir, steps) + saving)
  (run, _), = started
  _wait_for_steps(run, signalled)
  run.send_signal(signal.SIGTERM)
  printed, = commands.wait_processes(started, timeout=120)
  assert run.returncode == 0, printed[-3000:]
  stopped = _logged_steps(signalled)[-1]
  assert stopped < steps, 'the run ended before the signal; make it longer'
  assert _final_state(signalled)[0] == stopped  # a checkpoint at the step it stopped
  for workdir in (signalled, whole):  # resume the first, run the second from scratch
    done = run_command(_command(workdir, data_dir, steps) + saving)
    assert done.returncode == 0, done.stderr[-3000:]
  (step, resumed), (whole_step, uninterrupted) = _final_state(signalled), _final_state(whole)
  assert step == whole_step == steps
  assert resumed.keys() == uninterrupted.keys()
  for path, value in uninterrupted.items():
    assert (resumed[path] == value).all(), path  # bit-identical, parameters and optimizer state


def test_the_first_signal_asks_for_a_stop_and_a_second_sigint_interrupts():
  previous = signal.getsignal(signal.SIGINT)
  with preemption.StopSignal() as stop:
    assert not stop.should_stop(1)
    signal.raise_signal(signal.SIGTERM)
    assert stop.should_stop(1)
    signal.raise_signal(signal.SIGTERM)  # a repeated SIGTERM changes nothing
    with pytest.raises(KeyboardInterrupt):
      signal.raise_signal(signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is previous


# launch.train whose final save (the one a stop writes) then takes 60 s, as on a slow disk or
# bucket: the test's second Ctrl-C arrives while it is in flight.
_SLOW_FINAL_SAVE = """
import runpy, sys, time
from research import checkpoint
original = checkpoint.save
def save(manager, step, state, every, final=False):
  saved = original(manager, step, state, every, final)
  if final:
    time.sleep(60)
  return saved
checkpoint.save = save
sys.argv = ['launch.train', *sys.argv[1:]]
runpy.run_module('launch.train', run_name='__main__')
"""


def test_a_second_sigint_stops_at_once_and_the_last_complete_checkpoint_still_resumes(
    data_dir, tmp_path, start):
  """Ctrl-C, then Ctrl-C again while the stop's checkpoint is being written (a save also starts at
  every step): the command exits 130 at once, and whatever checkpoint it had completed restores."""
  workdir = str(tmp_path / 'run')
  saving = ['--config.checkpoint.every=1', '--config.checkpoint.keep=100']
  flags = _command(workdir, data_dir, 10_000)[3:] + saving
  started = start([sys.executable, '-c', _SLOW_FINAL_SAVE, *flags])
  (run, log), = started
  _wait_for_steps(run, workdir)
  run.send_signal(signal.SIGINT)
  deadline = time.monotonic() + 120
  while 'a second Ctrl-C stops at once' not in _read(log) and time.monotonic() < deadline:
    time.sleep(0.05)
  run.send_signal(signal.SIGINT)
  printed, = commands.wait_processes(started, timeout=30)  # not the 60 s the final save takes
  assert run.returncode == 130, printed[-3000:]
  assert 'Interrupted. Re-run the same command' in printed
  assert 'Stopped by a signal' not in printed
  last = _final_state(workdir)[0]  # the newest complete checkpoint restores
  resumed = run_command(_command(workdir, data_dir, last + 1) + saving)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'Resuming from the checkpoint at step {last}' in resumed.stderr
  assert 'failed to restore' not in resumed.stderr


def test_a_ctrl_c_to_one_host_stops_every_host_at_the_same_step_and_the_job_resumes(
    data_dir, tmp_path):
  """Two jax.distributed processes on localhost; SIGINT reaches process 1 only (not the one that
  writes metrics). It passes it on as the SIGTERM a preempted TPU VM gets, to JAX's preemption
  service, which makes both stop at one step: one checkpoint, exit 0."""
  workdir, port = str(tmp_path / 'run'), commands.free_port()
  started = commands.start_processes(
      [(_command(workdir, data_dir, 10_000), commands.process_env(port, 2, i)) for i in range(2)],
      str(tmp_path))
  _wait_for_steps(started[0][0], workdir)
  started[1][0].send_signal(signal.SIGINT)
  outputs = commands.finish_processes(started, timeout=120)
  stopped = _logged_steps(workdir)[-1]
  assert 3 <= stopped < 10_000
  assert f'Stopped by a signal after step {stopped}' in outputs[0]
  assert os.listdir(os.path.join(workdir, 'checkpoints')) == [str(stopped)]
  port = commands.free_port()
  outputs = commands.run_processes(
      [(_command(workdir, data_dir, stopped + 2), commands.process_env(port, 2, i))
       for i in range(2)], str(tmp_path))
  assert f'Resuming from the checkpoint at step {stopped}' in outputs[0]
  assert _logged_steps(workdir)[-3:] == [stopped, stopped + 1, stopped + 2]
