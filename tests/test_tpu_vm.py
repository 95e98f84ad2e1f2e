"""The tpu_vm runner: its exact gcloud command lines (gcloud itself is a fake here: there is no
Cloud project), the checks it makes before any set-up, the packed code and its provenance, the
pinned install, and the worker's detached job (launch/tpu_job.py) and training command run for
real on this machine."""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tarfile
import time

import pytest

from experiments import base
from launch import tpu_job, tpu_vm
from research import errors, provenance
from research.analysis import sweep
from tests import commands
from tests.test_sweep import EXPERIMENT

ROOT = tpu_vm.ROOT
SCOPE = ['--project=my-project', '--zone=us-central2-b']
FAKE_GCLOUD = """#!/bin/sh
# Answers the read-only queries the runner makes before any set-up.
echo "$*" >> "$FAKE_GCLOUD_LOG"
case "$*" in
  "storage buckets describe"*) echo "$FAKE_BUCKET_LOCATION" ;;
  "storage ls gs://missing"*) echo "ERROR: (gcloud.storage.ls) One or more URLs matched no objects." >&2; exit 1 ;;
esac
"""


@pytest.fixture
def fake_gcloud(tmp_path, monkeypatch):
  """A `gcloud` first on PATH that logs its arguments; returns the log's path."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'gcloud').write_text(FAKE_GCLOUD)
  (bin_dir / 'gcloud').chmod(0o755)
  log = tmp_path / 'gcloud.log'
  monkeypatch.setenv('PATH', f'{bin_dir}:{os.environ["PATH"]}')
  monkeypatch.setenv('FAKE_GCLOUD_LOG', str(log))
  monkeypatch.setenv('FAKE_BUCKET_LOCATION', 'US-CENTRAL2')
  return log


def _sweep(accelerator_type, *flags):
  command = [sys.executable, '-m', 'launch.sweep', '--config=experiments/quickstart.py',
             '--workdir=gs://my-bucket/sweeps/qs', '--runner=tpu_vm', '--tpu=my-tpu',
             '--project=my-project', '--zone=us-central2-b', f'--accelerator_type={accelerator_type}',
             *flags]
  return subprocess.run(command, capture_output=True, text=True, cwd=ROOT)


def _dry_run(accelerator_type, *flags):
  result = _sweep(accelerator_type, '--dry_run', *flags)
  assert result.returncode == 0, result.stderr[-2000:]
  return result.stdout.strip().splitlines()


def _remote(line):
  """The command a `gcloud ... ssh --command=...` line runs on the workers."""
  return next(arg for arg in shlex.split(line) if arg.startswith('--command='))[len('--command='):]


@pytest.mark.parametrize('accelerator_type, gcloud_type, runtime, workers', [
    ('v4-8', 'v4-8', 'tpu-ubuntu2204-base', 1),
    ('v5e-16', 'v5litepod-16', 'v2-alpha-tpuv5-lite', 4)])
def test_dry_run_prints_the_whole_sequence(fake_gcloud, accelerator_type, gcloud_type, runtime,
                                           workers):
  lines = _dry_run(accelerator_type, '--delete_tpu', '--wait', '--config.train.batch_size=32',
                   '--config.eval.batch_size=16')
  chips = 4 if accelerator_type == 'v4-8' else 16
  assert lines[0] == f'# 1 x {gcloud_type}: {workers} worker(s), {chips} chips'
  assert lines[1].startswith('# capacity: the state decides; absent: create; PREEMPTED/')
  assert shlex.split(lines[2]) == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'describe', 'my-tpu',
                                   '--format=value(state)', *SCOPE]
  assert shlex.split(lines[3]) == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'my-tpu',
                                   '--quiet', *SCOPE]
  assert shlex.split(lines[4]) == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'my-tpu',
                                   f'--accelerator-type={gcloud_type}', f'--version={runtime}',
                                   *SCOPE]
  assert shlex.split(lines[5]) == [sys.executable, '-m', 'launch.tpu_vm', 'pack',
                                   '--archive=/tmp/research-code.tar.gz']
  assert lines[6] == ('gcloud storage cp /tmp/research-code.tar.gz '
                      'gs://my-bucket/sweeps/qs/code/research-code.tar.gz')
  venv = f'~/venvs/research-{tpu_vm.lock_hash()}'
  assert shlex.split(lines[7])[:7] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-tpu',
                                       '--worker=all']
  install = _remote(lines[7]).split(' && ')
  assert install[0].startswith('(test ! -f ~/.research-job/pid || ! kill -0')  # not under a job
  assert install[1:5] == [
      'rm -rf ~/research', 'mkdir -p ~/research',
      'gcloud storage cp gs://my-bucket/sweeps/qs/code/research-code.tar.gz ~/research-code.tar.gz',
      'tar -xzf ~/research-code.tar.gz -C ~/research']
  assert f'(test -x {venv}/bin/python || (' in install[6]  # built once per lock file
  assert f'-r ~/research/{tpu_vm.LOCK}' in install[7]
  assert install[-1] == f'ln -sfn {venv} ~/research/.venv'
  remote = shlex.split(_remote(lines[8]))
  assert remote[:7] == ['cd', '~/research', '&&', '.venv/bin/python', '-m', 'launch.tpu_job',
                        'start']
  spec = json.loads(remote[7][len('--spec='):])
  assert spec['log'] == 'gs://my-bucket/sweeps/qs/logs/{worker}.log' and spec['slices'] == 1
  names = [f'schedule.peak_lr={lr},seed={seed}' for lr in (0.001, 0.003) for seed in (0, 1)]
  assert [point['name'] for point in spec['points']] == names
  for point in spec['points']:
    command = point['command']
    assert command[:3] == ['.venv/bin/python', '-m', 'launch.train']
    assert f'--workdir=gs://my-bucket/sweeps/qs/{point["name"]}' in command
    assert ('--config.distributed.initialize=True' in command) == (workers > 1)
  assert lines[9] == '# follow, stop, collect:'
  scope = ['--tpu=my-tpu', *SCOPE, f'--accelerator_type={gcloud_type}']
  assert shlex.split(lines[10]) == [sys.executable, '-m', 'launch.tpu_vm', 'status', *scope]
  assert shlex.split(lines[11]) == [sys.executable, '-m', 'launch.tpu_vm', 'logs',
                                    '--workdir=gs://my-bucket/sweeps/qs', '--worker=worker-0']
  assert shlex.split(lines[12]) == [sys.executable, '-m', 'launch.tpu_vm', 'stop', *scope]
  assert lines[14] == "# --wait: then, once every worker's job has ended:"
  assert lines[15:17] == ['mkdir -p workdirs/qs', "gcloud storage rsync --recursive "
                          "'--exclude=.*/checkpoints/.*' gs://my-bucket/sweeps/qs workdirs/qs"]
  assert lines[17].endswith('--out=workdirs/qs/report') and ' -m launch.report ' in lines[17]
  assert lines[18] == shlex.join(['gcloud', 'compute', 'tpus', 'tpu-vm', 'delete', 'my-tpu',
                                  '--quiet', *SCOPE])
  assert len(lines) == 19
  # Before anything else, the bucket's location was read (in the TPU's region: no warning).
  assert fake_gcloud.read_text() == (
      'storage buckets describe gs://my-bucket --format=value(location)\n')


SCRIPTED_GCLOUD = """#!/bin/bash
# Plays a TPU's life: each describe answers the next line of $FAKE_STATES ('-' = no TPU).
echo "$*" >> "$FAKE_GCLOUD_LOG"
case "$*" in
  "compute tpus tpu-vm describe"*)
    state=$(head -n 1 "$FAKE_STATES"); sed -i 1d "$FAKE_STATES"
    [ "$state" = "-" ] && exit 1; echo "$state" ;;
  *"launch.tpu_job status"*) echo "worker-0: finished: 4 of 4 points ran" ;;
  "storage buckets describe"*) echo US-CENTRAL2 ;;
  "storage rsync"*) for last; do :; done; cp -r "$FAKE_RUNS/." "$last" ;;
