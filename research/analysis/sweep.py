"""Sweeps declared in the experiment file: points, their names, and the state of their runs.

An experiment file may define `get_sweep()` returning a list of override dicts ({'config key':
value}), as big_vision's sweeps do; `grid` and `zipped` build the usual ones:

    def get_sweep():
      return sweep.grid(**{'schedule.peak_lr': [1e-3, 3e-3], 'seed': [0, 1]})

Each point runs as `launch.train` with those `--config.KEY=VALUE` overrides in DIR/<point name>,
the name joining the point's `key=value` pairs (`select` picks points by them). A point is done
when its run has a checkpoint of its last step, interrupted when it has an earlier one (re-running
resumes it), failed when its last attempt exited non-zero (its log's last line says why), and
pending otherwise.
"""

import copy
import dataclasses
import itertools
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections

from research import errors

STATUS_FILE = 'sweep_status.json'  # the last attempt's exit code, written by the runner
LOG_FILE = 'train.log'


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """Every combination of the axes' values (the first axis varies slowest)."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def zipped(**axes: Sequence[Any]) -> list[dict[str, Any]]:
  """The i-th values of every axis together; all axes must have the same length."""
  lengths = {len(values) for values in axes.values()}
  if len(lengths) > 1:
    sizes = {key: len(values) for key, values in axes.items()}
    raise errors.UserError(f'sweep.zipped needs axes of one length, got {sizes}.')
  return [dict(zip(axes, values)) for values in zip(*axes.values())]


def seeded(arms: Sequence[Mapping[str, Any]], seeds: Sequence[int]) -> list[dict[str, Any]]:
  """Every arm once with each seed (`seed` added to its overrides), arm by arm."""
  return [{**arm, 'seed': seed} for arm in arms for seed in seeds]


@dataclasses.dataclass(frozen=True)
class Point:
  name: str
  overrides: dict[str, Any]


_UNSAFE_IN_NAMES = re.compile(r'[^A-Za-z0-9_.,=+-]')  # characters a directory name should not hold


def point_name(overrides: Mapping[str, Any]) -> str:
  """'key=value,key=value' with characters a directory name should not hold replaced by '_'."""
  text = ','.join(f'{key}={value}' for key, value in overrides.items()) or 'base'
  return _UNSAFE_IN_NAMES.sub('_', text)


def select(found: Sequence[Point], filters: Sequence[str]) -> list[Point]:
  """The points of `found` that match every 'KEY=VALUE' of `filters` (--only): the point sweeps KEY
  and its value is VALUE as the point's name writes it (`schedule.peak_lr=0.001`). A filter that
  is not KEY=VALUE, names a key no point sweeps or a value no point has, or filters that match no
  point together, fail naming what there is to choose from."""
  shown = [{key: _UNSAFE_IN_NAMES.sub('_', str(value)) for key, value in p.overrides.items()}
           for p in found]
  selected = list(range(len(found)))
  for text in filters:
    key, equals, value = text.partition('=')
    if not equals:
      raise errors.UserError(f'--only={text} is not KEY=VALUE; write it as a point name does, '
                             'e.g. --only=seed=0.')
    taken = list(dict.fromkeys(values[key] for values in shown if key in values))
    if not taken:
      swept = list(dict.fromkeys(key for values in shown for key in values))
      raise errors.UserError(f'--only={text}: no point sweeps {key!r}; the swept keys are '
                             f'{swept}.')
    if value not in taken:
      raise errors.UserError(f'--only={text} matches no point: {key} takes the values {taken}.')
    selected = [i for i in selected if shown[i].get(key) == value]
  if not selected:
    raise errors.UserError(f'--only={" --only=".join(filters)} together match no point; the '
                           f'points are {[p.name for p in found]}.')
  return [found[i] for i in selected]


def points(sweep: Sequence[Mapping[str, Any]], config: ml_collections.ConfigDict) -> list[Point]:
  """The sweep's points, each checked against `config` (a key it lacks fails, naming it)."""
  found = []
  for index, overrides in enumerate(sweep):
    found.append(Point(point_name(overrides), dict(overrides)))
    point_config(config, found[-1], f'get_sweep()[{index}]')
  names = [p.name for p in found]
  if len(set(names)) != len(names):
    raise errors.UserError(f'get_sweep() has repeated points: {names}; make each point differ.')
  return found


def point_config(config: ml_collections.ConfigDict, point: Point,
                 where: str = '') -> ml_collections.ConfigDict:
  """A copy of `config` with `point`'s overrides; a bad one fails naming `where` (default: the
  point)."""
  updated = copy.deepcopy(config)
  for key, value in point.overrides.items():
    apply(updated, key, value, where or f'point {point.name}')
  return updated


def apply(config: ml_collections.ConfigDict, key: str, value, where: str) -> None:
  """Sets config key `key` ('a.b.c') to `value`; a missing key or a value of the wrong type fails
  naming `where` and the key."""
  node, parts = config, key.split('.')
  for part in parts[:-1]:
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      raise errors.UserError(f'{where} overrides {key!r}, which is not a config key; '
                             'research/defaults.py lists every key.')
    node = node[part]
  if not isinstance(node, ml_collections.ConfigDict) or parts[-1] not in node:
    raise errors.UserError(f'{where} overrides {key!r}, which is not a config key; '
                           'research/defaults.py lists every key.')
  try:
    node[parts[-1]] = value
  except TypeError as error:
    raise errors.UserError(f'{where} sets {key!r} to {value!r}: {error}') from error


def override_flags(overrides: Mapping[str, Any]) -> list[str]:
  """The `--config.KEY=VALUE` flags of a point (tuples and strings in Python literal form)."""
  return [f'--config.{key}={value!r}' if isinstance(value, (tuple, list)) else
          f'--config.{key}={value}' for key, value in overrides.items()]


def train_command(python: Sequence[str], config_flag: str, overrides: Sequence[str], workdir: str,
                  point: Point) -> list[str]:
  """The point's launch.train command run with `python`: the sweep's own --config.K=V `overrides`,
  then the point's, its workdir `workdir`/<point name>."""
  return [*python, '-m', 'launch.train', f'--config={config_flag}',
          f'--workdir={os.path.join(workdir, point.name)}', *overrides,
          *override_flags(point.overrides)]


def status(workdir: str, total_steps: int) -> tuple[str, str]:
  """(done | interrupted | failed | pending, the last line of the run's log when it failed)."""
  checkpoints = os.path.join(workdir, 'checkpoints')
  steps = [int(n) for n in os.listdir(checkpoints) if n.isdigit()] if os.path.isdir(
      checkpoints) else []
  if steps and max(steps) >= total_steps:
    return 'done', ''
  status_path = os.path.join(workdir, STATUS_FILE)
  if os.path.exists(status_path):
    with open(status_path, encoding='utf-8') as f:
      if json.load(f).get('exit_code', 0) != 0:
        return 'failed', last_line(os.path.join(workdir, LOG_FILE))
  return ('interrupted', '') if steps else ('pending', '')


def last_line(path: str) -> str:
  """The last non-empty line of a text file, or '' if there is none."""
  if not os.path.exists(path):
    return ''
  with open(path, encoding='utf-8', errors='replace') as f:
    lines = [line.strip() for line in f if line.strip()]
  return lines[-1] if lines else ''
