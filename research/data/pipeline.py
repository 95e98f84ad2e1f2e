"""The stateless batch source: the batch at step s is a pure function of (config.data, seed, s).

Training resumes at any step, on any number of hosts, with no iterator state to checkpoint.

Sampling. Global example g = step * batch_size + i lies in mixture block g // K at slot g % K
(K = `data.mixture_block`). Every block gives each task the same exact number of slots, its
largest-remainder share of weight * K, and lays the slots out in a permutation seeded by
(seed, block). The slot's rank among its task's slots in the block gives the task-local index
j = block * count + rank, and j reads packed row perm(seed, task, j // N)[j % N] of the task's N
rows, a fresh seeded permutation per epoch. Row permutations are seeded by the task's name (not its
position in the mixture), so adding a task to a mixture leaves the other tasks' row order alone.

Every batch is a dict of [batch_size, seq_len] arrays: int32 `targets`, `segment_ids`,
`positions` (see packing.py), `inputs` (targets shifted right within each segment; see
research/objectives/causal_lm.py) and float32 `weights` (1 on tokens, 0 on padding).
"""

import hashlib
import math
from collections.abc import Mapping

import numpy as np

from research import errors
from research.data import packing
from research.data import store as store_lib
from research.data import tasks
from research.objectives import causal_lm

_BLOCK_STREAM = 0x626c6f63  # seeded-stream tags keep the block and epoch streams apart
_EPOCH_STREAM = 0x65706f63
_PACKED_KEYS = ('targets', 'segment_ids', 'positions')


def mixture_weights(mixture: Mapping[str, float]) -> tuple[list[str], np.ndarray]:
  """Task names (sorted) and their weights normalised to sum to 1 (config key `data.mixture`)."""
  items = sorted(mixture.items())
  if not items:
    raise errors.UserError('data.mixture is empty; name at least one task with a positive weight, '
                           "e.g. {'stdlib_code': 1.0}.")
  for name, weight in items:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
        0 < weight < math.inf):
      raise errors.UserError(f'data.mixture.{name}={weight!r} must be a positive finite weight.')
  weights = np.array([w for _, w in items], np.float64)
  return [name for name, _ in items], weights / weights.sum()


def block_counts(weights: np.ndarray, block_size: int) -> np.ndarray:
  """int64 slots per task in every block: largest-remainder apportionment of weights * block_size.

  Ties in the remainders go to the earlier task.
  """
  quotas = weights * block_size
  counts = np.floor(quotas).astype(np.int64)
  by_remainder = np.argsort(-(quotas - counts), kind='stable')
  counts[by_remainder[:block_size - counts.sum()]] += 1
  return counts


def _task_key(name: str) -> int:
  """A stable 32-bit integer for a task name, used to seed its row permutations."""
  return int.from_bytes(hashlib.md5(name.encode('utf-8')).digest()[:4], 'big')