esac
"""


def test_wait_follows_the_job_through_a_preemption_then_collects(tmp_path):
  """`--wait` against a scripted gcloud: no TPU, so it is created and waited for; the job starts;
  the TPU is preempted, so it is deleted, created again and the job started again (its points
  resume); every worker's job ends; the runs are collected and reported, and the TPU deleted."""
  bin_dir, runs = tmp_path / 'bin', tmp_path / 'bucket'
  bin_dir.mkdir()
  (bin_dir / 'gcloud').write_text(SCRIPTED_GCLOUD)
  (bin_dir / 'gcloud').chmod(0o755)
  (tmp_path / 'states').write_text('-\nCREATING\nREADY\nPREEMPTED\nPREEMPTED\nREADY\nREADY\n')
  names = [f'schedule.peak_lr={lr},seed={seed}' for lr in (0.001, 0.003) for seed in (0, 1)]
  for name in names:  # what the bucket holds at the end: metrics in parts, as written there
    (runs / name / 'metrics.jsonl.parts').mkdir(parents=True)
    (runs / name / 'config.json').write_text(json.dumps(base.get_config().to_dict()))
    (runs / name / 'metrics.jsonl.parts' / '000000').write_text('{"step": 1, "loss": 5.0}\n')
  log = tmp_path / 'gcloud.log'
  env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'FAKE_GCLOUD_LOG': str(log),
         'FAKE_STATES': str(tmp_path / 'states'), 'FAKE_RUNS': str(runs)}
  collect_to = tmp_path / 'collected'
  result = subprocess.run(
      [sys.executable, '-m', 'launch.sweep', '--config=experiments/quickstart.py',
       '--workdir=gs://my-bucket/sweeps/qs', '--runner=tpu_vm', '--tpu=my-tpu',
       '--project=my-project', '--zone=us-central2-b', '--accelerator_type=v4-8', '--wait',
       '--poll_seconds=0', '--delete_tpu', f'--collect_to={collect_to}',
       '--config.train.batch_size=32', '--config.eval.batch_size=16'],
      capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  calls = [' '.join(line.split()[:4]) for line in log.read_text().splitlines()]
  describe, create, delete = ('compute tpus tpu-vm describe', 'compute tpus tpu-vm create',
                              'compute tpus tpu-vm delete')
  ship = ['storage cp /tmp/research-code.tar.gz gs://my-bucket/sweeps/qs/code/research-code.tar.gz',
          'compute tpus tpu-vm ssh', 'compute tpus tpu-vm ssh']  # install, start
  assert calls == [
      'storage buckets describe gs://my-bucket',
      describe, create, describe, describe, *ship,  # absent: create, wait, ready; ship, start
      describe, describe, delete, create, describe, *ship,  # preempted: recreate, start again
      describe, 'compute tpus tpu-vm ssh',  # ready: every worker's job has ended
      'storage rsync --recursive --exclude=.*/checkpoints/.*', delete]
  assert [line for line in result.stdout.splitlines() if line.startswith('my-tpu: ')] == [
      'my-tpu: does not exist', 'my-tpu: CREATING', 'my-tpu: READY', 'my-tpu: PREEMPTED',
      'my-tpu: READY']
  report = (collect_to / 'report' / 'report.md').read_text()
  assert all(f'- `{name}`: `{collect_to / name}`' in report for name in names)


def test_queued_spot_and_multislice_command_lines():
  one = tpu_vm.make_tpu('my-tpu', 'my-project', 'us-central2-b', 'v5e-16', spot=True, queued=True)
  two = tpu_vm.make_tpu('my-tpu', 'my-project', 'us-central2-b', 'v5p-16', queued=True, slices=2)
  queued = ['gcloud', 'compute', 'tpus', 'queued-resources']
  assert shlex.split(tpu_vm.state_command(one)) == [
      *queued, 'describe', 'my-tpu', '--format=value(state.state)', *SCOPE]
  assert shlex.split(tpu_vm.create_command(one)) == [
      *queued, 'create', 'my-tpu', '--node-id=my-tpu', '--accelerator-type=v5litepod-16',
      '--runtime-version=v2-alpha-tpuv5-lite', '--spot', *SCOPE]
  assert shlex.split(tpu_vm.create_command(two)) == [
      *queued, 'create', 'my-tpu', '--node-count=2', '--node-prefix=my-tpu',
      '--accelerator-type=v5p-16', '--runtime-version=v2-alpha-tpuv5', *SCOPE]
  assert shlex.split(tpu_vm.delete_command(two)) == [
      *queued, 'delete', 'my-tpu', '--force', '--quiet', *SCOPE]
  assert shlex.split(tpu_vm.ssh_command(two, 'hostname')) == [
      *queued, 'ssh', 'my-tpu', '--node=all', '--worker=all', '--command=hostname', *SCOPE]
  assert shlex.split(tpu_vm.ssh_command(one, 'hostname')) == [
      'gcloud', 'compute', 'tpus', 'tpu-vm', 'ssh', 'my-tpu', '--worker=all', '--command=hostname',
      *SCOPE]
  assert (one.hosts, two.hosts, tpu_vm.devices('v5p-16') * two.slices) == (4, 4, 16)
  # What a state asks for: nothing when ready, wait while on its way, else (re)create.
  assert tpu_vm.capacity_commands(two, 'ACTIVE') == []
  assert tpu_vm.capacity_commands(two, 'WAITING_FOR_RESOURCES') is None
  assert tpu_vm.capacity_commands(two, '') == [tpu_vm.create_command(two)]
  assert tpu_vm.capacity_commands(two, 'SUSPENDED') == [tpu_vm.delete_command(two),
                                                        tpu_vm.create_command(two)]
  plain = tpu_vm.make_tpu('my-tpu', 'my-project', 'us-central2-b', 'v4-8', spot=True)
  assert tpu_vm.capacity_commands(plain, 'PREEMPTED') == [
      'gcloud compute tpus tpu-vm delete my-tpu --quiet --project=my-project --zone=us-central2-b',
      'gcloud compute tpus tpu-vm create my-tpu --accelerator-type=v4-8 '
      '--version=tpu-ubuntu2204-base --spot --project=my-project --zone=us-central2-b']
  with pytest.raises(errors.UserError, match="state 'HIDING', which this runner does not know"):
    tpu_vm.capacity_commands(plain, 'HIDING')
  with pytest.raises(errors.UserError, match='--slices=2: use 1, or several with --queued'):
    tpu_vm.make_tpu('t', 'p', 'z', 'v4-8', slices=2)
  assert tpu_vm.logs_command('gs://b/sweeps/qs/', 'slice-1-worker-3', 20) == (
      "gcloud storage cat 'gs://b/sweeps/qs/logs/slice-1-worker-3.log.parts/*' | tail -n 20")


def test_job_progress_reads_every_workers_status():
  tpu = tpu_vm.make_tpu('t', 'p', 'z', 'v4-16')  # 2 workers
  running = 'worker-0: running point 1/2 a (pid 7)\n  step 3\nworker-1: finished: 2 of 2 points ran'
  assert tpu_vm.job_progress(tpu, running) == 'running'
  assert tpu_vm.job_progress(tpu, 'worker-0: finished: 2 of 2 points ran\n'
                                  'worker-1: stopped: 1 of 2 points ran') == 'ended'
  assert tpu_vm.job_progress(tpu, 'worker-0: died while running a (the VM restarted ...)\n'
                                  'worker-1: running point 1/2 a (pid 9)') == 'died'


def _config(batch_size=32, **mesh):
  config = base.get_config()
  config.train.batch_size, config.eval.batch_size = batch_size, 32
  config.mesh.update(mesh)
  return config


def test_checks_before_set_up_name_the_point_the_tpu_and_the_key(fake_gcloud):
  point = [sweep.Point('seed=1', {'seed': 1})]
  tpu = tpu_vm.make_tpu('t', 'p', 'us-central2-b', 'v5e-16', queued=True, slices=2)
  tpu_vm.check_points(_config(data=-1, dcn_data=2), point, tpu, 'gs://b/s')  # 32 chips: fine
  with pytest.raises(errors.UserError, match=r'point seed=1 on 2 x v5litepod-16 \(32 chips\): '
                     r'train.batch_size=48 must be divisible .* data-parallel size \(32'):
    tpu_vm.check_points(_config(48, data=-1, dcn_data=2), point, tpu, 'gs://b/s')
  with pytest.raises(errors.UserError, match=r'The devices are in 2 slices, but mesh.dcn_\*=1 '
                     'spans 1'):
    tpu_vm.check_points(_config(data=-1), point, tpu, 'gs://b/s')
  with pytest.raises(errors.UserError, match='needs 8 devices but 32 are available'):
    tpu_vm.check_points(_config(data=2, fsdp=4, dcn_data=2), point, tpu, 'gs://b/s')
  with pytest.raises(errors.UserError, match='data.store_dir=/home/me/stores is a path on this '
                     'machine'):
    tpu_vm.check_store('/home/me/stores')
  tpu_vm.check_store('gs://stores/built')
  with pytest.raises(errors.UserError, match=r'data.store_dir=gs://missing/x cannot be listed from '
                     r'here \(ERROR: \(gcloud.storage.ls\) One or more URLs matched no objects.\)'):
    tpu_vm.check_store('gs://missing/x')
  assert tpu_vm.bucket_warning('gs://my-bucket/s', 'us-central2-b') is None
  assert tpu_vm.region_warning('us-central2-b', 'b', 'US') == (
      'warning: gs://b is in the multi-region US, the TPU in us-central2 (--zone=us-central2-b): '
      'reads and checkpoints cross regions. A bucket in us-central2 is faster and costs no egress.')
  assert 'is in region EUROPE-WEST4' in tpu_vm.region_warning('us-east5-a', 'b', 'EUROPE-WEST4')


def test_a_bad_point_stops_the_sweep_before_any_set_up(fake_gcloud):
  result = _sweep('v5e-16', '--dry_run', '--config.train.batch_size=24')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: point schedule.peak_lr=0.001,seed=0 on v5litepod-16 (16 chips): '
      'train.batch_size=24 must be divisible')
  assert not fake_gcloud.exists()  # nothing ran, not even a query


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
  assert [tpu_vm.devices(t) for t in ('v4-8', 'v4-32', 'v5p-16', 'v5e-8', 'v6e-64', 'v3-8')] == [
      4, 16, 8, 8, 64, 8]


