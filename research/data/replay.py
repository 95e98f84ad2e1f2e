"""Replay: the last rows of every batch re-read earlier data, at a fixed mixture or a power law.

`data.replay.fraction` of every batch (its last `round(fraction * train.batch_size)` rows) is
replay, drawn by `data.replay.sampler`:

- 'constant' (the default): the fixed mixture `data.replay.mixture` at every step, as continual
  pretraining with replay does (Ibrahim et al. 2024, "Simple and Scalable Strategies to Continually
  Pre-train Large Language Models", arXiv 2403.08763).
- 'power_law': the tasks of the earlier stages of the mixture schedule (`data.mixture`, then the
  stages of `data.stages`: a domain sequence such as prose -> code -> arithmetic). At step s each
  earlier domain j, a task some earlier stage trained and the current stage does not, has weight

      w_j(s) = (s - last_j + 1) ** -alpha / sum over the earlier domains k of the same,

  where last_j is the last step a stage trained j and alpha is `data.replay.exponent`: the
  probability of revisiting a task decays as a power law of the time since it was last seen
  (Gandhi et al. 2024, "Catastrophic Interference is Mitigated in Naturalistic Power-Law Learning
  Environments", arXiv 2401.10393). alpha = 0 replays every earlier domain equally (constant
  replay spread uniformly over the domains seen so far, the paper's uniform baseline). Replayed rows
  do not reset a domain's clock, so the weights are a function of the step alone and the batch of
  step s stays a pure function of (config, seed, s). They are recomputed every
  ceil(data.mixture_block / replay rows) steps (one block of replay examples), from the first of
  those steps, rounded to the exact per-block counts the sampler draws (research/data/sampler.py;
  a domain whose share rounds to no example of a block is left out until the next update): a run
  of S steps has about S * rows / data.mixture_block replay stages. While no earlier domain exists
  (stage 0, and any stage that still trains every earlier task), the batch is all current data:
  the main mixture fills the replay rows too, reading its tasks' next examples.

Each replayed task reads its examples from its first on, in its own order (the rows the main
stream read first), continuing across the run; the replay stream draws its slots with its own seed
stream (research/data/pipeline.py).
"""

import dataclasses
import math
from collections.abc import Mapping, Sequence

import ml_collections

from research import errors
from research.data import sampler as sampler_lib
from research.data import tasks

SAMPLERS = ('constant', 'power_law')


@dataclasses.dataclass(frozen=True)
class Streams:
  """The two streams of every batch: the main mixture schedule's rows per stage (its first rows)
  and the replay stages with their rows per stage (the last rows)."""
  main_rows: tuple[int, ...]
  replay: tuple[sampler_lib.Stage, ...]
  replay_rows: tuple[int, ...]
  num_replay: int  # the rows replay takes from a batch that has replay


def check(replay_config: ml_collections.ConfigDict, batch_size: int, num_stages: int) -> int:
  """Checks `data.replay` for a batch of `batch_size` rows and a schedule of `num_stages` stages
  (data.mixture and data.stages); returns the replay rows of a batch."""
  fraction = replay_config.fraction
  num_replay = round(fraction * batch_size)
  if not 0 <= fraction < 1 or (fraction > 0 and num_replay == 0):
    raise errors.UserError(f'data.replay.fraction={fraction} must be in [0, 1) and give at least '
                           f'one row of the batch of {batch_size} (or be 0).')
  if replay_config.sampler not in SAMPLERS:
    raise errors.UserError(f'data.replay.sampler={replay_config.sampler!r} must be one of '
                           f"{list(SAMPLERS)}: 'constant' replays data.replay.mixture, 'power_law' "
                           'the tasks of the earlier stages of data.stages.')
  exponent = replay_config.exponent
  if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or not (
      0 <= exponent < math.inf):
    raise errors.UserError(f'data.replay.exponent={exponent!r} must be a finite number >= 0: alpha '
                           'of the power law (s - last + 1)^-alpha (0 replays the earlier stages '
                           'equally).')
  if replay_config.sampler != 'power_law':
    return num_replay
  if len(replay_config.mixture):
    raise errors.UserError('data.replay.sampler=power_law replays the tasks of the earlier stages '
                           'of data.stages, so data.replay.mixture '
                           f'({dict(replay_config.mixture)}) would not be used; remove '
                           'data.replay.mixture, or set data.replay.sampler=constant.')
  if num_stages < 3:
    raise errors.UserError('data.replay.sampler=power_law needs data.stages with at least 2 '
                           f'stages (it has {num_stages - 1}): with fewer, at most one domain is '
                           'ever earlier and there is no power law to weigh; add stages, or replay '
                           'one domain with data.replay.sampler=constant and data.replay.mixture.')
  if not num_replay:
    raise errors.UserError('data.replay.sampler=power_law needs data.replay.fraction > 0 (the '
                           'share of every batch it replays); it is 0.')
  return num_replay


def power_law_weights(step: int, last_trained: Mapping[str, int],
                      exponent: float) -> dict[str, float]:
  """Each earlier domain's replay weight at `step`: (step - last + 1)^-exponent, normalised over
  `last_trained` (domain -> the last step a stage trained it, before `step`)."""
  raw = {name: (step - last + 1) ** -exponent for name, last in sorted(last_trained.items())}
  total = math.fsum(raw.values())
  return {name: value / total for name, value in raw.items()}


def streams(replay_config: ml_collections.ConfigDict, stages: Sequence[sampler_lib.Stage],
            batch_size: int, block_size: int, total_steps: int) -> Streams:
  """The main and replay streams of a run with mixture schedule `stages` (checked) and replay
  `replay_config` (checked here)."""
  num_replay = check(replay_config, batch_size, len(stages))
  if replay_config.sampler == 'constant':
    replay = (sampler_lib.Stage(0, tasks.expand_mixtures(dict(replay_config.mixture),
                                                         'data.replay.mixture')),
              ) if num_replay else ()
    return Streams((batch_size - num_replay,) * len(stages), replay,
                   (num_replay,) * len(replay), num_replay)
  sampler_lib.check_block_size(block_size)
  every = -(-block_size // num_replay)  # the steps of one block of replay examples
  ends = [stage.start_step for stage in stages[1:]] + [total_steps]
  main_rows, replay, replay_rows = [], [], []
  last_trained = {}
  for stage, end in zip(stages, ends):
    current = {name for name, weight in stage.weights.items() if weight > 0}
    earlier = {name: last for name, last in last_trained.items() if name not in current}
    if earlier:
      starts = range(stage.start_step, end, every)
      replay += [sampler_lib.Stage(start, sampler_lib.block_shares(
          power_law_weights(start, earlier, replay_config.exponent), block_size))
                 for start in starts]
      replay_rows += [num_replay] * len(starts)
    else:  # no replay rows (their weights read nothing): the main mixture fills the batch
      replay.append(stage)
      replay_rows.append(0)
    main_rows.append(batch_size - replay_rows[-1])
    last_trained.update({name: end - 1 for name in current})
  return Streams(tuple(main_rows), tuple(replay), tuple(replay_rows), num_replay)
