"""Reading a finished run: its config.json and its checkpoints, in a local directory or a bucket.

A run is named by its workdir (WORKDIR: its latest checkpoint), by one of its checkpoints
(WORKDIR/checkpoints/<step>), or by a launch.convert output (laid out as a workdir). Every
reader of a finished run goes through here: the distillation teacher (objective.distill.teacher),
init.path (research/train.py), the scoring, generation and membership commands
(research/analysis/scores.py) and the report (research/analysis/report.py). So a gs:// path works wherever a local
one does, and a bucket that cannot be reached is one line naming the path and how to authenticate
(errors.reaching).

A bucket's files are read with TensorFlow's gfile, as research/appendable.py reads them (its ram://
file system stands in for a bucket in tests), imported only for them: a report of local runs need
not wait seconds for TensorFlow. The arrays of a checkpoint are read by orbax, which reads gs:// as
it writes it during training.
"""

import copy
import json
import os

from research import defaults as defaults_lib, errors


def _remote(path: str) -> bool:
  return '://' in path


def _gfile():
  import tensorflow as tf  # only for bucket paths: importing it takes seconds
  return tf.io.gfile


def _is_dir(path: str) -> bool:
  if not _remote(path):
    return os.path.isdir(path)
  gfile = _gfile()  # `exists` first: `isdir` answers False where a bucket cannot be reached
  return gfile.exists(path) and gfile.isdir(path)


def _names(directory: str) -> list[str]:
  """The entries of `directory`; [] if it is not a directory."""
  if not _is_dir(directory):
    return []
  if not _remote(directory):
    return os.listdir(directory)
  return [name.rstrip('/') for name in _gfile().listdir(directory)]  # sub-directories end in '/'


def _read_text(path: str) -> str | None:
  """The text of file `path`; None if there is none."""
  if not _remote(path):
    if not os.path.isfile(path):
      return None
    with open(path, encoding='utf-8') as f:
      return f.read()
  gfile = _gfile()
  if not gfile.exists(path) or gfile.isdir(path):
    return None
  with gfile.GFile(path, 'r') as f:
    return f.read()


def _location(path: str) -> str:
  """`path` made absolute if it is local; a bucket's (gs://...) as it is, less a trailing '/'."""
  return path.rstrip('/') if _remote(path) else os.path.abspath(path)


def _split(path: str) -> tuple[str, int | None]:
  """(WORKDIR, step) for run path WORKDIR/checkpoints/<step>; (the path, None) for any other."""
  path = _location(path)
  head, name = os.path.split(path)
  if name.isdigit() and os.path.basename(head) == 'checkpoints':
    return os.path.dirname(head), int(name)
  return path, None


def workdir(path: str) -> str:
  """The workdir of run path `path` (a workdir, or one of its checkpoints
  WORKDIR/checkpoints/<step>): a local path made absolute, a bucket's as it is."""
  return _split(path)[0]


def is_directory(path: str, where: str) -> bool:
  """Whether `path` is a directory (`where` names it as the user gave it, for errors.reaching)."""
  with errors.reaching(path, where):
    return _is_dir(_location(path))


def read_config(path: str, where: str) -> dict:
  """The config.json of the run at `path` (nested dicts), with the keys that moved since it was
  written at their new place (`moved_keys`). `where` names the path as
  the user gave it ("objective.distill.teacher='gs://...'") in the errors: no config.json, not a
  JSON object, a bucket that cannot be reached."""
  config_path = os.path.join(workdir(path), 'config.json')
  with errors.reaching(path, where):
    try:
      text = _read_text(config_path)
    except OSError as e:
      raise errors.UserError(f'Cannot read {config_path} ({e.strerror}) of {where}; make it '
                             'readable.') from e
  if text is None:
    raise errors.UserError(f'{where} has no config.json ({config_path}); give the workdir of a '
                           'launch.train run (or a launch.convert output).')
  try:
    config = json.loads(text)
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{config_path} is not valid JSON ({e}); restore the config '
                           'launch.train wrote.') from e
  if not isinstance(config, dict):
    raise errors.UserError(f'{config_path} is not a JSON object (the resolved config launch.train '
                           'writes); restore it.')
  return moved_keys(config)


def moved_keys(config: dict) -> dict:
  """A copy of config.json `config` (nested dicts) with the keys that moved since it was written
  (defaults.MOVED_KEYS, e.g. data.order_by -> data.order.by) at their new place; where a config has
  a key at both places, the new one's value is kept."""
  config = copy.deepcopy(config)
  for old, new in defaults_lib.MOVED_KEYS.items():
    *path, key = old.split('.')
    parent = config
    for part in path:
      parent = parent.get(part) if isinstance(parent, dict) else None
    if not isinstance(parent, dict) or key not in parent:
      continue
    value = parent.pop(key)
    *path, key = new.split('.')
    target = config
    for part in path:
      target = target.setdefault(part, {}) if isinstance(target, dict) else None
    if isinstance(target, dict):
      target.setdefault(key, value)
  return config


def with_defaults(loaded: dict, defaults: dict, prefix: str = '') -> dict:
  """A run's config.json `loaded` (`read_config`) over `defaults` (research/defaults.py): keys this
  code no longer has are dropped, keys it added since keep their defaults, and the free sections
  (defaults.FREE_KEYS, e.g. data.tasks) are taken whole."""
  merged = dict(defaults)
  for key, value in loaded.items():
    name = f'{prefix}{key}'
    if key not in defaults:
      continue
    if name not in defaults_lib.FREE_KEYS and isinstance(defaults[key], dict) and isinstance(
        value, dict):
      merged[key] = with_defaults(value, defaults[key], name + '.')
    else:
      merged[key] = value
  return merged


def find_checkpoint(path: str, where: str) -> tuple[str, int]:
  """(the checkpoints directory, the step) of run path `path`: a workdir (its latest checkpoint), a
  checkpoint WORKDIR/checkpoints/<step>, or a launch.convert output. `where` names the path as the
  user gave it ('init.path=...') in the errors: no such path, no checkpoint, an unreachable bucket.
  """
  run, step = _split(path)
  directory = os.path.join(run, 'checkpoints')
  with errors.reaching(path, where):
    if not _is_dir(run):
      raise errors.UserError(f'{where} does not exist; give the workdir of a launch.train run, one '
                             'of its checkpoints WORKDIR/checkpoints/<step> or a launch.convert '
                             'output.')
    if step is None:
      steps = sorted(int(name) for name in _names(directory) if name.isdigit())
    else:
      steps = [step] if _is_dir(os.path.join(directory, str(step))) else []
  if not steps:
    raise errors.UserError(
        f'{where} holds no checkpoint: give a workdir with checkpoints/<step>/ (from launch.train '
        'or launch.convert) or one checkpoint directory WORKDIR/checkpoints/<step>.')
  return directory, steps[-1]