def test_the_packed_code_carries_its_commit_and_diff(tmp_path):
  archive = tmp_path / 'code.tar.gz'
  count = tpu_vm.pack(str(archive))
  with tarfile.open(archive) as tar:
    names = tar.getnames()
    shipped = json.load(tar.extractfile(provenance.SHIPPED_VERSION))
    tar.extractall(tmp_path / 'code', filter='data')
  head = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=ROOT, capture_output=True, text=True,
                        check=True).stdout.strip()
  assert shipped == provenance.code_version() and shipped['git_commit'] == head
  assert (provenance.SHIPPED_DIFF in names) == shipped['git_dirty']
  assert 'launch/tpu_vm.py' in names and tpu_vm.LOCK in names and len(names) >= count
  assert not any(name.startswith(('.git/', '.venv/', 'workdirs/', tpu_vm.RESULTS_DIR))
                 for name in names)
  # Unpacked away from git, the code reports the commit it was packed from.
  shown = subprocess.run([sys.executable, '-c', 'from research import provenance; '
                          'print(provenance.code_version())'], cwd=tmp_path / 'code',
                         capture_output=True, text=True, check=True,
                         env={**os.environ, 'PYTHONPATH': str(tmp_path / 'code')})
  assert shown.stdout.strip() == repr(shipped)


