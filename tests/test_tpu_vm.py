"""The tpu_vm runner: its dry-run command sequence, and its per-worker command run for real as two
jax.distributed processes on localhost."""

import json
import os
import shlex
import subprocess
import sys

import pytest

from launch import tpu_vm
from research import errors, sweep
from tests import commands
from tests.test_sweep import EXPERIMENT

ROOT = tpu_vm.ROOT


def _dry_run(accelerator_type, *flags):
  command = [sys.executable, '-m', 'launch.sweep', '--config=experiments/quickstart.py',
             '--workdir=gs://my-bucket/sweeps/qs', '--runner=tpu_vm', '--tpu=my-tpu',
             '--project=my-project', '--zone=us-central2-b', f'--accelerator_type={accelerator_type}',
             '--dry_run', *flags]
  result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.strip().splitlines()


def _remote(line):
  """The command a `gcloud ... ssh --command=...` line runs on the workers."""
  return next(arg for arg in shlex.split(line) if arg.startswith('--command='))[len('--command='):]


@pytest.mark.parametrize('accelerator_type, gcloud_type, runtime, workers', [
    ('v4-8', 'v4-8', 'tpu-ubuntu2204-base', 1),
    ('v5e-16', 'v5litepod-16', 'v2-alpha-tpuv5-lite', 4)])
def test_dry_run_prints_the_whole_sequence(accelerator_type, gcloud_type, runtime, workers):
  lines = _dry_run(accelerator_type, '--delete_tpu', '--config.train.batch_size=32')
  assert lines[0] == f'# {gcloud_type}: {workers} worker(s)'
  scope = ['--project=my-project', '--zone=us-central2-b']
  describe, create = lines[1].split(' || ')
  assert shlex.split(describe) == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', 'my-tpu',
                                   '--format=value(state)', *scope]
  assert shlex.split(create) == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'my-tpu',
                                 f'--accelerator-type={gcloud_type}', f'--version={runtime}', *scope]
  pack = shlex.split(lines[2])
  assert pack[:3] == ['tar', '-czf', '/tmp/research-code.tar.gz'] and pack[-2:] == [ROOT, '.']
  assert shlex.split(lines[3]) == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp',
                                   '/tmp/research-code.tar.gz', 'my-tpu:research-code.tar.gz',
                                   '--worker=all', *scope]
  install = _remote(lines[4])
  assert 'tar -xzf ~/research-code.tar.gz -C ~/research' in install and "'jax[tpu]'" in install
  trains = lines[5:9]
  for line, (lr, seed) in zip(trains, [(lr, s) for lr in (0.001, 0.003) for s in (0, 1)]):
    assert '--worker=all' in shlex.split(line)
    remote = shlex.split(_remote(line))
    name = f'schedule.peak_lr={lr},seed={seed}'
    assert remote[:6] == ['cd', '~/research', '&&', '.venv/bin/python', '-m', 'launch.train']
    assert f'--workdir=gs://my-bucket/sweeps/qs/{name}' in remote
    assert remote[-3:] == ['--config.train.batch_size=32', f'--config.schedule.peak_lr={lr}',
                           f'--config.seed={seed}'] or remote[-4:] == [
        '--config.train.batch_size=32', '--config.distributed.initialize=True',
        f'--config.schedule.peak_lr={lr}', f'--config.seed={seed}']
    assert ('--config.distributed.initialize=True' in remote) == (workers > 1)
  assert lines[9] == 'mkdir -p workdirs/qs'
  assert shlex.split(lines[10]) == ['gcloud', 'storage', 'rsync', '--recursive',
                                    '--exclude=.*/checkpoints/.*', 'gs://my-bucket/sweeps/qs',
                                    'workdirs/qs']
  assert ' -m launch.report workdirs/qs/schedule.peak_lr=0.001,seed=0 ' in lines[11]
  assert lines[11].endswith('--out=workdirs/qs/report')
  assert shlex.split(lines[12]) == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'my-tpu',
                                    '--quiet', *scope]
  assert len(lines) == 13


def test_bad_tpu_flags_fail_naming_them():
  with pytest.raises(errors.UserError, match="--accelerator_type='v9-8' is not a TPU type"):
    tpu_vm.make_tpu('t', 'p', 'z', 'v9-8')
  with pytest.raises(errors.UserError, match='needs --zone'):
    tpu_vm.make_tpu('t', 'p', '', 'v4-8')
  with pytest.raises(errors.UserError, match='needs a Cloud Storage directory'):
    tpu_vm.check_workdir('/tmp/sweep')
  with pytest.raises(errors.UserError, match='lies outside'):
    tpu_vm.remote_config_flag('/elsewhere/experiment.py:arg')
  assert tpu_vm.remote_config_flag(os.path.join(ROOT, 'experiments/ul2.py:decoder')) == (
      'experiments/ul2.py:decoder')
  assert [tpu_vm.hosts(t) for t in ('v4-8', 'v4-32', 'v5p-16', 'v5e-8', 'v5litepod-16', 'v6e-64',
                                    'v3-8')] == [1, 4, 2, 1, 4, 16, 1]


def test_the_worker_command_trains_as_two_jax_distributed_processes(tmp_path, data_dir):
  """What every worker of a multi-host slice runs, run here as 2 processes with 2 CPU devices
  each, jax.distributed coordinated on localhost through the environment."""
  (tmp_path / 'experiment.py').write_text(EXPERIMENT)
  point = sweep.Point('seed=1', {'seed': 1})
  command = tpu_vm.worker_command(str(tmp_path / 'experiment.py'),
                                  ['--config.train.steps=3', f'--config.data.store_dir={data_dir}'],
                                  str(tmp_path / 'sweep'), point, multihost=True,
                                  python=[sys.executable])
  port = commands.free_port()
  outputs = commands.run_processes([(command, commands.process_env(port, 2, i)) for i in range(2)],
                                   str(tmp_path), cwd=ROOT)
  run = tmp_path / 'sweep' / 'seed=1'
  lines = [json.loads(line) for line in (run / 'metrics.jsonl').read_text().splitlines()]
  # One writer (process 0) logged each training step once: the processes were one run.
  assert [line['step'] for line in lines if 'loss' in line] == [1, 2, 3]
  assert sorted(os.listdir(run / 'checkpoints')) == ['3']
  assert json.loads((run / 'config.json').read_text())['seed'] == 1
  assert 'step 3/3' in outputs[0] and 'step 3/3' not in outputs[1]
