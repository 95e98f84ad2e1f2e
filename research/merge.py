"""Checkpoint arithmetic: weighted sums of the parameters of checkpoints of one model.

sum_i w_i * theta_i, leaf by leaf, serves several methods:
- weight averaging, a uniform "soup" of fine-tuned models (Wortsman et al. 2022, "Model soups:
  averaging weights of multiple fine-tuned models improves accuracy without increasing inference
  time", arXiv 2203.05482);
- task vectors, theta_target + s * (theta_ft - theta_base), added, negated or scaled (Ilharco et
  al. 2023, "Editing Models with Task Arithmetic", arXiv 2212.04089), such as a base-vs-instruct
  delta carried onto a continued-pretrained base (Mitchell et al. 2023, "An Emulator for
  Fine-Tuning Large Language Models using Small Language Models", arXiv 2310.12962, whose
  emulated fine-tuning composes the same delta at the level of log-probabilities);
- data ablations approximated by averaging models trained on partitions of the data (Na et al.
  2024, "Scalable Data Ablation Approximations for Language Models through Modular Training and
  Merging", arXiv 2410.15661).

`weighted_sum` is the arithmetic, in float32, cast back to the first tree's dtypes; it takes the
trees one at a time, so `merge` holds about two copies of the parameters (the float32 sum and the
checkpoint being read). `merge` reads the parameters alone of each checkpoint (a workdir: its
latest checkpoint; WORKDIR/checkpoints/<step>; or a launch.convert output, local or gs://,
research/runs.py), after checking that all have the same parameter tree and shapes, and writes OUT
as launch.convert writes its output (research/checkpoint.save_params), which every reader of a
checkpoint accepts:

    OUT/config.json       the first checkpoint's config.json, its data.vocabulary named absolutely,
                          with merge = {checkpoints, steps, weights}: what was summed
    OUT/checkpoints/0/    orbax, {'params': the weighted sum}

OUT appears only when complete (written to a hidden sibling, then renamed).
"""

import json
import os
import shutil
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from research import checkpoint, defaults, errors, finished, runs
from research.data import vocabularies


def weighted_sum(trees: Iterable, weights: Sequence[float]):
  """sum_i weights[i] * trees[i], leaf by leaf, computed in float32 and cast back to the dtypes of
  the first tree's leaves. `trees` (parameter trees of one structure and shapes) may be an
  iterator: each is read once, and only the float32 sum is kept between them."""
  total, dtypes = None, None
  for tree, weight in zip(trees, weights, strict=True):
    scale = np.float32(weight)
    if total is None:
      dtypes = jax.tree.map(lambda x: np.asarray(x).dtype, tree)
      total = jax.tree.map(lambda x: np.multiply(np.asarray(x, np.float32), scale,
                                                 out=np.empty(np.shape(x), np.float32)), tree)
    else:
      total = jax.tree.map(lambda t, x: np.add(t, scale * np.asarray(x, np.float32), out=t),
                           total, tree)
  return jax.tree.map(lambda t, dtype: t.astype(dtype), total, dtypes)


def _is_leaf(x) -> bool:
  return isinstance(x, tuple)  # checkpoint.saved_shapes' (shape, dtype) leaves


def _shapes(saved: dict) -> dict[str, tuple]:
  """{'a/b/c': shape} of a saved tree of (shape, dtype) leaves."""
  leaves = jax.tree_util.tree_leaves_with_path(saved, is_leaf=_is_leaf)
  return {'/'.join(str(k.key) for k in path): tuple(leaf[0]) for path, leaf in leaves}


def check_same_shapes(first: dict, other: dict, first_flag: str, other_flag: str) -> None:
  """Fails naming the first parameter (in sorted order) whose shape differs between the saved
  parameter trees `first` and `other`, or that only one of them has."""
  a, b = _shapes(first), _shapes(other)
  describe = lambda shapes, key: f'shape {shapes[key]}' if key in shapes else 'no such parameter'
  for key in sorted(set(a) | set(b)):
    if a.get(key) != b.get(key):
      raise errors.UserError(
          f'{other_flag}: parameter {key} has {describe(b, key)} there but {describe(a, key)} in '
          f'{first_flag}; merge checkpoints of one model config (model.* as in the first one\'s '
          'config.json).')