def test_the_lock_pins_what_pyproject_asks_for():
  """launch/requirements-tpu.lock (uv pip compile pyproject.toml --extra tpu) pins jax to the
  tpu extra's version and holds every dependency of pyproject.toml."""
  import tomllib
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  with open(os.path.join(ROOT, tpu_vm.LOCK), encoding='utf-8') as f:
    pinned = dict(line.split('==') for line in f.read().splitlines()
                  if '==' in line and not line.startswith(' '))
  assert project['optional-dependencies']['tpu'] == [f'jax[tpu]=={pinned["jax"]}']
  assert pinned['jaxlib'] == pinned['jax'] and 'libtpu' in pinned
  for requirement in project['dependencies']:
    name = requirement.split('>')[0].split('<')[0].split('=')[0].split('[')[0].strip()
    assert name.lower().replace('_', '-') in {n.lower().replace('_', '-') for n in pinned}, name


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
  saved = json.loads((run / 'config.json').read_text())
  assert saved['seed'] == 1 and saved['code_version'] == provenance.code_version()
  assert (run / 'code.diff').exists() == bool(provenance.code_diff())
  assert 'step 3/3' in outputs[0] and 'step 3/3' not in outputs[1]


POINT = """
import signal, sys, time
print('{name} started', flush=True)
def stop(signum, frame):
  print('{name} saved a checkpoint at SIGTERM', flush=True)
  sys.exit(143)
signal.signal(signal.SIGTERM, stop)
time.sleep({seconds})
print('{name} done', flush=True)
"""


