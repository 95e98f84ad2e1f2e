"""Runs every point of an experiment file's sweep, one workdir per point, skipping finished ones.

  python -m launch.sweep --config=experiments/NAME.py[:ARG] --workdir=DIR [--dry_run]

The experiment file's `get_sweep()` lists the points (research/sweep.py). Each runs as

  python -m launch.train --config=experiments/NAME.py[:ARG] --workdir=DIR/<point> \
      [the sweep command's own --config.K=V overrides] --config.K=V ...  # the point's

one after the other (the local runner), its output in DIR/<point>/train.log. Points already done
are skipped and interrupted ones resume, so re-running the command after a kill carries on where
it stopped. Every override is checked against the config before any point starts. The command
ends with a status table: each point done, interrupted, failed (with its log's last line) or
pending. `--dry_run` prints the commands instead of running them.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import importlib.util
import json
import os
import shlex
import subprocess
import sys

from absl import app, flags

from research import errors
from research import sweep as sweep_lib

_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep directory: one sub-directory per point.')
_DRY_RUN = flags.DEFINE_bool('dry_run', False, 'Print the commands, run nothing.')
flags.mark_flags_as_required(['config', 'workdir'])


def experiment_sweep(config_flag: str) -> list[dict]:
  """The `get_sweep()` of the experiment file named by --config (its path before any ':')."""
  path = config_flag.split(':', 1)[0]
  spec = importlib.util.spec_from_file_location('experiment_for_sweep', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise errors.UserError(f'--config={config_flag}: {path} has no get_sweep(); add one that '
                           'returns a list of {"config key": value} overrides.')
  return module.get_sweep()


def train_command(config_flag: str, overrides: list[str], workdir: str,
                  point: sweep_lib.Point) -> list[str]:
  """The point's launch.train command: the sweep's own --config.K=V `overrides`, then the point's."""
  return [sys.executable, '-m', 'launch.train', f'--config={config_flag}',
          f'--workdir={os.path.join(workdir, point.name)}', *overrides,
          *sweep_lib.override_flags(point.overrides)]


def run_point(command: list[str], point_dir: str) -> int:
  """Runs one point's training command, its output appended to the point's log; the exit code."""
  os.makedirs(point_dir, exist_ok=True)
  with open(os.path.join(point_dir, sweep_lib.LOG_FILE), 'a', encoding='utf-8') as log:
    code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
  with open(os.path.join(point_dir, sweep_lib.STATUS_FILE), 'w', encoding='utf-8') as f:
    json.dump({'exit_code': code}, f)
  return code


def status_table(workdir: str, points, total_steps: int) -> str:
  """One line per point: its name, its state and, when it failed, its log's last line."""
  rows = [(p.name, *sweep_lib.status(os.path.join(workdir, p.name),
                                     p.overrides.get('train.steps', total_steps)))
          for p in points]
  width = max(len(name) for name, _, _ in rows)
  return '\n'.join(f'{name.ljust(width)}  {state}{"  " + why if why else ""}'
                   for name, state, why in rows)


@cli.exits_on_user_error
def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config_flag = flags.FLAGS['config'].config_filename
  config, workdir = cli.CONFIG.value, _WORKDIR.value
  points = sweep_lib.points(experiment_sweep(config_flag), config)
  overrides = [arg for arg in sys.argv[1:] if arg.startswith('--config.')]
  total_steps = config.train.steps  # a point that overrides train.steps counts its own
  for point in points:
    steps = point.overrides.get('train.steps', total_steps)
    point_dir = os.path.join(workdir, point.name)
    command = train_command(config_flag, overrides, workdir, point)
    if _DRY_RUN.value:
      print(shlex.join(command))
      continue
    state, _ = sweep_lib.status(point_dir, steps)
    if state == 'done':
      print(f'{point.name}: done, skipped.')
      continue
    print(f'{point.name}: {"resuming" if state == "interrupted" else "running"} ...', flush=True)
    code = run_point(command, point_dir)
    if code < 0 or code in (130, 137, 143):  # killed: stop the sweep, a re-run resumes it
      sys.exit(f'The point {point.name} was stopped (exit {code}); re-run the command to resume.')
  if not _DRY_RUN.value:
    print(status_table(workdir, points, total_steps))


if __name__ == '__main__':
  cli.run(main)
