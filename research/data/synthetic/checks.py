"""Parameter checks shared by the synthetic generators; errors name `data.tasks.<task>.<param>`."""

import numpy as np

from research import errors

SPLITS = ('train', 'validation')


def fail(task_name: str, key: str, value, fix: str):
  raise errors.UserError(f'data.tasks.{task_name}.{key}={value!r} {fix}')


def check_number(task_name: str, key: str, value, low, high=None, kind=int):
  """`value` as `kind` (int or float) when it lies in [low, high] (high None: no upper bound)."""
  numeric = (int, np.integer) if kind is int else (int, float, np.integer, np.floating)
  if (not isinstance(value, numeric) or isinstance(value, bool) or value < low
      or (high is not None and value > high)):
    article = 'an integer' if kind is int else 'a number'
    bounds = f'>= {low}' if high is None else f'in [{low}, {high}]'
    fail(task_name, key, value, f'is invalid; set it to {article} {bounds}.')
  return kind(value)


def check_range(task_name: str, params: dict, low_key: str, high_key: str, low: int,
                high: int) -> None:
  """Checks in place that params[low_key] <= params[high_key], both integers in [low, high]."""
  for key in (low_key, high_key):
    params[key] = check_number(task_name, key, params[key], low, high)
  if params[low_key] > params[high_key]:
    fail(task_name, low_key, params[low_key],
         f'is above {high_key}={params[high_key]}; set {low_key} <= {high_key}.')


def check_bool(task_name: str, key: str, value) -> bool:
  if not isinstance(value, (bool, np.bool_)):
    fail(task_name, key, value, 'is invalid; set it to True or False.')
  return bool(value)


def with_defaults(split: str, seed: int, params: dict, defaults: dict, generator: str,
                  task_name: str) -> dict:
  """`defaults` updated by `params`, after checking the split, the seed and the parameter names."""
  if split not in SPLITS:
    raise errors.UserError(f'Unknown split {split!r} of task {task_name!r}; use one of '
                           f'{list(SPLITS)}.')
  if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
    raise errors.UserError(f'seed={seed!r} is invalid for task {task_name!r}; set it to an '
                           'integer >= 0.')
  for key in params:
    if key not in defaults:
      fail(task_name, key, params[key], f'is not a parameter of the {generator} generator; its '
           f'parameters are {sorted(defaults)}.')
  return {**defaults, **params}
