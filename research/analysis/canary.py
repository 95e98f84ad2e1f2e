"""The canary-order test: does a model's loss on its training examples follow their training order?

A model is a palimpsest: the examples it saw last are written over the ones before, so its loss on
an example falls with the position at which training read it. Kuditipudi et al. 2025 ("Blackbox
Model Provenance via Palimpsestic Membership Inference", arXiv 2510.19796) turn this into a
provenance test: the Spearman correlation between the positions of examples in a training order
and a model's losses on them is negative when the model was trained in that order. The null
hypothesis is that the model is independent of the order; when the order is a uniformly random
shuffle, every assignment of the positions to the examples is then as likely as the observed one,
so a permutation test gives an exact p-value whatever the examples are (another seed's order is
such a null: its shuffle is independent of the model). An order whose examples change with their
position for other reasons (a curriculum, a mixture that changes during the run, an objective
that changes with the step) correlates with the loss without any memorisation: `order_confounds`
names them.

`example_losses` reads the examples of steps [first, last) of a training order (research/data/
pipeline.py: the batch of a step is a pure function of the run's config and the step) and
computes a checkpoint's mean token cross-entropy on each; `spearman` and `permutation_p_value`
test the relation between their steps and their losses.
"""

import dataclasses
import math

import jax
import ml_collections
import numpy as np

from research import schedules, sharding, train
from research.data import pipeline, probes
from research.objectives import losses

ALTERNATIVES = ('less', 'greater', 'two-sided')
# Objectives whose examples depend on the step, not only on the example, and how.
STEP_DEPENDENT_OBJECTIVES = {'masked_thought': 'its masking rate warms up',
                             'meco': 'its cooldown reads the documents without metadata'}
_PERMUTATION_CELLS = 1 << 22  # permuted ranks held at once (permutations x examples), ~32 MiB
_STEPS_PER_FETCH = 32  # steps dispatched before their losses are fetched


def average_ranks(values) -> np.ndarray:
  """float64 [N]: the 1-based rank of each value, tied values sharing the mean of their ranks
  ([10, 20, 20, 30] -> [1, 2.5, 2.5, 4])."""
  values = np.asarray(values, np.float64).ravel()
  order = np.argsort(values, kind='stable')
  ordered = values[order]
  starts_new = np.concatenate([[True], ordered[1:] != ordered[:-1]])
  group_N = np.cumsum(starts_new) - 1
  starts_G = np.flatnonzero(starts_new)
  ends_G = np.append(starts_G[1:], len(values))
  ranks = np.empty(len(values))
  ranks[order] = ((starts_G + ends_G + 1) / 2)[group_N]  # the mean of ranks starts+1 .. ends
  return ranks


def _centred_ranks(x, y) -> tuple[np.ndarray, np.ndarray]:
  """Both samples' average ranks minus their mean; fails on unequal lengths, fewer than 2 values
  or a value that is not finite."""
  x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
  if len(x) != len(y) or len(x) < 2:
    raise ValueError(f'A rank correlation needs two samples of one length >= 2; got {len(x)} and '
                     f'{len(y)} values.')
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    raise ValueError('A rank correlation needs finite values; got NaN or infinity.')
  rx, ry = average_ranks(x), average_ranks(y)
  return rx - rx.mean(), ry - ry.mean()


def spearman(x, y) -> float:
  """Spearman's rank correlation of two samples of one length: the Pearson correlation of their
  average ranks (ties share the mean of their ranks), in [-1, 1]; NaN when either sample is
  constant."""
  rx, ry = _centred_ranks(x, y)
  scale = math.sqrt(float(rx @ rx) * float(ry @ ry))
  return float(rx @ ry) / scale if scale > 0 else math.nan


