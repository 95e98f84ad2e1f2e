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
