"""Cloud TPU VMs and pod slices: the gcloud command lines that get capacity, ship the code and run a
sweep as a detached job on every worker, and the commands that watch and stop it.

  python -m launch.sweep ... --runner=tpu_vm --tpu=NAME --project=P --zone=Z \
      --accelerator_type=v5e-16 [--spot] [--queued [--slices=2]] [--wait] [--dry_run]
  python -m launch.tpu_vm status|logs|stop|collect|delete --tpu=NAME --project=P --zone=Z \
      [--workdir=gs://...] [--worker=NAME] [--lines=N]

What `launch.sweep --runner=tpu_vm` does, each step one shell line (`--dry_run` prints them):

1. capacity: the TPU's state decides. None: create it (`tpu-vm create`, or with `--queued` a queued
   resource, which waits for capacity instead of failing, and is the only way to get several slices:
   `--slices=N`). Preempted, stopped, failed or suspended: delete it and create it again. Creating,
   waiting for resources: wait, printing each new state;
2. ship: pack this checkout (`pack` below: the files git tracks or does not ignore, plus the commit,
   whether the tree was dirty and the diff, research/provenance.py) and upload it once to the sweep
   directory in the bucket, from where every worker copies it (one upload, not one per worker);
3. install on every worker: refuse if a job runs there; unpack into ~/research; link ~/research/.venv
   to a venv under ~/venvs named by the hash of launch/requirements-tpu.lock, the pinned versions
   (jax[tpu] and libtpu included), built only when that hash has none, so every worker runs the
   same versions and a relaunch installs nothing;
4. start the sweep's points as a detached job on every worker (launch/tpu_job.py: it kills stale
   processes holding the TPU first), its log in WORKDIR/logs/<worker>.log, and return. Points
   finished do nothing and interrupted ones resume from their checkpoints, so starting again after a
   preemption carries on;
5. `--wait`: poll until every worker's job has ended, recreating a preempted TPU and starting the job
   again, then collect and report (and with --delete_tpu delete the TPU).

`status` shows the TPU's state and each worker's job and log tail; `logs` prints a worker's log from
the bucket (readable after the VM is gone); `stop` sends the jobs SIGTERM (each point saves a
checkpoint); `collect` copies the runs without checkpoints and reports on them.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import dataclasses
import hashlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence

from absl import flags

from research import config as config_lib, errors, provenance, sharding
from research.analysis import sweep as sweep_lib

ROOT = provenance.ROOT  # the checkout shipped to workers
REMOTE_DIR = '~/research'
ARCHIVE = 'research-code.tar.gz'
RESULTS_DIR = 'docs/results/'  # not packed
LOCK = 'launch/requirements-tpu.lock'  # uv pip compile pyproject.toml --extra tpu (README)
REMOTE_PYTHON = ('.venv/bin/python',)  # relative to REMOTE_DIR
# Software versions by TPU generation (cloud.google.com/tpu/docs/runtimes).
RUNTIMES = {'v2': 'tpu-ubuntu2204-base', 'v3': 'tpu-ubuntu2204-base', 'v4': 'tpu-ubuntu2204-base',
            'v5litepod': 'v2-alpha-tpuv5-lite', 'v5p': 'v2-alpha-tpuv5', 'v6e': 'v2-alpha-tpuv6e'}
_TYPE = re.compile(r'^(v2|v3|v4|v5p|v5litepod|v5e|v6e)-(\d+)$')
# What a TPU's state asks for: a TPU VM's `state`, a queued resource's `state.state`.
READY = ('READY', 'ACTIVE')
RECREATE = ('PREEMPTED', 'TERMINATED', 'STOPPED', 'STOPPING', 'FAILED', 'SUSPENDED', 'SUSPENDING')
WAIT = ('CREATING', 'STARTING', 'RESTARTING', 'REPAIRING', 'ACCEPTED', 'WAITING_FOR_RESOURCES',
        'PROVISIONING', 'DELETING')

@dataclasses.dataclass(frozen=True)
class TpuVm:
  """A TPU VM or pod slice (or `slices` of them): what gcloud needs to create and reach it."""
  name: str
  project: str
  zone: str
  accelerator_type: str  # one slice's, in gcloud's names: v4-8, v5litepod-16, ...
  runtime_version: str
  spot: bool = False
  queued: bool = False
  slices: int = 1

  def gcloud(self, group: str, verb: str, *args: str) -> str:
    """`gcloud compute tpus GROUP VERB ...` for this TPU, as one shell line."""
    return shlex.join(['gcloud', 'compute', 'tpus', group, verb, *args,
                       f'--project={self.project}', f'--zone={self.zone}'])

  @property
  def hosts(self) -> int:
    """Worker VMs over all slices."""
    return hosts(self.accelerator_type) * self.slices


def parse_type(accelerator_type: str) -> tuple[str, int]:
  """(generation, size) of an accelerator type; `v5e-16` is accepted for gcloud's `v5litepod-16`."""
  match = _TYPE.match(accelerator_type)
  if not match:
    raise errors.UserError(
        f'--accelerator_type={accelerator_type!r} is not a TPU type; use gcloud\'s names such as '
        'v4-8, v5litepod-16 (or v5e-16), v5p-8, v6e-8.')
  generation = 'v5litepod' if match[1] == 'v5e' else match[1]
  return generation, int(match[2])