def permutation_p_value(positions, losses_N, permutations: int = 1000, seed: int = 0,
                        alternative: str = 'less') -> float:
  """The permutation-test p-value of the Spearman correlation of `positions` and `losses_N`.

  `permutations` random permutations of the positions (numpy's default_rng(seed)) are each
  correlated with the losses. With count the number of permuted correlations at least as extreme
  as the observed one, the p-value is (count + 1) / (permutations + 1): the observed order counts
  as one of the permutations, so the p-value is never 0 and is a valid (slightly conservative)
  test at any number of permutations (Phipson & Smyth 2010, "Permutation P-values Should Never Be
  Zero: Calculating Exact P-values When Permutations Are Randomly Drawn"). "At least as extreme"
  is, for `alternative`:

      less        rho_permuted <= rho   (the palimpsest's direction: later = lower loss)
      greater     rho_permuted >= rho
      two-sided   |rho_permuted| >= |rho|

  Correlations within 1e-9 of the observed one count as equal (float rounding in the sums). When
  either sample is constant every permutation ties with the observed order and the p-value is 1.
  """
  if alternative not in ALTERNATIVES:
    raise ValueError(f'alternative={alternative!r} must be one of {ALTERNATIVES}.')
  if permutations < 1:
    raise ValueError(f'permutations={permutations} must be at least 1.')
  rx, ry = _centred_ranks(positions, losses_N)
  # The correlation's denominator is the same for every permutation: compare the numerators.
  scale = math.sqrt(float(rx @ rx) * float(ry @ ry))
  tolerance = 1e-9 * scale
  rng = np.random.default_rng(seed)
  chunk = max(1, _PERMUTATION_CELLS // len(rx))
  observed, count = float(ry @ rx), 0
  for start in range(0, permutations, chunk):
    rows = min(chunk, permutations - start)
    permuted_PN = rng.permuted(np.broadcast_to(rx, (rows, len(rx))), axis=1)
    statistic_P = permuted_PN @ ry
    if alternative == 'less':
      count += int(np.sum(statistic_P <= observed + tolerance))
    elif alternative == 'greater':
      count += int(np.sum(statistic_P >= observed - tolerance))
    else:
      count += int(np.sum(np.abs(statistic_P) >= abs(observed) - tolerance))
  return (count + 1) / (permutations + 1)


def training_data(config: ml_collections.ConfigDict, workdir: str | None = None,
                  up_to_step: int = 0) -> pipeline.TrainData:
  """The training batches of the run `config` as its training loop reads them: its objective, seed
  and train.steps; for a Skill-it run (data.skillit), the mixture updates its `workdir` logged up
  to step `up_to_step`."""

  return train.run_data(config, workdir, up_to_step)[2]


def order_confounds(config: ml_collections.ConfigDict) -> list[str]:
  """Why the examples of run `config`'s order may change with their position other than by a
  random shuffle (the permutation test's null then fails): one sentence per config key."""
  confounds = []
  if config.data.order.name != 'random':
    confounds.append(f'data.order.name={config.data.order.name!r} orders the rows by a score, not '
                     'at random.')
  if len(config.data.stages) or config.data.skillit.every:
    confounds.append('The mixture changes during the run (data.stages or data.skillit), so the '
                     'tasks read change with the position.')
  if any('objective' in phase for phase in config.phases.values()):
    confounds.append('The objective changes during the run (config.phases.NAME.objective), so the '
                     'examples change with the position.')
  if any(set(phase) & set(schedules.SHAPE_KEYS) for phase in config.phases.values()):
    confounds.append('The batch shape changes during the run (config.phases.NAME.seq_len or '
                     'batch_size), so the examples change with the position.')
  if config.objective.name in STEP_DEPENDENT_OBJECTIVES:
    confounds.append(f'objective.name={config.objective.name!r} changes the examples with the step '
                     f'({STEP_DEPENDENT_OBJECTIVES[config.objective.name]}).')
  return confounds


def epoch_steps(data: pipeline.TrainData, batch_size: int) -> int:
  """The steps that read as many examples as the training data has packed rows (all tasks)."""
  return -(-sum(data.rows.num_rows.values()) // batch_size)


@dataclasses.dataclass(frozen=True)
class ExampleLosses:
  """Training examples in training order: `positions` [N] int64, step * batch_size + row (the
  example's index in the order, as research/data/pipeline.py numbers examples); `steps` [N] int64,
  the step that read it; `losses` [N] float64, the mean token cross-entropy (nats) over the
  example's targets, each weighted by its `weights` (1 on a token, 0 on padding).

  The rows of a step are one update, with no order among them: the test ranks examples by `steps`
  (tied within a step), so that how a step's rows are laid out (tasks of a mixture, replay rows
  last) cannot correlate with the loss."""
  positions: np.ndarray
  steps: np.ndarray
  losses: np.ndarray


def _row_loss_fn(loaded):
  """A jitted (params, batch) -> (cross-entropy sums [B], weight sums [B]) of each row of a global
  batch, on the mesh of `loaded` (research/finished.LoadedCheckpoint)."""
  model = loaded.model

  def row_losses(params, batch):
    logits_BLV = model.apply({'params': params}, batch)
    sums = jax.vmap(losses.token_cross_entropy)(logits_BLV, batch['targets'], batch['weights'])
    return sums['cross_entropy_sum'], sums['weight_sum']

  return loaded.jit(row_losses)


def example_losses(loaded, data: pipeline.TrainData, first: int, last: int) -> ExampleLosses:
  """Checkpoint `loaded`'s (research/finished.LoadedCheckpoint) loss on every example of training
  steps [first, last) of `data` (`training_data`), in training order; examples without a weighted
  target are left out, and so are the rows a knowledge probe (data.probes) put into a batch: the
  same documents at steps the config chose, not a shuffle's draw. Each step's global batch is one
  forward pass on the checkpoint's mesh, as evaluation runs, its rows padded to a multiple of the
  data-parallel size (padding has weight 0 and is dropped)."""
  if not 0 <= first < last:
    raise ValueError(f'Steps [{first}, {last}) must be a non-empty range from step 0 on.')
  placed, parallel = loaded.placed, loaded.data_parallel_size()
  jitted = _row_loss_fn(loaded)
  positions, drawn, sums, weights, pending = [], [], [], [], []
  for step in range(first, last):
    batch = data.batch(step)
    batch_size = len(batch['targets'])
    drawn.append(np.arange(batch_size) >= probes.injected_rows(step, data.probes))
    padding = -batch_size % parallel
    padded = {k: np.pad(v, [(0, padding)] + [(0, 0)] * (v.ndim - 1)) for k, v in batch.items()}
    with sharding.activate(placed.mesh, placed.rules):
      pending.append(jitted(loaded.params, placed.place(padded)))
    positions.append(step * batch_size + np.arange(batch_size))
    if len(pending) == _STEPS_PER_FETCH or step == last - 1:
      for sum_B, weight_B in jax.device_get(pending):
        sums.append(sum_B[:batch_size])
        weights.append(weight_B[:batch_size])
      pending = []
  sum_N = np.concatenate(sums).astype(np.float64)
  weight_N = np.concatenate(weights).astype(np.float64)
  scored = (weight_N > 0) & np.concatenate(drawn)
  positions_N = np.concatenate(positions)[scored]
  return ExampleLosses(positions=positions_N, steps=positions_N // batch_size,
                       losses=sum_N[scored] / weight_N[scored])