def _read_params(directory, step: int, saved: dict):
  """The parameters of checkpoint `step` in `directory` (saved tree `saved`, (shape, dtype)
  leaves), in their stored dtypes, read onto one device and returned as numpy on the host."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf[0], jnp.dtype(leaf[1]),
                                                          sharding=device), saved, is_leaf=_is_leaf)
  params = checkpoint.restore_parts(directory, step, {'params': target})['params']
  return jax.tree.map(np.asarray, params)


def check_out(out: str) -> None:
  """Fails unless `out` (--out) is a new or empty local directory."""
  if '://' in out:
    raise errors.UserError(f'--out={out}: the merged checkpoint is written locally; give a local '
                           'directory (copy it to the bucket afterwards).')
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise errors.UserError(f'--out={out} exists and is not empty; give a new directory (nothing '
                           'is overwritten).')


def _write(out: str, config: dict, params) -> None:
  """OUT/config.json and OUT/checkpoints/0, written into a hidden sibling that is renamed to OUT
  when complete; nothing is left behind on a failure."""
  out = os.path.abspath(out)
  staging = os.path.join(os.path.dirname(out), f'.{os.path.basename(out)}.partial-{os.getpid()}')
  shutil.rmtree(staging, ignore_errors=True)
  try:
    os.makedirs(staging)
  except OSError as e:
    raise errors.UserError(f'Cannot write --out={out} ({e.strerror}); give a directory in a '
                           'writable place.') from e
  try:
    with open(os.path.join(staging, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(config, f, indent=2, sort_keys=True)
    checkpoint.save_params(staging, params)
    if os.path.isdir(out):
      os.rmdir(out)  # empty (check_out)
    os.rename(staging, out)
  except OSError as e:
    raise errors.UserError(f'Cannot write --out={out} ({e.strerror}); give a directory with room '
                           'for a copy of the parameters.') from e
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def merge(paths: Sequence[str], weights: Sequence[float], out: str) -> list[str]:
  """Writes OUT (see the module docstring): the weighted sum of the parameters of the checkpoints
  at `paths`. Returns notes: the model.* keys in which a checkpoint's config.json differs from the
  first one's although their parameters have the same shapes."""
  check_out(out)
  flags = [f'--checkpoint={path}' for path in paths]
  opened = [finished.open_checkpoint(path, flag) for path, flag in zip(paths, flags)]
  for flag, (_, _, saved) in zip(flags[1:], opened[1:]):
    check_same_shapes(opened[0][2]['params'], saved['params'], flags[0], flag)
  configs = [runs.read_config(path, flag) for path, flag in zip(paths, flags)]
  full = [runs.with_defaults(config, defaults.get_config().to_dict()) for config in configs]
  notes = [f'{flag} differs from {flags[0]} in ' + '; '.join(differ).replace(
      'in the checkpoint', 'there').replace(' now', f' in {paths[0]}')
           for flag, config in zip(flags[1:], full[1:])
           if (differ := checkpoint.config_difference(config, full[0]))]
  params = weighted_sum((_read_params(d, step, saved['params']) for d, step, saved in opened),
                        weights)
  config = configs[0]
  if 'vocabulary' in config.get('data', {}):  # a launch.convert output's own tokenizer
    config['data']['vocabulary'] = vocabularies.vocabulary_in(config['data']['vocabulary'],
                                                              runs.workdir(paths[0]))
  config['merge'] = {'checkpoints': [p if '://' in p else os.path.abspath(p) for p in paths],
                     'steps': [step for _, step, _ in opened], 'weights': list(weights)}
  _write(out, config, params)
  return notes
