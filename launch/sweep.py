"""Runs every point of an experiment file's sweep, one workdir per point, skipping finished ones.

  python -m launch.sweep --config=experiments/NAME.py[:ARG] --workdir=DIR [--dry_run] \
      [--runner=local [--parallel=N] | --runner=tpu_vm --tpu=... (launch/tpu_vm.py)]

The experiment file's `get_sweep()` lists the points (research/sweep.py; `get_sweep(ARG)` for
--config=experiments/NAME.py:ARG when it takes an argument). Each runs as

  python -m launch.train --config=experiments/NAME.py[:ARG] --workdir=DIR/<point> \
      [the sweep command's own --config.K=V overrides] --config.K=V ...  # the point's

The local runner runs the points one after the other, or `--parallel=N` at a time with the
machine's devices split N ways (launch/device_shares.py), each point's output in
DIR/<point>/train.log. Points already done are skipped and interrupted ones resume, so re-running
the command after a kill carries on where it stopped; a point that is killed stops the sweep
(the others running beside it finish first). Every override is checked against the config before
any point starts. The command ends with a status table: each point done, interrupted, failed
(with its log's last line) or pending. `--dry_run` prints the commands instead of running them.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import importlib.util
import inspect
import json
import os
import shlex
import subprocess
import sys
import time

from absl import flags

from launch import device_shares, tpu_vm
from research import errors
from research import sweep as sweep_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep directory: one sub-directory per point.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
_RUNNER = flags.DEFINE_enum('runner', 'local', ['local', 'tpu_vm'], 'Where the points run.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'local: points run at once, each on its share of '
                                 'the devices (TPU chips, GPUs or CPU cores).')
_TPU = flags.DEFINE_string('tpu', '', 'tpu_vm: the TPU VM name (created if it does not exist).')
_PROJECT = flags.DEFINE_string('project', '', 'tpu_vm: the Google Cloud project.')
_ZONE = flags.DEFINE_string('zone', '', 'tpu_vm: the zone, e.g. us-central2-b.')
_ACCELERATOR_TYPE = flags.DEFINE_string('accelerator_type', 'v4-8',
                                        'tpu_vm: v4-8, v5litepod-16 (or v5e-16), v5p-8, v6e-8, ...')
_RUNTIME_VERSION = flags.DEFINE_string('runtime_version', '', 'tpu_vm: the TPU software version; '
                                       'empty = the base image of the generation.')
_SPOT = flags.DEFINE_bool('spot', False, 'tpu_vm: create a Spot TPU VM.')
_COLLECT_TO = flags.DEFINE_string('collect_to', '', 'tpu_vm: local directory the runs are copied '
                                  'to and reported in; empty = workdirs/<sweep directory name>.')
_DELETE_TPU = flags.DEFINE_bool('delete_tpu', False, 'tpu_vm: delete the TPU VM at the end.')
flags.mark_flags_as_required(['config', 'workdir'])

_KILLED = (130, 137, 143)  # 128 + SIGINT, SIGKILL, SIGTERM as a shell reports them


def experiment_sweep(config_flag: str) -> list[dict]:
  """The `get_sweep()` of the experiment file named by --config (its path before any ':'), or
  `get_sweep(ARG)` for --config=PATH:ARG when it takes an argument, as get_config does."""
  path, has_arg, arg = config_flag.partition(':')
  spec = importlib.util.spec_from_file_location('experiment_for_sweep', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise errors.UserError(f'--config={config_flag}: {path} has no get_sweep(); add one that '
                           'returns a list of {"config key": value} overrides.')
  takes_arg = bool(inspect.signature(module.get_sweep).parameters)
  return module.get_sweep(arg) if has_arg and takes_arg else module.get_sweep()


def start_point(command: list[str], point_dir: str, share: device_shares.Share):
  """Starts one point's training command on its device share, output appended to its log."""
  os.makedirs(point_dir, exist_ok=True)
  with open(os.path.join(point_dir, sweep_lib.LOG_FILE), 'a', encoding='utf-8') as log:
    return subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **share.env},
        preexec_fn=(lambda: os.sched_setaffinity(0, share.cpus)) if share.cpus else None)


def record_exit(point_dir: str, code: int) -> None:
  with open(os.path.join(point_dir, sweep_lib.STATUS_FILE), 'w', encoding='utf-8') as f:
    json.dump({'exit_code': code}, f)


def status_table(workdir: str, points, total_steps: int) -> str:
  """One line per point: its name, its state and, when it failed, its log's last line."""
  rows = [(p.name, *sweep_lib.status(os.path.join(workdir, p.name),
                                     p.overrides.get('train.steps', total_steps)))
          for p in points]
  width = max(len(name) for name, _, _ in rows)
  return '\n'.join(f'{name.ljust(width)}  {state}{"  " + why if why else ""}'
                   for name, state, why in rows)


