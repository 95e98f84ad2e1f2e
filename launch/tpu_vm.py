"""The gcloud commands that run a sweep on a Cloud TPU VM or a multi-host pod slice.

  python -m launch.sweep --config=experiments/NAME.py --workdir=gs://BUCKET/sweeps/NAME \
      --runner=tpu_vm --tpu=NAME --project=PROJECT --zone=ZONE --accelerator_type=v4-8 [--dry_run]

In order, each one shell line (`--dry_run` prints them; otherwise each runs and the sweep stops at
the first that fails, except a point's training, after which the next point runs):

1. create the TPU VM unless one of that name exists (`describe || create`);
2. pack this checkout (without .git, .venv, workdirs) and copy it to every worker;
3. on every worker, unpack it into ~/research and install it with jax[tpu] in a venv with
   Python 3.11 (TPU VM images carry an older Python; uv fetches 3.11);
4. for each point, run launch.train on every worker at once (`--worker=all`) with the point's
   workdir under the gs:// sweep directory; on a slice of several hosts with
   `--config.distributed.initialize=True`, so jax.distributed finds the other workers through the
   TPU metadata. A point already finished does nothing and an interrupted one resumes, so
   re-running the sweep command after a preemption carries on;
5. copy the runs' metrics, configs and TensorBoard files (not checkpoints) from the bucket to
   --collect_to and write the report there (launch.report);
6. with --delete_tpu, delete the TPU VM.
"""

import dataclasses
import os
import re
import shlex
import sys
from collections.abc import Sequence

from research import errors
from research import sweep as sweep_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout copied to workers
REMOTE_DIR = '~/research'
ARCHIVE = 'research-code.tar.gz'
REMOTE_PYTHON = ('.venv/bin/python',)  # relative to REMOTE_DIR
# Software versions by TPU generation (cloud.google.com/tpu/docs/runtimes).
RUNTIMES = {'v2': 'tpu-ubuntu2204-base', 'v3': 'tpu-ubuntu2204-base', 'v4': 'tpu-ubuntu2204-base',
            'v5litepod': 'v2-alpha-tpuv5-lite', 'v5p': 'v2-alpha-tpuv5', 'v6e': 'v2-alpha-tpuv6e'}
_TYPE = re.compile(r'^(v2|v3|v4|v5p|v5litepod|v5e|v6e)-(\d+)$')


@dataclasses.dataclass(frozen=True)
class TpuVm:
  """A TPU VM or pod slice: what gcloud needs to create and reach it."""
  name: str
  project: str
  zone: str
  accelerator_type: str  # gcloud's name: v4-8, v5litepod-16, ...
  runtime_version: str
  spot: bool = False

  def gcloud(self, verb: str, *args: str) -> str:
    """`gcloud compute tpus tpu-vm VERB ...` for this TPU, as one shell line."""
    return shlex.join(['gcloud', 'compute', 'tpus', 'tpu-vm', verb, *args,
                       f'--project={self.project}', f'--zone={self.zone}'])


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


def make_tpu(name: str, project: str, zone: str, accelerator_type: str, runtime_version: str = '',
             spot: bool = False) -> TpuVm:
  """The TpuVm of the command-line flags; a missing one fails naming the flag."""
  for flag, value in (('tpu', name), ('project', project), ('zone', zone)):
    if not value:
      raise errors.UserError(f'--runner=tpu_vm needs --{flag}; see README.md, "Sweeps on a TPU VM".')
  generation, size = parse_type(accelerator_type)
  return TpuVm(name, project, zone, f'{generation}-{size}', runtime_version or RUNTIMES[generation],
               spot)


def remote_config_flag(config_flag: str) -> str:
  """The --config value on a worker: the experiment file's path inside the copied checkout."""
  path, sep, arg = config_flag.partition(':')
  relative = os.path.relpath(os.path.abspath(path), ROOT)
  if relative.startswith('..'):
    raise errors.UserError(f'--config={config_flag}: {path} lies outside {ROOT}, the checkout that '
                           'is copied to the TPU VM; put the experiment file under experiments/.')
  return relative + sep + arg


def setup_commands(tpu: TpuVm, archive_path: str) -> list[str]:
  """Create the TPU VM unless it exists, copy this checkout to every worker and install it."""
  create = tpu.gcloud('create', tpu.name, f'--accelerator-type={tpu.accelerator_type}',
                      f'--version={tpu.runtime_version}', *(['--spot'] if tpu.spot else []))
  pack = shlex.join(['tar', '-czf', archive_path, '--exclude=./.git', '--exclude=./.venv',
                     '--exclude=./workdirs', '--exclude=__pycache__', '-C', ROOT, '.'])
  install = ' && '.join([
      f'mkdir -p {REMOTE_DIR}', f'tar -xzf ~/{ARCHIVE} -C {REMOTE_DIR}',
      'python3 -m pip install -q --user uv',
      f'~/.local/bin/uv venv -q --allow-existing --python 3.11 {REMOTE_DIR}/.venv',
      f'~/.local/bin/uv pip install -q --python {REMOTE_DIR}/.venv/bin/python -e {REMOTE_DIR} '
      "'jax[tpu]'"])
  return [
      f'{tpu.gcloud("describe", tpu.name, "--format=value(state)")} || {create}',
      pack,
      tpu.gcloud('scp', archive_path, f'{tpu.name}:{ARCHIVE}', '--worker=all'),  # to the home dir
      tpu.gcloud('ssh', tpu.name, '--worker=all', f'--command={install}'),
  ]


def worker_command(config_flag: str, overrides: Sequence[str], workdir: str,
                   point: sweep_lib.Point, multihost: bool,
                   python: Sequence[str] = REMOTE_PYTHON) -> list[str]:
  """The training command every worker runs for `point` (from inside the copied checkout)."""
  distributed = ['--config.distributed.initialize=True'] if multihost else []
  return sweep_lib.train_command(python, config_flag, [*overrides, *distributed], workdir, point)


def point_command(tpu: TpuVm, command: Sequence[str]) -> str:
  """Runs `command` on every worker of `tpu` at once, from inside the copied checkout."""
  return tpu.gcloud('ssh', tpu.name, '--worker=all',
                    f'--command=cd {REMOTE_DIR} && {shlex.join(command)}')


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
  if not workdir.startswith('gs://'):
    raise errors.UserError(f'--workdir={workdir}: the tpu_vm runner needs a Cloud Storage '
                           'directory every worker can write, such as gs://BUCKET/sweeps/NAME.')
