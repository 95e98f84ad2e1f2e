"""The shape of every training step's batch: `batch_size` rows of `seq_len` tokens.

A run trains on `train.batch_size` rows of `data.seq_len` tokens, unless a phase of `config.phases`
(research/schedules.phase_changes) changes them: `phases.NAME.seq_len` and `phases.NAME.batch_size`
hold from the phase's start to the next phase that changes the shape, and a phase that changes
the shape alone may start at step 0. A phase's rows are its tasks' documents packed at its length
(the run's packing path, research/data/task_rows.py: no padding), and a phase that sets its
length alone has as many more rows as they are shorter, so that every step trains on the
run's tokens (`train.batch_size * data.seq_len`, which its length must divide into whole rows).
`data.seq_len` stays the model's longest row and the evaluation's. A phase reads each task on
from the tokens the steps before it read (research/data/pipeline.TrainData), so a run reads as
far into its data as one at a single length. The train step compiles once per shape.

This is sequence-length warm-up (Li et al. 2022, "The Stability-Efficiency Dilemma: Investigating
Sequence Length Warmup for Training GPT Models", arXiv 2108.06084): the first steps on short rows,
as EfficientTrain feeds a model the easier, smaller inputs first (Wang et al. 2023, "EfficientTrain:
Exploring Generalized Curriculum Learning for Training Visual Backbones", arXiv 2211.09703).
"""

import dataclasses
from collections.abc import Sequence

import ml_collections
import numpy as np

from research import errors, schedules


@dataclasses.dataclass(frozen=True)
class Shape:
  """The steps from `start` (to the next shape's) train on `batch_size` rows of `seq_len` tokens,
  as the phase `key` (phases.NAME; '' for the run's own shape) set them."""
  start: int
  seq_len: int
  batch_size: int
  key: str = ''

  @property
  def batch_key(self) -> str:
    """The config key of the batch size: train.batch_size, or the phase's."""
    return f'{self.key}.batch_size' if self.key else 'train.batch_size'


def shape_phases(config: ml_collections.ConfigDict) -> tuple[Shape, ...]:
  """The run's shape from step 0, then each phase's that changes it, by start (a phase from step 0
  comes after the run's own and replaces it); fails naming a bad phases.NAME.seq_len or
  phases.NAME.batch_size."""
  seq_len, batch_size = config.data.seq_len, config.train.batch_size
  shapes = [Shape(0, seq_len, batch_size)]
  for start, key, changes in schedules.phase_changes(config.phases, 'shape', config.train.steps):
    for name, value in changes.items():
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise errors.UserError(f'{key}.{name}={value!r} must be a positive integer (rows, or '
                               'tokens a row).')
    length = changes.get('seq_len', seq_len)
    if length > seq_len:
      raise errors.UserError(f'{key}.seq_len={length} is longer than data.seq_len={seq_len}, the '
                             "model's longest row and the evaluation's; set it to at most "
                             f'{seq_len}, or raise data.seq_len.')
    rows, rest = divmod(batch_size * seq_len, length)
    if 'batch_size' not in changes and rest:
      divisor = next(d for d in range(length, 0, -1) if batch_size * seq_len % d == 0)
      raise errors.UserError(
          f'{key}.seq_len={length} does not divide the {batch_size * seq_len} tokens of a step '
          f'(train.batch_size={batch_size} x data.seq_len={seq_len}) into whole rows; use a '
          f'length that does (e.g. {divisor}), or set {key}.batch_size.')
    shapes.append(Shape(start, length, changes.get('batch_size', rows), key))
  return tuple(shapes)


def shape_at(shapes: Sequence[Shape], step: int) -> Shape:
  """The shape of step `step`: the last of `shapes` (by start) to start at or before it."""
  return [shape for shape in shapes if shape.start <= step][-1]


def steps_before(starts: Sequence[int], step: int) -> np.ndarray:
  """int64 [len(starts)]: how many of the steps before `step` fall in each of the spans that start
  at `starts` (ascending; span i ends where span i + 1 starts, the last runs on)."""
  starts = np.asarray(starts, np.int64)
  return np.clip(np.minimum(np.append(starts[1:], step), step) - starts, 0, None)
