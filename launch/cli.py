"""What every launch command shares: the `--config` flag, flag parsing, and user-error exits.

A command imports this module before `research` (which imports TensorFlow), defines its own flags,
decorates its main with `exits_on_user_error` and ends with `cli.run(main)`:

  python -m launch.NAME --config=experiments/NAME.py[:ARG] [--config.a.b=V ...] [--flags ...]

An unknown `--config.KEY` override and every `research.errors.UserError` end the command with one
line, `error: <message>`, and exit status 2 (a usage error, as argparse and absl give), without a
traceback.
"""

import functools
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable

from launch import startup

startup.quiet(sys.argv)  # before anything imports TensorFlow

import tensorflow as tf
from absl import app, flags, logging
from etils import epath
from ml_collections import config_flags

from research import defaults, errors, finished
from research.analysis import report
from research.data import score_files
from research.data import store as store_lib
from research.data import tasks

PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # experiments/ is in it


class ConfigFileParser(config_flags.config_flags.ConfigFileFlagParser):
  """--config: an experiment file (experiments/NAME.py[:ARG]) by a path from the working directory
  or, failing that, from the project (so experiments/NAME.py works from any directory), or a
  finished run's WORKDIR/config.json, which reruns that run (research/runs.py reads it)."""

  def parse(self, path):
    file, colon, _ = path.partition(':')
    if file.endswith('.json'):
      if os.path.basename(file) != 'config.json' or colon:
        raise ValueError('a JSON config is the config.json of a launch.train run '
                         '(WORKDIR/config.json), given alone.')
      config = finished.load_config(os.path.dirname(file) or '.', 'the run')  # a local or gs:// run
      config.lock()
      return config
    return super().parse(experiment_file(path))


def experiment_file(flag: str) -> str:
  """--config=PATH[:ARG] of an experiment file with PATH found: as given (from the working
  directory) or else in the project; fails saying what --config accepts."""
  file, colon, arg = flag.partition(':')
  if os.path.isfile(file):
    return flag
  if os.path.isfile(os.path.join(PROJECT, file)):
    return os.path.join(PROJECT, file) + colon + arg
  raise errors.UserError(f'there is no file {file} in the working directory {os.getcwd()} nor in '
                         f'the project {PROJECT}; give an experiment file '
                         "(experiments/NAME.py[:ARG]) or a finished run's WORKDIR/config.json.")


def define_config(flag_values: flags.FlagValues = flags.FLAGS, sys_argv=None) -> flags.FlagHolder:
  """Defines --config (`ConfigFileParser`) in `flag_values`; --config.KEY=VALUE overrides a key.
  allow_override: a command that defines its own --config can load in the same process (tests)."""
  holder = config_flags.DEFINE_config_file(
      'config', None, 'Experiment file (experiments/NAME.py[:ARG]) or a run\'s '
      'WORKDIR/config.json; --config.KEY=VALUE overrides one of its keys.', flag_values=flag_values,
      lock_config=True, allow_override=True, sys_argv=sys_argv)
  flag_values['config'].parser = ConfigFileParser('config')
  return holder


CONFIG = define_config()


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing; a bad or missing flag or an unknown `--config.KEY` is one line naming it."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:  # a missing required flag, a value of the wrong type, ...
    problems = '; '.join(line.rstrip('.') for line in str(error).splitlines())
    exit_with_error(f'{problems}. --helpfull lists the flags.')
  except (AttributeError, KeyError) as error:  # ConfigDict's "no such key", raised by an override
    cause = error.args[0] if error.args and isinstance(error.args[0], KeyError) else error
    # "'key'" (an override) or 'Key "key" does not exist ...' (a file setting it), then, on the
    # last line, "Did you mean ...?" where ConfigDict has a suggestion
    text = str(cause.args[0])
    missing = re.match(r'\W*(?:Key ")?(\w+)', text).group(1)
    hint = text.splitlines()[-1] if text.splitlines()[-1].startswith('Did you mean') else ''
    overrides = [a[2:].split('=')[0] for a in argv if a.startswith('--config.')]
    named = [o[len('config.'):] for o in overrides if missing in o.split('.')[1:]]
    if named:  # a --config.KEY override
      key, where = named[0], f'--config.{named[0]}'
    else:  # set by the experiment file itself: the error names the last part of the key only
      key = next((old for old in defaults.MOVED_KEYS if old.rsplit('.', 1)[1] == missing), missing)
      where = 'the experiment file ' + next(
          (a.split('=', 1)[1] for a in argv if a.startswith('--config=')), '(--config)')
    if key in defaults.MOVED_KEYS:
      exit_with_error(defaults.moved_message(key, where))
    exit_with_error(f'unknown config key {key!r} in {where}. {hint + " " if hint else ""}'
                    'research/defaults.py lists every key.')


class ErrorExit(SystemExit):
  """Exit status 2 after `error: <message>` was printed on stderr; str() is that line, so a test
  can match it as it matches `sys.exit('error: ...')`."""

  def __init__(self, message: str):
    super().__init__(2)
    self.line = f'error: {message}'

  def __str__(self) -> str:
    return self.line


def exit_with_error(message: str) -> None:
  """Ends the command with `error: <message>` on stderr and exit status 2."""
  error = ErrorExit(message)
  print(error.line, file=sys.stderr, flush=True)
  raise error


