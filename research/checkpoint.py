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
