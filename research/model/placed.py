"""A run's model placed on a mesh of devices: the mesh, the logical rules, the model, its
parameters' shardings and abstract values, and how a host batch becomes global arrays.

Training (research/train.Trainer adds the optimizer and the step), a distillation teacher and a
finished run's checkpoint (research/finished.py) all build their model this way, so a checkpoint is
read onto the shardings training wrote it from.
"""

import dataclasses

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from research import checkpoint, sharding
from research.model import transformer


def make_params_init(model: nn.Module, batch: dict):
  """rng -> the model's boxed (logically named) parameters.

  `batch` (transformer.dummy_batch) gives the model the input keys and shapes to initialise with.
  Unscanned layers (`scan_layers=False`) start from the scanned model's draw, unstacked, so that
  flipping `scan_layers` does not change the run.
  """
  def init(rng):
    if model.config.scan_layers:
      return model.init({'params': rng}, batch)['params']
    scanned = model.clone(config=dataclasses.replace(model.config, scan_layers=True))
    return transformer.unscan_params(scanned.init({'params': rng}, batch)['params'], model.config)
  return init


class ModelOnMesh:
  """The model of `config` (a validated run config) on `devices` (default: all), laid out by
  config.mesh."""

  def __init__(self, config: ml_collections.ConfigDict, devices=None):
    self.config = config
    self.mesh = sharding.make_mesh(config.mesh, devices)
    self.rules = sharding.logical_rules(config.mesh)
    self.model_config = transformer.ModelConfig.from_config(config.model)
    self.model = transformer.make_model(self.model_config)
    self.init_batch = transformer.dummy_batch(self.model_config, 1, config.data.seq_len,
                                              config.objective.target_len or config.data.seq_len)
    self.param_shardings, self.abstract_params = self.place_params(self.model)
    self.batch_sharding = sharding.batch_sharding(self.mesh, self.rules)

  def place_params(self, model: nn.Module):
    """(the shardings, the ShapeDtypeStructs) of the parameters of `model` (this one, or another
    decoder read onto this mesh: research/model/growth.py's smaller model) laid out on this mesh."""
    # Initialisation runs outside the mesh context: the jit's out_shardings place the parameters.
    boxed = jax.eval_shape(make_params_init(model, self.init_batch),
                           jax.random.key(self.config.seed))
    shardings = sharding.logical_shardings(boxed, self.mesh, self.rules)
    sharding.check_divisible(nn.meta.unbox(boxed), shardings)
    return shardings, checkpoint.abstract_like(nn.meta.unbox(boxed), shardings)

  def rows(self, batch_size: int) -> np.ndarray:
    """The rows of a global batch of `batch_size` rows that this process's devices hold."""
    return sharding.process_rows(self.batch_sharding, batch_size)

  def place(self, host_batch: dict, batch_size: int | None = None) -> dict:
    """A host batch as global jax.Arrays on the mesh: a whole global batch, or with `batch_size`
    this process's `rows(batch_size)` of one."""
    return sharding.global_batch(host_batch, self.batch_sharding, batch_size)
