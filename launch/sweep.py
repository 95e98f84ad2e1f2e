"""Runs every point of an experiment file's sweep, one workdir per point, skipping finished ones.

  python -m launch.sweep --config=experiments/NAME.py[:ARG] --workdir=DIR [--only=KEY=VALUE ...] \
      [--dry_run | --list] [--runner=local [--parallel=N] | --runner=tpu_vm --tpu=...]

The experiment file's `get_sweep()` lists the points (research/analysis/sweep.py; `get_sweep(ARG)` for
--config=experiments/NAME.py:ARG when it takes an argument). Each runs as

  python -m launch.train --config=experiments/NAME.py[:ARG] --workdir=DIR/<point> \
      [the sweep command's own --config.K=V overrides] --config.K=V ...  # the point's

The local runner runs the points one after the other, or `--parallel=N` at a time with the
machine's devices split N ways (launch/device_shares.py), each point's output in
DIR/<point>/train.log. Points already done are skipped and interrupted ones resume, so re-running
the command after a kill carries on where it stopped; a point that is killed stops the sweep
(the others running beside it finish first). Every override is checked against the config before
any point starts. The command ends with a status table: each point done, interrupted, failed
(with its log's last line) or pending; then a table of the final losses of the points that logged
metrics (last step, training loss, eval loss: the mean of the final eval/<task>/loss over the
training tasks), lowest eval loss first (research/analysis/report.py). `--dry_run` prints the commands
instead of running them; `--list` prints the status table alone and runs nothing (a local workdir's
state: with --runner=tpu_vm, `python -m launch.tpu_vm status` follows the job instead).
`--only=KEY=VALUE` (repeatable; all must match) keeps the points whose override KEY is VALUE as
their name writes it, e.g. `--only=seed=0 --only=schedule.peak_lr=0.003`, with either runner.

The tpu_vm runner checks every point against the TPU here, then gets the TPU, ships the code and
starts the points as a detached job on every worker (launch/tpu_vm.py, launch/tpu_job.py); it
returns at once, or with `--wait` follows the job through preemptions and collects the runs.
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
from research.analysis import report
from research.analysis import sweep as sweep_lib

tpu_vm.define_flags()  # --workdir and the tpu_vm runner's flags
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
_LIST = flags.DEFINE_bool('list', False, 'local: print the points and their state (done, '
                          'interrupted, failed, pending), run nothing.')
_ONLY = flags.DEFINE_multi_string('only', [], 'KEY=VALUE: only the points whose override KEY is '
                                  'VALUE as their name writes it (seed=0); repeat: all must match.')
_RUNNER = flags.DEFINE_enum('runner', 'local', ['local', 'tpu_vm'], 'Where the points run.')
_PARALLEL = flags.DEFINE_integer('parallel', 1, 'local: points run at once, each on its share of '
                                 'the devices (TPU chips, GPUs or CPU cores).')
_WAIT = flags.DEFINE_bool('wait', False, 'tpu_vm: wait until the job ends, recreating a preempted '
                          'TPU and resuming, then collect and report.')
_POLL_SECONDS = flags.DEFINE_float('poll_seconds', 60, 'tpu_vm: how often --wait looks.')
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


def metrics_table(workdir: str, points) -> str:
  """`report.final_loss_table` of the points whose runs have written config.json and metrics.jsonl,
  lowest final eval loss first; '' when none has."""
  directories = [os.path.join(workdir, p.name) for p in points]
  return report.final_loss_table([
      report.load_run(directory) for directory in directories
      if all(os.path.isfile(os.path.join(directory, name))
             for name in ('config.json', 'metrics.jsonl'))])


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
  table = metrics_table(workdir, points)
  if table:
    print('\nFinal losses, lowest eval loss first (eval loss: the mean of the final '
          f'eval/<task>/loss over the training tasks):\n{table}')
  if killed:
    sys.exit(f'Stopped: {", ".join(killed)}; re-run the command to resume.')


def run_tpu_vm(config, config_flag: str, overrides: list[str], workdir: str, points):
  """Runs the points as a detached job on a TPU VM, pod slice or slices (launch/tpu_vm.py), after
  checking them here; prints the commands with --dry_run. With --wait, waits for the job (starting
  it again after a preemption) and collects the runs."""
  tpu_vm.check_workdir(workdir)
  tpu = tpu_vm.flag_tpu()
  remote_config = tpu_vm.remote_config_flag(config_flag)
  tpu_vm.check_points(config, points, tpu, workdir)
  for store_dir in dict.fromkeys(sweep_lib.point_config(config, p).data.store_dir for p in points):
    tpu_vm.check_store(store_dir)
  warning = tpu_vm.bucket_warning(workdir, tpu.zone)
  if warning:
    print(warning, file=sys.stderr, flush=True)
  multihost = tpu.hosts > 1
  spec = tpu_vm.job_spec(workdir, [(p.name, tpu_vm.worker_command(
      remote_config, overrides, workdir, p, multihost)) for p in points], tpu.slices)
  ship = tpu_vm.ship_commands(tpu, workdir, os.path.join('/tmp', tpu_vm.ARCHIVE))
  start = tpu_vm.job_command(tpu, 'start', f'--spec={spec}')
  collect = tpu_vm.collect_commands(workdir, tpu_vm.collect_to(workdir), [p.name for p in points])
  delete = [tpu_vm.delete_command(tpu)] if flags.FLAGS.delete_tpu else []
  if _DRY_RUN.value:
    print(f'# {tpu.slices} x {tpu.accelerator_type}: {tpu.hosts} worker(s), '
          f'{tpu_vm.devices(tpu.accelerator_type) * tpu.slices} chips')
    print(f'# capacity: the state decides; absent: create; {"/".join(tpu_vm.RECREATE)}: delete, '
          'then create')
    print('\n'.join([tpu_vm.state_command(tpu), *tpu_vm.capacity_commands(tpu, 'PREEMPTED'),
                     *ship, start]))
    print('# follow, stop, collect:\n' + '\n'.join(tpu_vm.follow_lines(tpu, workdir)))
    if _WAIT.value:
      print('# --wait: then, once every worker\'s job has ended:\n'
            + '\n'.join([*collect, *delete]))
    return
  tpu_vm.ensure_capacity(tpu, _POLL_SECONDS.value)
  for command in [*ship, start]:
    tpu_vm.run_or_fail(command)
  if not _WAIT.value:
    print('The job runs on its own. Follow it, stop it, collect its runs:\n'
          + '\n'.join(tpu_vm.follow_lines(tpu, workdir)))
    return
  while True:
    time.sleep(_POLL_SECONDS.value)
    if tpu_vm.tpu_state(tpu) not in tpu_vm.READY:  # preempted: a new TPU resumes the points
      tpu_vm.ensure_capacity(tpu, _POLL_SECONDS.value)
      for command in [*ship, start]:
        tpu_vm.run_or_fail(command)
      continue
    status = tpu_vm.run(tpu_vm.job_command(tpu, 'status', '--lines=0'), capture=True).stdout
    progress = tpu_vm.job_progress(tpu, status)
    if progress == 'ended':
      break
    if progress == 'died':  # the VM restarted under the job (maintenance): start it again
      tpu_vm.run_or_fail(start)
  for command in [*collect, *delete]:
    tpu_vm.run_or_fail(command)


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  config_flag = cli.experiment_file(flags.FLAGS['config'].config_filename)  # from any directory
  config, workdir = cli.CONFIG.value, flags.FLAGS.workdir
  points = sweep_lib.select(sweep_lib.points(experiment_sweep(config_flag), config), _ONLY.value)
  overrides = [arg for arg in sys.argv[1:] if arg.startswith('--config.')]
  if _LIST.value:
    if _RUNNER.value == 'tpu_vm':
      raise errors.UserError('--list reads the points\' state from a local workdir; with '
                             '--runner=tpu_vm, python -m launch.tpu_vm status follows the job and '
                             '--dry_run lists its commands.')
    print(status_table(workdir, points, config.train.steps))
  elif _RUNNER.value == 'tpu_vm':
    run_tpu_vm(config, config_flag, overrides, workdir, points)
  else:
    run_local(config_flag, overrides, workdir, points, config.train.steps)


if __name__ == '__main__':
  cli.run(main)