def hosts(accelerator_type: str) -> int:
  """Worker VMs in a slice: v2-v4 and v5p count TensorCores (8 per host), v5e and v6e count chips
  (up to 8 on one host, 4 per host in larger slices)."""
  generation, size = parse_type(accelerator_type)
  if generation in ('v5litepod', 'v6e'):
    return 1 if size <= 8 else size // 4
  return max(1, size // 8)


def devices(accelerator_type: str) -> int:
  """JAX devices in a slice: one per TensorCore on v2 and v3, one per chip elsewhere (v4 and v5p
  count 2 TensorCores per chip in their type names, v5e and v6e count chips)."""
  generation, size = parse_type(accelerator_type)
  return size if generation in ('v2', 'v3', 'v5litepod', 'v6e') else size // 2


def make_tpu(name: str, project: str, zone: str, accelerator_type: str, runtime_version: str = '',
             spot: bool = False, queued: bool = False, slices: int = 1) -> TpuVm:
  """The TpuVm of the command-line flags; a missing or inconsistent one fails naming the flag."""
  for flag, value in (('tpu', name), ('project', project), ('zone', zone)):
    if not value:
      raise errors.UserError(f'--runner=tpu_vm needs --{flag}; see docs/tpu.md.')
  if slices < 1 or (slices > 1 and not queued):
    raise errors.UserError(f'--slices={slices}: use 1, or several with --queued (multislice TPUs '
                           'are created as queued resources).')
  generation, size = parse_type(accelerator_type)
  return TpuVm(name, project, zone, f'{generation}-{size}', runtime_version or RUNTIMES[generation],
               spot, queued, slices)


def define_flags() -> None:
  """Defines the flags of the TPU commands (launch.sweep's and this module's main call it once;
  importing this module defines none, so that tests can import it beside other commands)."""
  flags.DEFINE_string('tpu', '', 'tpu_vm: the TPU name (created if it does not exist).')
  flags.DEFINE_string('project', '', 'tpu_vm: the Google Cloud project.')
  flags.DEFINE_string('zone', '', 'tpu_vm: the zone, e.g. us-central2-b.')
  flags.DEFINE_string('accelerator_type', 'v4-8', "tpu_vm: one slice's type: v4-8, v5litepod-16 "
                      '(or v5e-16), v5p-8, v6e-8, ...')
  flags.DEFINE_string('runtime_version', '', 'tpu_vm: the TPU software version; empty = the base '
                      'image of the generation.')
  flags.DEFINE_bool('spot', False, 'tpu_vm: Spot capacity (cheaper, can be preempted).')
  flags.DEFINE_bool('queued', False, 'tpu_vm: create the TPU as a queued resource, which waits '
                    'for capacity.')
  flags.DEFINE_integer('slices', 1, 'tpu_vm: slices joined by the data-centre network '
                       '(multislice; needs --queued and mesh.dcn_* in the config).')
  flags.DEFINE_string('workdir', None, 'The sweep directory (tpu_vm: in a bucket, gs://...); one '
                      'sub-directory per point.')
  flags.DEFINE_string('collect_to', '', 'tpu_vm: local directory the runs are copied to and '
                      'reported in; empty = workdirs/<sweep directory name>.')
  flags.DEFINE_bool('delete_tpu', False, 'tpu_vm: delete the TPU at the end (with --wait).')
  flags.DEFINE_integer('lines', 50, 'tpu_vm status, logs: how many log lines to show.')


def flag_tpu() -> TpuVm:
  """The TpuVm of this command's flags."""
  f = flags.FLAGS
  return make_tpu(f.tpu, f.project, f.zone, f.accelerator_type, f.runtime_version, f.spot,
                  f.queued, f.slices)


def collect_to(workdir: str) -> str:
  """--collect_to, or workdirs/<sweep directory name>."""
  return flags.FLAGS.collect_to or os.path.join('workdirs', os.path.basename(workdir.rstrip('/')))


def remote_config_flag(config_flag: str) -> str:
  """The --config value on a worker: the experiment file's path inside the copied checkout."""
  path, sep, arg = config_flag.partition(':')
  relative = os.path.relpath(os.path.abspath(path), ROOT)
  if relative.startswith('..'):
    raise errors.UserError(f'--config={config_flag}: {path} lies outside {ROOT}, the checkout that '
                           'is copied to the TPU VM; put the experiment file under experiments/.')
  return relative + sep + arg


def state_command(tpu: TpuVm) -> str:
  """Prints the TPU's state (nothing, failing, when it does not exist)."""
  if tpu.queued:
    return tpu.gcloud('queued-resources', 'describe', tpu.name, '--format=value(state.state)')
  return tpu.gcloud('tpu-vm', 'describe', tpu.name, '--format=value(state)')


def create_command(tpu: TpuVm) -> str:
  spot = ['--spot'] if tpu.spot else []
  if tpu.queued:
    nodes = ([f'--node-id={tpu.name}'] if tpu.slices == 1 else
             [f'--node-count={tpu.slices}', f'--node-prefix={tpu.name}'])
    return tpu.gcloud('queued-resources', 'create', tpu.name, *nodes,
                      f'--accelerator-type={tpu.accelerator_type}',
                      f'--runtime-version={tpu.runtime_version}', *spot)
  return tpu.gcloud('tpu-vm', 'create', tpu.name, f'--accelerator-type={tpu.accelerator_type}',
                    f'--version={tpu.runtime_version}', *spot)


def delete_command(tpu: TpuVm) -> str:
  if tpu.queued:  # --force deletes its TPUs with it
    return tpu.gcloud('queued-resources', 'delete', tpu.name, '--force', '--quiet')
  return tpu.gcloud('tpu-vm', 'delete', tpu.name, '--quiet')


def capacity_commands(tpu: TpuVm, state: str) -> list[str] | None:
  """The commands that turn a TPU in `state` ('' = none) into a ready one: [] when it is ready,
  None while it is on its way (wait and ask again)."""
  if state in READY:
    return []
  if state in WAIT:
    return None
  if state == '':
    return [create_command(tpu)]
  if state in RECREATE:
    return [delete_command(tpu), create_command(tpu)]
  raise errors.UserError(f'TPU {tpu.name} is in state {state!r}, which this runner does not know; '
                         f'look at it with `{state_command(tpu)}` and delete it to start over.')


def ssh_command(tpu: TpuVm, remote: str) -> str:
  """Runs the shell line `remote` on every worker (of every slice) at once."""
  if tpu.slices > 1:
    return tpu.gcloud('queued-resources', 'ssh', tpu.name, '--node=all', '--worker=all',
                      f'--command={remote}')
  return tpu.gcloud('tpu-vm', 'ssh', tpu.name, '--worker=all', f'--command={remote}')


def lock_hash() -> str:
  """The first 12 hex digits of the lock file's sha256: the name of the venv it installs."""
  with open(os.path.join(ROOT, LOCK), 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()[:12]


def code_uri(workdir: str) -> str:
  return f'{workdir.rstrip("/")}/code/{ARCHIVE}'


# Fails (exit 3) on a worker where a job runs: its code is not replaced under it.
_NO_JOB_RUNNING = ('(test ! -f ~/.research-job/pid || ! kill -0 "$(cat ~/.research-job/pid)" '
                   '2>/dev/null || { echo "A job is running on $(hostname); stop it first: '
                   'python -m launch.tpu_vm stop" >&2; exit 3; })')


def ship_commands(tpu: TpuVm, workdir: str, archive_path: str) -> list[str]:
  """Pack this checkout, upload it to the bucket once, and install it on every worker."""
  venv = f'~/venvs/research-{lock_hash()}'
  uv = '~/.local/bin/uv'
  install = ' && '.join([
      _NO_JOB_RUNNING,
      f'rm -rf {REMOTE_DIR}', f'mkdir -p {REMOTE_DIR}',
      f'gcloud storage cp {shlex.quote(code_uri(workdir))} ~/{ARCHIVE}',
      f'tar -xzf ~/{ARCHIVE} -C {REMOTE_DIR}',
      f'(test -x {uv} || python3 -m pip install -q --user uv)',
      f'(test -x {venv}/bin/python || ({uv} venv -q --python 3.11 {venv}.tmp && '
      f'{uv} pip install -q --python {venv}.tmp/bin/python -r {REMOTE_DIR}/{LOCK} && '
      f'mv {venv}.tmp {venv}))',
      f'{uv} pip install -q --python {venv}/bin/python --no-deps -e {REMOTE_DIR}',
      f'ln -sfn {venv} {REMOTE_DIR}/.venv'])
  return [
      shlex.join([sys.executable, '-m', 'launch.tpu_vm', 'pack', f'--archive={archive_path}']),
      shlex.join(['gcloud', 'storage', 'cp', archive_path, code_uri(workdir)]),
      ssh_command(tpu, install),
  ]


def pack(out: str) -> int:
  """Writes the checkout to the tar.gz `out`: the files git tracks or does not ignore (outside
  git: every file but .git, .venv, workdirs and caches) and research/provenance.py's shipped
  files. Studies' results (docs/results, tens of MB of runs that no worker reads) stay behind.
  Returns the number of files."""
  try:
    listed = subprocess.run(['git', 'ls-files', '--cached', '--others', '--exclude-standard', '-z'],
                            cwd=ROOT, capture_output=True, text=True, check=True, timeout=60)
    names = [name for name in listed.stdout.split('\0')
             if name and os.path.isfile(os.path.join(ROOT, name))]  # a deleted file is still listed
  except (OSError, subprocess.SubprocessError):
    names = []
    for top, dirs, files in os.walk(ROOT):
      dirs[:] = [d for d in dirs if d not in ('.git', '.venv', 'workdirs', '__pycache__')]
      names += [os.path.relpath(os.path.join(top, name), ROOT) for name in files]
  names = [name for name in names if not name.startswith(RESULTS_DIR)]
  shipped = provenance.shipped_files()
  with tarfile.open(out, 'w:gz') as archive:
    for name in sorted(set(names) - set(shipped)):
      archive.add(os.path.join(ROOT, name), arcname=name, recursive=False)
    for name, text in shipped.items():
      data = text.encode('utf-8')
      info = tarfile.TarInfo(name)
      info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
      archive.addfile(info, io.BytesIO(data))
  return len(names)


def worker_command(config_flag: str, overrides: Sequence[str], workdir: str,
                   point: sweep_lib.Point, multihost: bool,
                   python: Sequence[str] = REMOTE_PYTHON) -> list[str]:
  """The training command every worker runs for `point` (from inside the copied checkout)."""
  distributed = ['--config.distributed.initialize=True'] if multihost else []
  return sweep_lib.train_command(python, config_flag, [*overrides, *distributed], workdir, point)


def job_spec(workdir: str, commands: Sequence[tuple[str, list[str]]], slices: int = 1) -> str:
  """The JSON launch/tpu_job.py runs: each (point name, command), each worker's log in the bucket
  (named by slice too on several)."""
  return json.dumps({'log': f'{workdir.rstrip("/")}/logs/{{worker}}.log', 'slices': slices,
                     'points': [{'name': name, 'command': command} for name, command in commands]},
                    separators=(',', ':'))


def job_command(tpu: TpuVm, action: str, *args: str) -> str:
  """`python -m launch.tpu_job ACTION` on every worker, from inside the copied checkout."""
  command = [*REMOTE_PYTHON, '-m', 'launch.tpu_job', action, *args]
  return ssh_command(tpu, f'cd {REMOTE_DIR} && {shlex.join(command)}')


def logs_command(workdir: str, worker: str, lines: int) -> str:
  """The last `lines` lines of a worker's job log, read from the bucket (research/appendable.py's
  parts, in order)."""
  parts = f'{workdir.rstrip("/")}/logs/{worker}.log.parts/*'
  return f'gcloud storage cat {shlex.quote(parts)} | tail -n {int(lines)}'


def collect_commands(workdir: str, collect_to: str, run_names: Sequence[str]) -> list[str]:
  """Copy the runs (without checkpoints) from the bucket to `collect_to` and report on them."""
  runs = [os.path.join(collect_to, name) for name in run_names]
  return [
      shlex.join(['mkdir', '-p', collect_to]),
      shlex.join(['gcloud', 'storage', 'rsync', '--recursive', r'--exclude=.*/checkpoints/.*',
                  workdir, collect_to]),
      shlex.join([sys.executable, '-m', 'launch.report', *runs,
                  f'--out={os.path.join(collect_to, "report")}']),
  ]


def check_workdir(workdir: str) -> None:
  """Every worker of a slice writes into one workdir: it has to be a bucket."""
  if not workdir or not workdir.startswith('gs://'):
    raise errors.UserError(f'--workdir={workdir}: the tpu_vm runner needs a Cloud Storage '
                           'directory every worker can write, such as gs://BUCKET/sweeps/NAME.')


def region_warning(zone: str, bucket: str, location: str) -> str | None:
  """A warning when bucket `bucket` (at gcloud's `location`: a region such as US-CENTRAL2, or a
  multi-region such as US) is not in the region of `zone`: every read and checkpoint then
  crosses regions, slower and billed. None when it is in that region."""
  region = zone.rsplit('-', 1)[0].lower()
  location = location.strip().lower()
  if location == region:
    return None
  where = ('the multi-region ' if '-' not in location else 'region ') + location.upper()
  return (f'warning: gs://{bucket} is in {where}, the TPU in {region} (--zone={zone}): reads and '
          f'checkpoints cross regions. A bucket in {region} is faster and costs no egress.')


def check_points(config, points: Sequence[sweep_lib.Point], tpu: TpuVm, workdir: str) -> None:
  """Checks each point's config against the TPU here, before any set-up: the config itself, the
  mesh against the chips of `tpu` (all its slices), mesh.dcn_* against its slices, and the global
  batch against the data-parallel size. A failure names the point, the TPU and the key."""
  chips = devices(tpu.accelerator_type) * tpu.slices
  for point in points:
    point_config = sweep_lib.point_config(config, point)
    try:
      config_lib.validate(point_config, workdir, range(chips))
      sharding.dcn_shape(point_config.mesh, sharding.mesh_shape(point_config.mesh, chips),
                         tpu.slices)
    except errors.UserError as e:
      slices = f'{tpu.slices} x ' if tpu.slices > 1 else ''
      raise errors.UserError(f'point {point.name} on {slices}{tpu.accelerator_type} ({chips} '
                             f'chips): {e}') from e


def _first_line(text: str) -> str:
  return next((line.strip() for line in text.splitlines() if line.strip()), 'no output')


def check_store(store_dir: str) -> None:
  """The workers read the document stores from data.store_dir: a bucket every worker reaches, or
  '' (each worker builds the small built-in tasks in its own cache). Lists a bucket's directory
  with gcloud, so a wrong path fails here rather than on every worker."""
  if not store_dir:
    return
  if not store_dir.startswith('gs://'):
    raise errors.UserError(
        f'data.store_dir={store_dir} is a path on this machine, which the TPU workers cannot '
        'read; build the stores into a bucket (launch.build_data with --config.data.store_dir='
        'gs://BUCKET/stores) and point data.store_dir there, or leave it empty for small tasks.')
  listed = run(shlex.join(['gcloud', 'storage', 'ls', store_dir.rstrip('/') + '/']), capture=True)
  if listed.returncode:
    why = _first_line(listed.stderr)
    raise errors.UserError(f'data.store_dir={store_dir} cannot be listed from here ({why}); check '
                           'the path, and that the stores were built there (launch.build_data).')


def bucket_warning(workdir: str, zone: str) -> str | None:
  """`region_warning` for the workdir's bucket, or a line saying why it could not be checked."""
  bucket = workdir[len('gs://'):].split('/', 1)[0]
  described = run(shlex.join(['gcloud', 'storage', 'buckets', 'describe', f'gs://{bucket}',
                              '--format=value(location)']), capture=True)
  if described.returncode:
    why = _first_line(described.stderr)
    return f'warning: could not read the location of gs://{bucket} ({why}).'
  return region_warning(zone, bucket, described.stdout)


def run(command: str, capture: bool = False) -> subprocess.CompletedProcess:
  """Runs the shell line `command`, echoed first unless its output is captured."""
  if not capture:
    print(f'+ {command}', flush=True)
  return subprocess.run(['bash', '-c', command], capture_output=capture, text=True)


def run_or_fail(command: str) -> None:
  code = run(command).returncode
  if code:
    raise errors.UserError(f'This command failed (exit {code}); its output is above: {command}')


def tpu_state(tpu: TpuVm) -> str:
  """The TPU's state now; '' when it does not exist."""
  result = run(state_command(tpu), capture=True)
  return result.stdout.strip() if result.returncode == 0 else ''


def ensure_capacity(tpu: TpuVm, poll_seconds: float = 30) -> None:
  """Creates (or deletes and recreates) the TPU until it is ready, printing each new state."""
  shown = None
  while True:
    state = tpu_state(tpu)
    if state != shown:
      print(f'{tpu.name}: {state or "does not exist"}', flush=True)
      shown = state
    commands = capacity_commands(tpu, state)
    if commands == []:
      return
    for command in commands or []:
      run_or_fail(command)
    if commands is None:
      time.sleep(poll_seconds)


_ENDED = re.compile(r'^(\S+): (finished|stopped)\b', re.MULTILINE)
_DIED = re.compile(r'^(\S+): (died|no job)\b', re.MULTILINE)


def job_progress(tpu: TpuVm, status_output: str) -> str:
  """'ended' when every worker's job has ended, 'died' when one has none running although it
  should (its VM restarted), else 'running'; from the output of `tpu_job status` on every worker."""
  if _DIED.search(status_output):
    return 'died'
  return 'ended' if len(_ENDED.findall(status_output)) >= tpu.hosts else 'running'


def follow_lines(tpu: TpuVm, workdir: str) -> list[str]:
  """The commands that watch, stop and collect the job, as this runner prints them."""
  scope = [f'--tpu={tpu.name}', f'--project={tpu.project}', f'--zone={tpu.zone}',
           f'--accelerator_type={tpu.accelerator_type}',
           *(['--queued', f'--slices={tpu.slices}'] if tpu.queued else [])]
  base = [sys.executable, '-m', 'launch.tpu_vm']
  return [shlex.join([*base, 'status', *scope]),
          shlex.join([*base, 'logs', f'--workdir={workdir}', '--worker=worker-0']),
          shlex.join([*base, 'stop', *scope]),
          shlex.join([*base, 'collect', f'--workdir={workdir}'])]


def main(argv: Sequence[str]) -> None:
  actions = ('status', 'logs', 'stop', 'collect', 'delete', 'pack')
  if len(argv) != 2 or argv[1] not in actions:
    raise errors.UserError(f'usage: python -m launch.tpu_vm {"|".join(actions)} --tpu=NAME '
                           '--project=P --zone=Z ...; see docs/tpu.md.')
  action, f = argv[1], flags.FLAGS
  if action == 'pack':
    print(f'Packed {pack(f.archive)} files and the code version into {f.archive}.')
  elif action == 'collect':
    check_workdir(f.workdir)
    listed = run(shlex.join(['gcloud', 'storage', 'ls', f.workdir.rstrip('/') + '/']), capture=True)
    names = [line.rstrip('/').rsplit('/', 1)[-1] for line in listed.stdout.split()
             if line.endswith('/') and not line.rstrip('/').endswith(('/logs', '/code'))]
    for command in collect_commands(f.workdir, collect_to(f.workdir), names):
      run_or_fail(command)
  elif action == 'logs':
    check_workdir(f.workdir)
    sys.exit(run(logs_command(f.workdir, f.worker, f.lines)).returncode)
  else:
    tpu = flag_tpu()
    if action == 'status':
      print(f'{tpu.name}: {tpu_state(tpu) or "does not exist"}', flush=True)
      sys.exit(run(job_command(tpu, 'status', f'--lines={f.lines}')).returncode)
    if action == 'stop':
      sys.exit(run(job_command(tpu, 'stop')).returncode)
    run_or_fail(delete_command(tpu))


if __name__ == '__main__':
  define_flags()
  flags.DEFINE_string('worker', 'worker-0', 'logs: whose log (status lists the names).')
  flags.DEFINE_string('archive', os.path.join('/tmp', ARCHIVE), 'pack: the archive to write.')
  cli.run(cli.exits_on_user_error(main))
