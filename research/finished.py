"""A finished run's model: its config over this code's defaults, its checkpoint's parameters
restored onto a mesh (research/model/placed.py), and jitted forward passes over them.

Training reads init.path and the distillation teacher here; the scores, generation, membership,
canary-order and lm-evaluation-harness commands read their --checkpoint here. The files of a run
(its config.json, its checkpoint steps) are read by research/runs.py, local or gs://.
"""

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from research import checkpoint, defaults, errors, runs, sharding
from research.data import vocabularies
from research.model import placed as placed_lib
from research.objectives import losses


def load_config(path: str, where: str) -> ml_collections.ConfigDict:
  """The config of the run at `path`, to build its model with: its config.json (`read_config`)
  over research/defaults.py's defaults, so a run written by an older version of the code loads under
  this one, and with a tokenizer the run names relative to its workdir (a launch.convert output)
  found there."""
  loaded = runs.read_config(path, where)
  data = loaded.get('data', {})
  if 'vocabulary' in data:
    data['vocabulary'] = vocabularies.vocabulary_in(data['vocabulary'], runs.workdir(path))
  return ml_collections.ConfigDict(runs.with_defaults(loaded, defaults.get_config().to_dict()))


def open_checkpoint(path: str, where: str) -> tuple[epath.Path, int, dict]:
  """(the checkpoints directory, the step, the saved tree of (shape, dtype) leaves) of the
  checkpoint that run path `path` names (`find_checkpoint`); fails naming `where` when it holds
  no parameters."""
  directory, step = runs.find_checkpoint(path, where)
  directory = epath.Path(directory)  # as orbax reads it: a local directory or gs://
  saved = checkpoint.saved_shapes(directory, step)
  if 'params' not in saved:
    raise errors.UserError(f'{where} (checkpoint {step}) holds no parameters; give a checkpoint of '
                           'launch.train or launch.convert.')
  return directory, step, saved


def restore_params(path: str, abstract_params, where: str):
  """(the parameters, the step) of the checkpoint that run path `path` names, restored onto the
  shardings of `abstract_params` (ShapeDtypeStructs); the shapes are checked first, naming the
  first parameter that differs, and the rest of the checkpoint (the optimizer state) is not read.
  """
  directory, step, saved = open_checkpoint(path, where)
  checkpoint.check_shapes(saved['params'], abstract_params, f'{where} (checkpoint {step})')
  return checkpoint.restore_parts(directory, step, {'params': abstract_params})['params'], step


def checkpoint_config(path: str, flag: str = '--checkpoint',
                      decoder_only: bool = True) -> ml_collections.ConfigDict:
  """The config of the run (or launch.convert output) at checkpoint path `path`, local or gs://
  (research/runs.py). Fails naming `flag` when there is no checkpoint or no config.json, or, if
  `decoder_only` (as scores need), the model is not a decoder."""
  where = f'{flag}={path}'
  runs.find_checkpoint(path, where)
  config = load_config(path, where)
  if decoder_only and config.model.architecture != 'decoder':
    raise errors.UserError(f'{flag}={path} is an {config.model.architecture} model; scores are '
                           'left-to-right log-likelihoods of a decoder (model.architecture='
                           "'decoder').")
  config.objective.distill.teacher = ''  # scoring needs no teacher
  return config