def exits_on_user_error(main: Callable[[list[str]], None]) -> Callable[[list[str]], None]:
  """`main`, ending with `error: <message>` on stderr and exit status 2 on a UserError.

  The message names the key, flag or path and the fix, so no traceback is shown; any other
  exception is a bug and keeps its traceback.
  """

  @functools.wraps(main)
  def main_with_exit(argv: list[str]) -> None:
    try:
      main(argv)
    except errors.UserError as error:
      exit_with_error(str(error))

  return main_with_exit


def rejoin_paths(pieces: list[str]) -> list[str]:
  """A comma-separated list of paths as split, with the pieces of a local path that holds commas
  (a sweep's run directories are named 'a=1,seed=0') joined back: from each piece on, the most
  pieces that name an existing path together, else the piece alone."""
  paths, start = [], 0
  while start < len(pieces):
    end = next((end for end in range(len(pieces), start + 1, -1)
                if os.path.exists(','.join(pieces[start:end]))), start + 1)
    paths.append(','.join(pieces[start:end]))
    start = end
  return paths


class PathListParser(flags.ListParser):
  """absl's comma-separated list parser, paths with commas rejoined (`rejoin_paths`)."""

  def parse(self, argument):
    return rejoin_paths(super().parse(argument))


def define_paths(name: str, default, help_text: str, **kwargs) -> flags.FlagHolder:
  """A list flag of paths (workdirs, checkpoints), separated by commas, that may hold commas."""
  return flags.DEFINE(PathListParser(), name, default, help_text,
                      serializer=flags.CsvListSerializer(','), **kwargs)


def one_checkpoint(paths: list[str] | None, purpose: str) -> str:
  """The one path a --checkpoint list flag gives (a workdir or WORKDIR/checkpoints/<step>); fails
  naming the flag and `purpose` ('generate with') otherwise."""
  if not paths or len(paths) != 1:
    raise errors.UserError(f'--checkpoint={",".join(paths or [])} must name one workdir or '
                           f'checkpoint directory to {purpose}.')
  return paths[0]


def no_arguments(argv: list[str]) -> None:
  """Every command takes flags only: any positional argument after the program is a usage error."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')


def quiet_absl_logging() -> None:
  """absl logging at WARNING unless --verbosity was given (orbax logs every save and restore at
  INFO; --verbosity=0 shows them)."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def sweep_runs(path: str) -> list[str]:
  """The run directories of sweep directory `path` (sub-directories holding a config.json),
  sorted; fails naming `path` when there are none."""

  if not os.path.isdir(path):
    raise errors.UserError(f'Sweep directory {path} does not exist or is not a directory; pass the '
                           '--workdir of launch.sweep.')
  runs = report.sweep_runs(path)
  if not runs:
    raise errors.UserError(f'{path} holds no runs (no sub-directory with a config.json); pass the '
                           '--workdir of launch.sweep.')
  return runs


def task_store(config, task: str, split: str, store_dir: str) -> store_lib.DocumentStore:
  """The document store of --task's --split in the vocabulary of run `config` (from `store_dir`,
  built first if small), after registering the run's data.tasks and --config's; fails naming the
  flag of a task or split that is none."""
  tasks.register_config_tasks(config.data)
  if CONFIG.value is not None:
    tasks.register_config_tasks(CONFIG.value.data)
  tasks.check_task(task, '--task')
  if split not in tasks.SPLITS:
    raise errors.UserError(f'--split={split!r} is not a split; use one of {list(tasks.SPLITS)}.')
  return store_lib.load_store(task, split, config.data.vocabulary, store_dir)


def write_atomically(path: str, text: str, flag: str = '--out') -> None:
  """Writes `text` to the file `path` (local or gs://, given by `flag`) through a temporary file
  beside it, so a reader never sees half of it; fails naming the flag."""
  out = epath.Path(path)
  if out.is_dir():
    raise errors.UserError(f'{flag}={path} is a directory; give the path of the file to write.')
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
    with score_files.atomic_file(path) as f:
      f.write(text)
  except (OSError, tf.errors.OpError) as e:
    reason = getattr(e, 'strerror', None) or getattr(e, 'message', None) or str(e)
    raise errors.UserError(f'Cannot write {flag}={path} ({reason}); give a path in a writable '
                           'directory.') from e


def write_directory(out: str, write: Callable[[str], list[str]], contents: str) -> None:
  """Fills the directory `out` (given by --out) all or nothing: `write(staging)` writes the files
  into a temporary directory inside `out` and returns their names in the order they are renamed
  into `out` (the file a reader opens first, last); a failure leaves no half-written file. Errors
  name --out and `contents`, what goes there."""
  if os.path.exists(out) and not os.path.isdir(out):
    raise errors.UserError(f'--out={out} is a file; give the directory {contents} go to.')
  try:
    os.makedirs(out, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='.tmp-', dir=out)
  except OSError as e:
    raise errors.UserError(f'Cannot write --out={out} ({e.strerror}); give a directory path in a '
                           'writable place.') from e
  try:
    for name in write(staging):
      os.replace(os.path.join(staging, name), os.path.join(out, name))
  except OSError as e:
    raise errors.UserError(f'Cannot write {e.filename or out} ({e.strerror}); give --out a '
                           f'directory with room, where {contents} can go.') from e
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def run(main: Callable[[list[str]], None]) -> None:
  """Parses the flags with `parse_flags` and runs `main` (absl's app.run).

  After a user error the process ends at once (os._exit), the message printed and every file the
  command wrote closed on the way: the interpreter's teardown would let orbax's and TensorFlow's
  background threads print tracebacks ("Event loop is closed") under the one-line message.
  """
  try:
    app.run(main, flags_parser=parse_flags)
  except ErrorExit:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(2)
