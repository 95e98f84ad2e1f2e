"""Checkpoints with orbax: async saves every N steps and at the end, keep the last K, resume.

A checkpoint's step is the number of completed training steps, so restoring checkpoint k and
training on continues with the batch of step k. Orbax commits a checkpoint atomically: an
interrupted save leaves no directory that restore would pick up.
"""

import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from research import errors


def make_manager(workdir: str, checkpoint_config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=checkpoint_config.keep,
      enable_async_checkpointing=checkpoint_config.async_save,
      create=True,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def checkpoint_dir(workdir: str) -> epath.Path:
  """WORKDIR/checkpoints, absolute: a local directory, or a bucket's (gs://...) as it is."""
  return epath.Path(workdir if '://' in workdir else os.path.abspath(workdir), 'checkpoints')


def restore_latest(manager: ocp.CheckpointManager, abstract_state):
  """The latest checkpoint restored onto the shardings of `abstract_state`, or None if there is none.

  `abstract_state` is a tree of jax.ShapeDtypeStruct with `.sharding` set, so each process reads
  only its own shards.
  """
  step = manager.latest_step()
  if step is None:
    return None
  return manager.restore(step, args=ocp.args.StandardRestore(abstract_state))


def save(manager: ocp.CheckpointManager, step: int, state, every: int, final: bool = False) -> bool:
  """Saves `state` as checkpoint `step` every `every` steps and at the `final` step; async if configured.

  (orbax's own interval would also save the first step of every run.)
  """
  if not final and step % every:
    return False
  return manager.save(step, args=ocp.args.StandardSave(state), force=True)


def abstract_like(tree, shardings):
  """ShapeDtypeStructs with the given shardings: the target that restore fills."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def find_checkpoint(path: str) -> tuple[epath.Path, int]:
  """(the checkpoints directory, the step) that `init.path` names: a workdir (its latest
  checkpoint), a checkpoint WORKDIR/checkpoints/<step>, or a launch.convert output."""
  given = epath.Path(path if '://' in path else os.path.abspath(path))
  if given.name.isdigit() and given.parent.name == 'checkpoints' and given.is_dir():
    return given.parent, int(given.name)
  directory = given / 'checkpoints'
  steps = sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if (
      directory.is_dir()) else []
  if not steps:
    raise errors.UserError(
        f'init.path={path} holds no checkpoint: give a workdir with checkpoints/<step>/ (from '
        'launch.train or launch.convert) or one checkpoint directory WORKDIR/checkpoints/<step>.')
  return directory, steps[-1]


def _reader(directory: epath.Path) -> ocp.CheckpointManager:
  """A manager that reads any checkpoint of `directory` as a tree, whatever wrote it."""
  return ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler())


def saved_shapes(directory: epath.Path, step: int) -> dict:
  """The saved tree of checkpoint `step`: nested dicts of (shape, dtype) leaves."""
  manager = _reader(directory)
  metadata = manager.item_metadata(step)
  manager.close()
  tree = getattr(metadata, 'tree', metadata)
  return jax.tree.map(lambda leaf: (tuple(leaf.shape), str(leaf.dtype)), tree)


def check_shapes(saved, expected, where: str, key: str = '') -> None:
  """Fails naming the first parameter whose shape differs between `saved` ((shape, dtype) leaves)
  and `expected` (arrays or ShapeDtypeStructs), or that only one of them has."""
  if isinstance(expected, dict):
    if not isinstance(saved, dict):
      raise errors.UserError(f'{where}: {key} is an array in the checkpoint but a group of '
                             'parameters in the model; the checkpoint is of another architecture.')
    for name in sorted(set(saved) | set(expected)):
      path = f'{key}/{name}' if key else name
      if name not in saved or name not in expected:
        side = 'model' if name in expected else 'checkpoint'
        raise errors.UserError(f'{where}: {path} is in the {side} only; the checkpoint and the '
                               'model config (model.*) describe different architectures.')
      check_shapes(saved[name], expected[name], where, path)
    return
  if isinstance(saved, dict) or tuple(saved[0]) != tuple(expected.shape):
    saved_shape = 'a group of parameters' if isinstance(saved, dict) else f'shape {saved[0]}'
    raise errors.UserError(f'{where}: {key} has {saved_shape} in the checkpoint but shape '
                           f'{tuple(expected.shape)} in the model; set model.* as in the '
                           "checkpoint's config.json.")


def restore_parts(directory: epath.Path, step: int, target: dict) -> dict:
  """The top-level parts of checkpoint `step` named in `target` (e.g. {'params': ...}), restored
  onto the shardings of its ShapeDtypeStructs; the rest of the checkpoint is not read."""
  manager = _reader(directory)
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True))
  manager.close()
  return restored