def _with_objective(packed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Adds the causal-LM `inputs` and the loss `weights` to packed rows."""
  return {
      **packed,
      'inputs': causal_lm.causal_lm_example(packed['targets'], packed['segment_ids']),
      'weights': (packed['segment_ids'] > 0).astype(np.float32),
  }


def _check_seed(seed: int) -> None:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise errors.UserError(f'seed={seed!r} must be a non-negative integer.')


def _packed_train_rows(task_name: str, data_config, seed: int) -> dict[str, np.ndarray]:
  """The train split of `task_name`, packed (see packing.pack_documents)."""
  store = store_lib.load_store(task_name, 'train', data_config.vocabulary, data_config.cache_dir)
  packed = packing.pack_documents(store, data_config.seq_len, seed)
  if not len(packed['targets']):
    raise errors.UserError(f'Task {task_name!r} in data.mixture has no training documents; remove '
                           'it from data.mixture.')
  return packed


class TrainData:
  """Training batches of a task mixture, addressable by step.

  Loads (building on first use) and packs the train split of every task in `data_config.mixture`
  once; `batch(step)` is then cheap and depends only on (data_config, seed, step).
  """

  def __init__(self, data_config, batch_size: int, seed: int):
    _check_seed(seed)
    if batch_size <= 0:
      raise errors.UserError(f'train.batch_size={batch_size} must be positive.')
    if data_config.mixture_block <= 0:
      raise errors.UserError(f'data.mixture_block={data_config.mixture_block} must be a positive '
                             'number of examples.')
    self.task_names, weights = mixture_weights(data_config.mixture)
    for name in self.task_names:
      tasks.check_task(name)
    self._counts = block_counts(weights, data_config.mixture_block)
    for name, count in zip(self.task_names, self._counts):
      if count == 0:
        raise errors.UserError(f'Task {name!r} gets 0 of every data.mixture_block='
                               f'{data_config.mixture_block} examples at weight '
                               f'data.mixture.{name}={data_config.mixture[name]}; raise '
                               'data.mixture_block or that weight.')
    self._block_size = data_config.mixture_block
    self._batch_size = batch_size
    self._seed = seed
    self._packed = [_packed_train_rows(name, data_config, seed) for name in self.task_names]
    self.num_rows = {name: len(p['targets']) for name, p in zip(self.task_names, self._packed)}
    self._task_keys = [_task_key(name) for name in self.task_names]
    self._epoch_perms = [(-1, None)] * len(self.task_names)  # per task: (epoch, permutation)

  def _block_layout(self, block: int) -> tuple[np.ndarray, np.ndarray]:
    """[K] task index of each slot of `block`, and each slot's rank among its task's slots."""
    labels_K = np.repeat(np.arange(len(self._counts)), self._counts)
    rng = np.random.default_rng([_BLOCK_STREAM, self._seed, block])
    tasks_K = labels_K[rng.permutation(self._block_size)]
    ranks_K = np.empty(self._block_size, np.int64)
    for task in range(len(self._counts)):
      slots = np.flatnonzero(tasks_K == task)
      ranks_K[slots] = np.arange(len(slots))
    return tasks_K, ranks_K

  def _epoch_perm(self, task: int, epoch: int) -> np.ndarray:
    """The row permutation of `task` in `epoch` (the latest one is cached)."""
    cached_epoch, perm = self._epoch_perms[task]
    if cached_epoch != epoch:
      num_rows = len(self._packed[task]['targets'])
      rng = np.random.default_rng([_EPOCH_STREAM, self._seed, self._task_keys[task], epoch])
      perm = rng.permutation(num_rows)
      self._epoch_perms[task] = (epoch, perm)
    return perm

  def example_sources(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """[batch_size] task index (into `task_names`) and packed row of each example of `step`."""
    if step < 0:
      raise errors.UserError(f'Step {step} is negative; steps count from 0.')
    global_B = step * self._batch_size + np.arange(self._batch_size, dtype=np.int64)
    blocks_B, slots_B = np.divmod(global_B, self._block_size)
    tasks_B = np.empty(self._batch_size, np.int64)
    local_B = np.empty(self._batch_size, np.int64)
    for block in np.unique(blocks_B):
      in_block = blocks_B == block
      tasks_K, ranks_K = self._block_layout(int(block))
      tasks_B[in_block] = tasks_K[slots_B[in_block]]
      local_B[in_block] = block * self._counts[tasks_B[in_block]] + ranks_K[slots_B[in_block]]
    rows_B = np.empty(self._batch_size, np.int64)
    for task in np.unique(tasks_B):
      of_task = tasks_B == task
      epochs, within = np.divmod(local_B[of_task], len(self._packed[task]['targets']))
      rows = np.empty(len(within), np.int64)
      for epoch in np.unique(epochs):
        rows[epochs == epoch] = self._epoch_perm(int(task), int(epoch))[within[epochs == epoch]]
      rows_B[of_task] = rows
    return tasks_B, rows_B

  def batch(self, step: int) -> dict[str, np.ndarray]:
    """The global batch of training step `step`: a dict of [batch_size, seq_len] arrays."""
    tasks_B, rows_B = self.example_sources(step)
    packed = {k: np.empty((self._batch_size,) + self._packed[0][k].shape[1:], np.int32)
              for k in _PACKED_KEYS}
    for task in np.unique(tasks_B):
      of_task = tasks_B == task
      for k in _PACKED_KEYS:
        packed[k][of_task] = self._packed[task][k][rows_B[of_task]]
    return _with_objective(packed)


def eval_batches(data_config, task_name: str, batch_size: int, num_batches: int,
                 seed: int) -> list[dict[str, np.ndarray]]:
  """Up to `num_batches` batches of the first packed rows of `task_name`'s validation split.

  When the split has fewer rows, returns as many batches as they fill (at least one), the last
  padded with all-zero rows whose weights are 0.
  """
  _check_seed(seed)
  if batch_size <= 0 or num_batches <= 0:
    raise errors.UserError(f'eval.batch_size={batch_size} and eval.batches={num_batches} must both '
                           'be positive.')
  store = store_lib.load_store(task_name, 'validation', data_config.vocabulary,
                               data_config.cache_dir)
  packed = packing.pack_documents(store, data_config.seq_len, seed)
  num_rows = min(len(packed['targets']), batch_size * num_batches)
  num_padded = max(1, -(-num_rows // batch_size)) * batch_size
  padded = {k: np.zeros((num_padded,) + v.shape[1:], np.int32) for k, v in packed.items()}
  for k, v in packed.items():
    padded[k][:num_rows] = v[:num_rows]
  batches = _with_objective(padded)
  return [{k: v[i:i + batch_size] for k, v in batches.items()}
          for i in range(0, num_padded, batch_size)]


def host_slice(batch: dict[str, np.ndarray], process_index: int,
               process_count: int) -> dict[str, np.ndarray]:
  """The rows of a global batch that process `process_index` of `process_count` feeds.

  Processes take contiguous, equal blocks of rows in process order.
  """
  batch_size = len(next(iter(batch.values())))
  if batch_size % process_count:
    raise errors.UserError(f'train.batch_size={batch_size} is not divisible by the {process_count} '
                           f'processes; set it to a multiple of {process_count}.')
  if not 0 <= process_index < process_count:
    raise errors.UserError(f'Process index {process_index} is outside [0, {process_count}).')
  per_process = batch_size // process_count
  start = process_index * per_process
  return {k: v[start:start + per_process] for k, v in batch.items()}