def _wait_for(predicate, timeout=60):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, 'timed out'
    time.sleep(0.1)


def _points(tmp_path, *points):
  """A job spec of (name, seconds) points: each prints, sleeps, and saves at SIGTERM."""
  specs = []
  for name, seconds in points:
    (tmp_path / f'{name}.py').write_text(POINT.format(name=name, seconds=seconds))
    specs.append({'name': name, 'command': [sys.executable, str(tmp_path / f'{name}.py')]})
  return json.dumps({'log': str(tmp_path / 'logs' / '{worker}.log'), 'points': specs})


def test_the_worker_job_outlives_its_ssh_session_and_stops_cleanly(tmp_path, monkeypatch):
  """launch/tpu_job.py for real: `start`, run as an SSH session would run it, returns at once and
  the job outlives that session (its process group hung up); `status` shows the running point
  and its log; `stop` sends SIGTERM on to the point (which saves) and no other point starts."""
  monkeypatch.setenv('TPU_WORKER_ID', '3')
  job_dir = str(tmp_path / 'job')
  spec = _points(tmp_path, ('quick', 0), ('long', 600), ('never', 0))
  session = subprocess.Popen(
      [sys.executable, '-m', 'launch.tpu_job', 'start', f'--spec={spec}', f'--job_dir={job_dir}'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
  out, err = session.communicate(timeout=60)
  assert out.startswith('Started job ') and session.returncode == 0, err
  _wait_for(lambda: 'long started' in tpu_job.status(job_dir))
  with pytest.raises(ProcessLookupError):  # the session's process group: nobody is left in it
    os.killpg(session.pid, signal.SIGHUP)
  pid = tpu_job.running_pid(job_dir)
  assert tpu_job.start(spec, job_dir).startswith(f'A job is already running here (pid {pid})')
  shown = tpu_job.status(job_dir, lines=2).splitlines()
  assert shown[0] == f'worker-3: running point 2/3 long (pid {pid})'
  assert shown[2] == '  long started'
  assert tpu_job.stop(job_dir) == (f'Sent SIGTERM to job {pid}: the running point saves a '
                                   'checkpoint and stops.')
  _wait_for(lambda: tpu_job.running_pid(job_dir) is None)
  assert tpu_job.status(job_dir, lines=0) == 'worker-3: stopped: 2 of 3 points ran, failed: long'
  log = (tmp_path / 'logs' / 'worker-3.log').read_text().splitlines()
  assert [line for line in log if not line.startswith('=== point')] == [
      'quick started', 'quick done', 'long started', 'long saved a checkpoint at SIGTERM',
      '=== job stopped']
  assert '=== point long exited 143' in log and not any('never' in line for line in log)
  assert tpu_job.stop(job_dir) == 'No job is running here.'


def test_start_kills_a_stale_process_holding_the_tpu(tmp_path, monkeypatch):
  monkeypatch.setenv('TPU_WORKER_ID', '0')
  monkeypatch.chdir(ROOT)
  device = tmp_path / 'accel0'
  device.write_text('')
  holder = subprocess.Popen([sys.executable, '-c', f'f = open({str(device)!r}); '
                             'import time; time.sleep(600)'])
  _wait_for(lambda: holder.pid in tpu_job.device_holders((str(device),)))
  started = tpu_job.start(_points(tmp_path, ('quick', 0)), str(tmp_path / 'job'), (str(device),))
  assert started.endswith(f'; killed 1 stale process(es) holding the TPU: [{holder.pid}].')
  assert holder.wait(timeout=30) == -signal.SIGKILL
  _wait_for(lambda: tpu_job.running_pid(str(tmp_path / 'job')) is None)
  assert tpu_job.status(str(tmp_path / 'job'), lines=0) == 'worker-0: finished: 1 of 1 points ran'


def test_a_job_whose_runner_died_says_so(tmp_path, monkeypatch):
  monkeypatch.setenv('TPU_WORKER_ID', '0')
  (tmp_path / 'state.json').write_text(json.dumps({'state': 'running', 'point': 'a', 'index': 1,
                                                   'points': 2}))
  (tmp_path / 'pid').write_text('999999999')
  assert tpu_job.status(str(tmp_path), lines=0).startswith('worker-0: died while running a')
  assert tpu_job.status(str(tmp_path / 'none'), lines=0) == 'worker-0: no job has run here'
  # Workers of several slices never share a log name, whether or not the slice is known.
  assert tpu_job.worker_name(multislice=True) == f'{socket.gethostname()}-worker-0'
  monkeypatch.setenv('MEGASCALE_SLICE_ID', '1')
  assert tpu_job.worker_name(multislice=True) == 'slice-1-worker-0'