def run_local(config_flag: str, overrides: list[str], workdir: str, points, total_steps: int):
  """Runs the points not done yet, `--parallel` at a time; stops starting new ones once a point
  is killed, and exits non-zero then."""
  commands = {p.name: sweep_lib.train_command([sys.executable], config_flag, overrides, workdir, p)
              for p in points}
  if _DRY_RUN.value:
    print('\n'.join(shlex.join(commands[p.name]) for p in points))
    return
  kind, devices = device_shares.detect()
  free = device_shares.shares(kind, devices, _PARALLEL.value)
  queue, running, killed = [], {}, []
  for point in points:
    state, _ = sweep_lib.status(os.path.join(workdir, point.name),
                                point.overrides.get('train.steps', total_steps))
    if state == 'done':
      print(f'{point.name}: done, skipped.')
    else:
      queue.append((point, state))
  try:
    while queue or running:
      while queue and free and not killed:
        (point, state), share = queue.pop(0), free.pop(0)
        print(f'{point.name}: {"resuming" if state == "interrupted" else "running"} ...',
              flush=True)
        running[point.name] = (start_point(commands[point.name],
                                           os.path.join(workdir, point.name), share), share)
      if killed and not running:
        break
      time.sleep(0.2)
      for name, (process, share) in list(running.items()):
        code = process.poll()
        if code is not None:
          record_exit(os.path.join(workdir, name), code)
          del running[name]
          free.append(share)
          if code < 0 or code in _KILLED:
            killed.append(f'{name} (exit {code})')
  except KeyboardInterrupt:  # Ctrl-C reached the points too: each stops after a step, saved
    for name, (process, _) in running.items():
      record_exit(os.path.join(workdir, name), process.wait())
    killed.append('the sweep (Ctrl-C)')
  print(status_table(workdir, points, total_steps))
  if killed:
    sys.exit(f'Stopped: {", ".join(killed)}; re-run the command to resume.')


def _run_or_fail(command: str) -> None:
  print(f'+ {command}', flush=True)
  code = subprocess.run(['bash', '-c', command]).returncode
  if code:
    raise errors.UserError(f'This command failed (exit {code}); its output is above: {command}')


def run_tpu_vm(config_flag: str, overrides: list[str], workdir: str, points):
  """Runs every point on a TPU VM or pod slice (launch/tpu_vm.py); prints the commands with
  --dry_run."""
  tpu_vm.check_workdir(workdir)
  tpu = tpu_vm.make_tpu(_TPU.value, _PROJECT.value, _ZONE.value, _ACCELERATOR_TYPE.value,
                        _RUNTIME_VERSION.value, _SPOT.value)
  remote_config = tpu_vm.remote_config_flag(config_flag)
  multihost = tpu_vm.hosts(tpu.accelerator_type) > 1
  collect_to = _COLLECT_TO.value or os.path.join('workdirs', os.path.basename(workdir.rstrip('/')))
  setup = tpu_vm.setup_commands(tpu, os.path.join('/tmp', tpu_vm.ARCHIVE))
  trains = [(p.name, tpu_vm.point_command(tpu, tpu_vm.worker_command(
      remote_config, overrides, workdir, p, multihost))) for p in points]
  collect = tpu_vm.collect_commands(workdir, collect_to, [p.name for p in points])
  delete = [tpu.gcloud('delete', tpu.name, '--quiet')] if _DELETE_TPU.value else []
  if _DRY_RUN.value:
    print(f'# {tpu.accelerator_type}: {tpu_vm.hosts(tpu.accelerator_type)} worker(s)')
    print('\n'.join([*setup, *(command for _, command in trains), *collect, *delete]))
    return
  for command in setup:
    _run_or_fail(command)
  failed = []
  for name, command in trains:
    print(f'{name}: running on {tpu.name} ...', flush=True)
    if subprocess.run(['bash', '-c', command]).returncode:
      failed.append(name)
  for command in [*collect, *delete]:
    _run_or_fail(command)
  if failed:
    sys.exit(f'These points failed: {", ".join(failed)}; their output is above. Re-running the '
             'command resumes them.')


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  config_flag = flags.FLAGS['config'].config_filename
  config, workdir = cli.CONFIG.value, _WORKDIR.value
  points = sweep_lib.points(experiment_sweep(config_flag), config)
  overrides = [arg for arg in sys.argv[1:] if arg.startswith('--config.')]
  if _RUNNER.value == 'tpu_vm':
    run_tpu_vm(config_flag, overrides, workdir, points)
  else:
    run_local(config_flag, overrides, workdir, points, config.train.steps)


if __name__ == '__main__':
  cli.run(main)
