"""Which example of which task each slot of a global batch reads: a pure function of (seed, step).

A mixture schedule is a list of stages, each a start step and task weights (stage 0 starts at step
0). Within a stage, examples are grouped in blocks of K = `data.mixture_block`; every block gives
each task the same exact number of slots (the largest-remainder share of weight * K) in an order
seeded by (seed, stream, stage, block). A slot's task-local index is the number of earlier slots of
the same task in the whole schedule: the counts of the previous stages (whole blocks times the
per-block count, plus the slots of a last partial block) plus block * count plus the slot's rank in
its block. So a stage switch takes effect at exactly its start step, every task reads its examples
in order without gaps or repeats, and nothing depends on what was sampled before.

Mixture schedules by stage follow "Does your data spark joy?" (Blakeney et al. 2024, arXiv
2406.03476: upsample small domains at the end of training) and levanter's staged mixtures.
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np

from research import errors
from research.data import shapes


@dataclasses.dataclass(frozen=True)
class Stage:
  """Mixture weights from `start_step` on; `weights` may name any subset of the tasks."""
  start_step: int
  weights: Mapping[str, float]


def normalised_weights(weights: Mapping[str, float], key: str) -> dict[str, float]:
  """Weights over the tasks with a positive weight, summing to 1.

  A zero weight drops that task (a sweep convenience); a negative, non-finite or non-numeric weight,
  or no positive weight at all, is an error naming `key`.
  """
  for name, weight in weights.items():
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
        0 <= weight < math.inf):
      raise errors.UserError(f'{key}.{name}={weight!r} must be a finite weight >= 0 (0 drops the '
                             'task).')
  positive = {name: float(w) for name, w in sorted(weights.items()) if w > 0}
  if not positive:
    raise errors.UserError(f'{key} has no task with a positive weight; give at least one task a '
                           "weight > 0, e.g. {'stdlib_code': 1.0}.")
  total = sum(positive.values())
  return {name: w / total for name, w in positive.items()}


def stage_key(key: str, index: int, stage: Stage) -> str:
  """How errors name stage `index` of the schedule at config `key`."""
  return key if index == 0 else f'{key} (stage at step {stage.start_step})'


def schedule_tasks(stages: Sequence[Stage], key: str) -> set[str]:
  """The tasks with a positive weight in any stage; fails naming the key on a bad weight."""
  return {name for index, stage in enumerate(stages)
          for name in normalised_weights(stage.weights, stage_key(key, index, stage))}


def block_counts(weights: np.ndarray, block_size: int) -> np.ndarray:
  """int64 slots per task in every block: largest-remainder apportionment of weights * block_size.

  Ties in the remainders go to the earlier task.
  """
  quotas = weights * block_size
  counts = np.floor(quotas).astype(np.int64)
  by_remainder = np.argsort(-(quotas - counts), kind='stable')
  counts[by_remainder[:block_size - counts.sum()]] += 1
  return counts


def block_shares(weights: Mapping[str, float], block_size: int) -> dict[str, float]:
  """Each task's exact share of every block of `block_size` examples at `weights` (summing to 1):
  `block_counts` / block_size, what the sampler draws; a share of 0 drops the task."""
  counts = block_counts(np.array(list(weights.values()), np.float64), block_size)
  return {name: int(count) / block_size for name, count in zip(weights, counts)}


def check_block_size(block_size: int) -> None:
  """Fails naming `data.mixture_block` unless it is a positive number of examples."""
  if block_size <= 0:
    raise errors.UserError(f'data.mixture_block={block_size} must be a positive number of '
                           'examples.')


class MixtureSampler:
  """Task and task-local example index of every slot of a stream of `batch_size` slots per step:
  one number for every stage, one per stage (a stage of 0 slots reads nothing; replay's power
  law, research/data/replay.py, moves rows between the main and the replay stream by stage), or
  (first step, slots) spans from step 0, which need not start with a stage (a phase with a batch
  of its own, research/data/shapes.py). Blocks run on across a span's start."""

  def __init__(self, task_names: Sequence[str], stages: Sequence[Stage],
               batch_size: int | Sequence[int] | Sequence[tuple[int, int]], block_size: int,
               seed: int, stream: int, key: str = 'data.mixture'):
    check_block_size(block_size)
    if not stages or stages[0].start_step != 0:
      raise ValueError('The first stage of a mixture schedule starts at step 0.')
    self.task_names = list(task_names)
    self._block_size = block_size
    self._seed, self._stream = seed, stream
    self.start_steps = [stage.start_step for stage in stages]
    if np.ndim(batch_size) == 1 and len(batch_size) != len(stages):
      raise ValueError(f'{len(batch_size)} slot counts for {len(stages)} stages.')
    spans = np.array([(0, batch_size)] if np.ndim(batch_size) == 0
                     else list(zip(self.start_steps, batch_size)) if np.ndim(batch_size) == 1
                     else batch_size, np.int64).reshape(-1, 2)
    self._span_starts, self._span_rows = spans[:, 0], spans[:, 1]
    self._counts = []  # per stage: [num_tasks] slots per block
    for index, stage in enumerate(stages):
      where = stage_key(key, index, stage)
      weights = normalised_weights(stage.weights, where)
      unknown = sorted(set(weights) - set(self.task_names))
      if unknown:
        raise ValueError(f'{where} names tasks {unknown} outside the sampler.')
      vector = np.array([weights.get(name, 0.0) for name in self.task_names])
      counts = block_counts(vector, block_size)
      starved = [n for n, c, w in zip(self.task_names, counts, vector) if w > 0 and c == 0]
      if starved:
        raise errors.UserError(f'{where}: tasks {starved} get 0 of every data.mixture_block='
                               f'{block_size} examples at their weights; raise data.mixture_block '
                               'or those weights.')
      self._counts.append(counts)
    # Task-local examples consumed before each stage starts.
    self._offsets = [np.zeros(len(self.task_names), np.int64)]
    for index in range(1, len(stages)):
      examples = (self._slots_before(self.start_steps[index])
                  - self._slots_before(self.start_steps[index - 1]))
      self._offsets.append(self._offsets[-1] + self._consumed(index - 1, examples))

  def _layout(self, stage: int, block: int) -> np.ndarray:
    """[K] task index of each slot of `block` of `stage`."""
    labels_K = np.repeat(np.arange(len(self.task_names)), self._counts[stage])
    rng = np.random.default_rng([self._stream, self._seed, stage, block])
    return labels_K[rng.permutation(self._block_size)]

  def _consumed(self, stage: int, examples: int) -> np.ndarray:
    """[num_tasks] examples each task gives to the first `examples` slots of `stage`."""
    full, rest = divmod(examples, self._block_size)
    consumed = full * self._counts[stage]
    if rest:
      consumed = consumed + np.bincount(self._layout(stage, full)[:rest],
                                        minlength=len(self.task_names))
    return consumed

  def _slots_before(self, step: int) -> int:
    """The slots of the steps before `step`."""
    return int(shapes.steps_before(self._span_starts, step) @ self._span_rows)

  def examples_before(self, step: int) -> np.ndarray:
    """[num_tasks] examples each task has given to the steps before `step`."""
    stage = self.stage_at(step)
    examples = self._slots_before(step) - self._slots_before(self.start_steps[stage])
    return self._offsets[stage] + self._consumed(stage, examples)

  def rows(self, step: int) -> int:
    """The slots of step `step`."""
    return int(self._span_rows[np.searchsorted(self._span_starts, step, side='right') - 1])

  def proportions(self, step: int) -> np.ndarray:
    """[num_tasks] each task's share of the examples of the stage `step` is in (exact per block)."""
    counts = self._counts[self.stage_at(step)]
    return counts / counts.sum()

  def stage_at(self, step: int) -> int:
    return int(np.searchsorted(self.start_steps, step, side='right')) - 1

  def sources(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """[slots] task index (into `task_names`) and task-local example index of each slot of step
    `step` (`rows(step)` of them)."""
    if step < 0:
      raise ValueError(f'Step {step} is negative; steps count from 0.')
    stage, rows = self.stage_at(step), self.rows(step)
    first = self._slots_before(step) - self._slots_before(self.start_steps[stage])
    examples_B = first + np.arange(rows, dtype=np.int64)
    blocks_B, slots_B = np.divmod(examples_B, self._block_size)
    tasks_B = np.empty(rows, np.int64)
    local_B = np.empty(rows, np.int64)
    for block in np.unique(blocks_B):
      layout_K = self._layout(stage, int(block))
      ranks_K = np.empty(self._block_size, np.int64)
      for task in range(len(self.task_names)):
        slots = np.flatnonzero(layout_K == task)
        ranks_K[slots] = np.arange(len(slots))
      in_block = blocks_B == block
      tasks_B[in_block] = layout_K[slots_B[in_block]]
      local_B[in_block] = ranks_K[slots_B[in_block]]
    counts, offsets = self._counts[stage], self._offsets[stage]
    local_B += offsets[tasks_B] + blocks_B * counts[tasks_B]
    return tasks_B, local_B