@dataclasses.dataclass
class LoadedCheckpoint:
  """A checkpoint's parameters on its model's mesh, and jitted per-token scorers."""
  path: str
  step: int
  config: ml_collections.ConfigDict
  placed: placed_lib.ModelOnMesh
  params: object

  def __post_init__(self):
    self.start_id = vocabularies.data_start_id(self.config.data)
    model = self.model

    def statistics(params, batch):
      logits_BLV = model.apply({'params': params}, batch)
      return losses.token_statistics(logits_BLV, batch['targets'])

    def document_loss(params, rows):
      """The mean token cross-entropy of one document's rows [W, L]."""
      logits_WLV = model.apply({'params': params}, rows)
      sums = losses.token_cross_entropy(logits_WLV, rows['targets'], rows['segment_ids'] > 0)
      return sums['cross_entropy_sum'] / jnp.maximum(sums['weight_sum'], 1.0)

    def grand(params, batch):
      gradient_norm = lambda rows: optax.tree.norm(jax.grad(document_loss)(params, rows))
      return jax.vmap(gradient_norm)(batch)

    def alignment(params, vector, batch):
      dot = lambda rows: optax.tree.vdot(jax.grad(document_loss)(params, rows), vector)
      return jax.vmap(dot)(batch)

    self._statistics = self.jit(statistics)
    self._grand = self.jit(grand)
    placed = self.placed
    self._alignment = jax.jit(
        alignment, in_shardings=(placed.param_shardings, placed.param_shardings,
                                 placed.batch_sharding),
        out_shardings=sharding.replicated(placed.mesh))

  def batch_loss(self, params, batch):
    """The mean token cross-entropy of a model batch (traceable; under the model's logical
    sharding rules when they are active)."""
    logits_BLV = self.model.apply({'params': params}, batch)
    sums = losses.token_cross_entropy(logits_BLV, batch['targets'], batch['segment_ids'] > 0)
    return sums['cross_entropy_sum'] / jnp.maximum(sums['weight_sum'], 1.0)

  @property
  def model(self):
    return self.placed.model

  @property
  def seq_len(self) -> int:
    return self.config.data.seq_len

  def data_parallel_size(self) -> int:
    return sharding.data_parallel_size(dict(self.placed.mesh.shape), self.placed.rules)

  def jit(self, fn):
    """jax.jit of fn(params, batch) on the model's mesh: the parameters and the batch sharded as
    training shards them, the outputs replicated."""
    placed = self.placed
    return jax.jit(fn, in_shardings=(placed.param_shardings, placed.batch_sharding),
                   out_shardings=sharding.replicated(placed.mesh))

  def apply(self, jitted, batch: dict[str, np.ndarray]):
    """The device arrays of jitted(params, batch), `jitted` from `jit`, for a global host batch of
    `pack_windows` rows (its token_index left out), the model's logical sharding rules active (not
    waited for)."""
    model_batch = {k: batch[k] for k in ('inputs', 'targets', 'segment_ids', 'positions')}
    with sharding.activate(self.placed.mesh, self.placed.rules):
      return jitted(self.params, self.placed.place(model_batch))

  def statistics(self, batch: dict[str, np.ndarray]) -> dict:
    """The device arrays of `losses.token_statistics` for a global host batch (not waited for)."""
    return self.apply(self._statistics, batch)

  def grand(self, batch: dict[str, np.ndarray]):
    """The device array [N] of each document's GraNd for a global host batch of `document_rows`
    [N, W, L] (not waited for). The model's activation constraints are left out (no logical rules
    active): under vmap they would shard each document's windows instead of the documents, which
    follow the batch's sharding."""
    return self._grand(self.params, self.placed.place(batch))

  def alignment(self, params, vector, batch: dict[str, np.ndarray]):
    """The device array [N] of <grad of each document's mean token loss at `params`, `vector`>
    (parameter pytrees placed as the checkpoint's) for a global host batch of `document_rows`, as
    `grand` (not waited for): DELT's quality-times-learnability term (research/analysis/lqs.py)."""
    return self._alignment(params, vector, self.placed.place(batch))


def load_checkpoint(path: str, config: ml_collections.ConfigDict | None = None, devices=None,
                    fsdp: int = 1, tensor: int = 1, flag: str = '--checkpoint') -> LoadedCheckpoint:
  """The parameters of checkpoint path `path` (a workdir: its latest checkpoint; WORKDIR/
  checkpoints/<step>: that one; or a launch.convert output), read onto a mesh of `fsdp` x `tensor`
  x the remaining devices as data parallelism, with the run's mesh.rules."""
  config = config or checkpoint_config(path, flag)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor, config.mesh.expert = -1, fsdp, tensor, 1
  devices = jax.devices() if devices is None else devices
  placed = placed_lib.ModelOnMesh(config, devices)
  params, step = restore_params(path, placed.abstract_params, f'{flag}={path}')
  return LoadedCheckpoint(path=path, step=step, config=config, placed=placed, params=params)
