"""Orderings: the order in which a task's packed rows are read, epoch by epoch (`data.order.name`).

An ordering is a pure numpy function `(num_rows, seed, task_key, epoch, scores_N, **params) ->
rows`: the packed rows (indices into the task's rows) that epoch `epoch` of the task reads, in
order. It is deterministic in its arguments, so the batch at a step stays a function of the config
and the step (research/data/pipeline.py reads example j of a task from the epoch it falls in).
`scores_N` is one score per packed row (lower = easier; None for orderings that use none), made
from per-document scores by `row_scores`. Ties between equal scores are broken by the epoch's
seeded random permutation (`random_order`), so rows of equal score are read in a fresh random
order every epoch.

- `random`: a fresh seeded permutation every epoch, each row's place computed alone
  (`random_rows`), so a task of any size starts at once.
- `easy_to_hard` / `hard_to_easy`: every row once per epoch, by ascending / descending score.
- `folding` (DELT: Dai et al. 2025, "Data Efficacy for Language Model Training", arXiv
  2506.21545): sort by ascending score, then concatenate L = `data.order.folds` folds, fold f taking
  the sorted positions f, f + L, f + 2L, ...: L ascending easy-to-hard passes, each over a
  disjoint, evenly spread 1/L slice of the rows; nothing repeated or dropped.
- `cyclical` (Kesgin & Amasyali, "Cyclical Curriculum Learning", arXiv 2202.05531): epoch e reads
  the floor(S_e * num_rows) (at least 1) easiest rows, in a seeded random order; the data-size
  fraction S_e cycles between `data.order.cyclical.start` and `data.order.cyclical.end`, divided
  by `data.order.cyclical.factor` per epoch on the way up and multiplied by it on the way down
  (`cycle_fractions`; 0.25, 0.5, 1, 0.5, 0.25, 0.5, 1, ... by default). Its epochs are shorter than
  the task's rows by design (the harder rows are left out of the small epochs), and their lengths
  (`Ordering.epoch_lengths`) are periodic, so which epoch example j falls in is computed in closed
  form and resumption stays exact. The paper draws each epoch's subset at random with probability
  proportional to an easiness score; here the subset is the easiest fraction, deterministically.
- `pacing` (competence-based curricula: Platanios et al. 2019, "Competence-based Curriculum
  Learning for Neural Machine Translation", arXiv 1903.09848; Hacohen & Weinshall 2019, "On The
  Power of Curriculum Learning in Training Deep Networks", arXiv 1904.03626): a sampled ordering,
  not a permutation. The rows are ranked by ascending score once (`easy_to_hard` of epoch 0); at
  training step s the pool is the easiest max(1, ceil(c(s) * num_rows)) rows, and every example
  read at step s is a seeded uniform draw from the pool, with replacement (`paced_positions`: a
  pure function of the seed, the task, the example and the step, so resumption stays exact). The
  competence c(s) (`competence`) is `data.order.pacing.function`: 'linear' c0 + (1 - c0) s / T,
  'root' (s (1 - c0^p) / T + c0^p)^(1/p) (Platanios' sqrt for p = `power` = 2) or 'step', Hacohen
  & Weinshall's fixed exponential pacing c0 * increase^floor(s / step_length); each capped at 1.
  c0 = `data.order.pacing.start`; T = `data.order.pacing.steps`, the step from which every row is
  in the pool (a float in (0, 1): that fraction of train.steps; the default 0.5 is half the run);
  step_length 0 (the default) spaces the increases so that the pool is full by T.
- `rs2` (RS2 without replacement: Okanovic et al. 2023, "Repeated Random Sampling for Minimizing
  the Time-to-Accuracy of Learning", arXiv 2305.18424): every epoch reads a fresh random subset of
  k = round(`data.order.rs2.fraction` * num_rows) rows (at least 1), in random order, and no row
  is read again before every row has been: epoch e reads positions [e k, (e + 1) k) of a stream
  of seeded permutations of the rows, permutation p being the `random` ordering's epoch p
  (`random_rows`, so fraction 1 is the `random` ordering). When k does not divide num_rows, the
  epoch that straddles two permutations reads the end of one and the start of the next (a row
  may then appear twice in it). An epoch here is one RS2 round; the rows a run reads are
  train.steps' worth, as with any ordering. The paper's variant with replacement (each round an
  independent subset) is not implemented.

Before packing, `data.order.pack` orders the documents (research/data/packing.py): 'random' (the
default, a seeded permutation), 'score' (ascending `data.order.by`, so a row holds documents of
similar score and its row score spreads as its documents' do; with the random order, rows mix all
difficulties and score orderings are washed out) or 'in_context' (ICLM's path through similar
documents, research/data/in_context.py, keys `data.order.in_context`).

Scores, of the orderings and of 'score' packing, come from `document_scores`, named by
`data.order.by`: a field of the document store's per-document metadata (`difficulty`, which the
synthetic generators write) or, as 'SCORES:FIELD', a score that `python -m launch.score` computed
(research/data/score_files.py), e.g. 'ref:el2n'.
"""

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import grain
import ml_collections
import numpy as np

from research import errors
from research.data import in_context as in_context_lib
from research.data import packing, score_files
from research.data import store as store_lib

_EPOCH_STREAM = 0x65706f63  # seeded-stream tag of the row orders (random_order's stream)
_SUBSET_STREAM = 0x6379636c  # seeded-stream tag of the order within a cyclical epoch
_DRAW_STREAM = 0x70616365  # seeded-stream tag of the pacing ordering's draws
_ROUNDS = 4  # Feistel rounds of random_rows' permutation
_MAX_CYCLE = 10_000  # the most epochs one period of the cyclical sizes may take
ROW_SCORES = ('mean', 'max', 'min')  # `data.order.row_score`: a row's score from its documents'
PACK_ORDERS = ('random', 'score', 'in_context')  # `data.order.pack`: the documents' order to pack
PACING_FUNCTIONS = ('linear', 'root', 'step')  # `data.order.pacing.function`
_PACING_KEYS = {'function', 'start', 'steps', 'power', 'increase', 'step_length'}


def random_rows(num_rows: int, seed: int, task_key: int, epoch: int,
                positions_J: np.ndarray) -> np.ndarray:
  """int64 [J]: the rows at positions `positions_J` of epoch `epoch`'s seeded permutation of a
  task's `num_rows` rows, each computed alone (Grain's index_shuffle, a Feistel permutation), so
  no epoch order of a large task is ever held in memory."""
  key = int(np.random.SeedSequence([_EPOCH_STREAM, seed, task_key, epoch]).generate_state(1)[0])
  return np.array([grain.experimental.index_shuffle(int(p), num_rows - 1, key, _ROUNDS)
                   for p in positions_J], np.int64)


def random_order(num_rows: int, seed: int, task_key: int, epoch: int,
                 scores_N: np.ndarray | None = None) -> np.ndarray:
  """A fresh seeded permutation of a task's rows in every epoch: `random_rows` of every row."""
  del scores_N  # unused
  return random_rows(num_rows, seed, task_key, epoch, np.arange(num_rows))


def easy_to_hard(num_rows: int, seed: int, task_key: int, epoch: int,
                 scores_N: np.ndarray) -> np.ndarray:
  """Every row once, by ascending score; ties in the epoch's random order."""
  shuffled = random_order(num_rows, seed, task_key, epoch)
  return shuffled[np.argsort(scores_N[shuffled], kind='stable')]


def hard_to_easy(num_rows: int, seed: int, task_key: int, epoch: int,
                 scores_N: np.ndarray) -> np.ndarray:
  """Every row once, by descending score; ties in the epoch's random order."""
  shuffled = random_order(num_rows, seed, task_key, epoch)
  return shuffled[np.argsort(-scores_N[shuffled], kind='stable')]


def fold(sorted_rows: np.ndarray, folds: int) -> np.ndarray:
  """DELT's folding of an ascending order: fold f = sorted positions f, f + L, ...; concatenated."""
  return np.concatenate([sorted_rows[f::folds] for f in range(folds)])


def folding(num_rows: int, seed: int, task_key: int, epoch: int, scores_N: np.ndarray,
            folds: int = 3) -> np.ndarray:
  """DELT's folding ordering (arXiv 2506.21545) with `folds` folds over the ascending order."""
  return fold(easy_to_hard(num_rows, seed, task_key, epoch, scores_N), folds)


@functools.lru_cache(maxsize=64)
def cycle_fractions(start: float, end: float, factor: float) -> tuple[float, ...]:
  """One period of the cyclical curriculum's data-size fractions, from `start` up to `end` and
  back down to just above `start` (the next period starts at `start` again).

  The rule of the paper's code (`get_cycle_sizes`), float for float: from n = start, n =
  min(n * (1 / factor), end) when n is `start` or the sizes are rising and n is not `end`, else
  n = max(n * factor, start).
  """
  sizes = [start]
  while True:
    n = sizes[-1]
    rising = len(sizes) > 1 and sizes[-2] < sizes[-1]
    if n == start or (rising and n != end):
      n = min(n * (1 / factor), end)
    else:
      n = max(n * factor, start)
    if n == start:
      return tuple(sizes)
    sizes.append(n)
    if len(sizes) > _MAX_CYCLE:
      raise errors.UserError(f'data.order.cyclical (start={start}, end={end}, factor={factor}) '
                             f'takes over {_MAX_CYCLE} epochs per cycle; use a smaller factor.')


def cyclical_sizes(num_rows: int, start: float = 0.25, end: float = 1.0,
                   factor: float = 0.5) -> list[int]:
  """Rows read by each epoch of one period of the cyclical curriculum: floor(S_e * num_rows), at
  least 1."""
  return [max(1, math.floor(f * num_rows)) for f in cycle_fractions(start, end, factor)]


def cyclical(num_rows: int, seed: int, task_key: int, epoch: int, scores_N: np.ndarray,
             start: float = 0.25, end: float = 1.0, factor: float = 0.5) -> np.ndarray:
  """Cyclical curriculum (arXiv 2202.05531): the easiest floor(S_e * num_rows) rows of epoch e,
  in the epoch's random order; S_e cycles as `cycle_fractions` says."""
  sizes = cyclical_sizes(num_rows, start, end, factor)
  size = sizes[epoch % len(sizes)]
  easiest = easy_to_hard(num_rows, seed, task_key, epoch, scores_N)[:size]
  return easiest[np.random.default_rng([_SUBSET_STREAM, seed, task_key, epoch]).permutation(size)]


def rs2_sizes(num_rows: int, fraction: float = 0.1) -> list[int]:
  """Rows read by every epoch of the rs2 ordering: [round(fraction * num_rows)], at least 1."""
  return [max(1, round(fraction * num_rows))]


def rs2(num_rows: int, seed: int, task_key: int, epoch: int, scores_N: np.ndarray | None = None,
        fraction: float = 0.1) -> np.ndarray:
  """RS2 without replacement (arXiv 2305.18424): epoch `epoch`'s k rows, positions [e k,
  (e + 1) k) of the stream of `random_rows` permutations (permutation p = random epoch p)."""
  del scores_N  # unused
  size, = rs2_sizes(num_rows, fraction)
  passes_J, positions_J = np.divmod(epoch * size + np.arange(size), num_rows)
  return np.concatenate([random_rows(num_rows, seed, task_key, int(p), positions_J[passes_J == p])
                         for p in np.unique(passes_J)])


def _increases(start: float, increase: float) -> int:
  """How many times the step pacing multiplies `start` by `increase` until it reaches 1."""
  return math.ceil(math.log(1 / start) / math.log(increase))


def competence(step: int, function: str, start: float, full_at: int, power: float,
               increase: float, step_length: int) -> float:
  """The pacing function c(step) in (0, 1]: the fraction of the rows, easiest first, that the
  `pacing` ordering draws from at training step `step` (`function` of the module docstring, c0 =
  `start`, T = `full_at`), capped at 1."""
  if function == 'linear':
    c = start + (1 - start) * step / full_at
  elif function == 'root':
    c = (step * (1 - start**power) / full_at + start**power) ** (1 / power)
  else:
    c = start * increase ** min(step // step_length, _increases(start, increase))
  return min(1.0, c)


def pool_size(num_rows: int, step: int, **pacing) -> int:
  """How many of the easiest rows the `pacing` ordering draws from at `step`:
  max(1, ceil(c(step) * num_rows))."""
  return max(1, math.ceil(competence(step, **pacing) * num_rows))


def paced_positions(num_rows: int, seed: int, task_key: int, examples_J: np.ndarray, step: int,
                    **pacing) -> np.ndarray:
  """int64 [J]: the position, in the rows ranked by ascending score, of the row each task-local
  example `examples_J` of step `step` reads: a uniform draw from the first `pool_size` positions,
  seeded by (seed, task, example, step) alone."""
  size = pool_size(num_rows, step, **pacing)
  return np.array([np.random.default_rng([_DRAW_STREAM, seed, task_key, j, step]).integers(size)
                   for j in examples_J.tolist()], np.int64)


def _folds(config: ml_collections.ConfigDict, total_steps: int) -> dict[str, Any]:
  del total_steps  # unused
  folds = config.folds
  if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
    raise errors.UserError(f'data.order.folds={folds!r} must be a positive integer (DELT uses 3).')
  return {'folds': folds}


def _cyclical(config: ml_collections.ConfigDict, total_steps: int) -> dict[str, Any]:
  del total_steps  # unused
  params = dict(config.cyclical)
  if set(params) != {'start', 'end', 'factor'}:
    raise errors.UserError(f'data.order.cyclical={params!r} must have exactly the keys start, end '
                           'and factor.')
  numbers = all(not isinstance(v, bool) and isinstance(v, (int, float)) for v in params.values())
  if not numbers or not 0 < params['start'] <= params['end'] <= 1 or not 0 < params['factor'] < 1:
    raise errors.UserError(f'data.order.cyclical={params!r} needs 0 < start <= end <= 1 and 0 < '
                           'factor < 1 (the paper: start=0.25, end=1.0, factor=0.5).')
  params = {k: float(v) for k, v in params.items()}
  cycle_fractions(**params)  # fails now on a cycle too long
  return params


def _rs2(config: ml_collections.ConfigDict, total_steps: int) -> dict[str, Any]:
  del total_steps  # unused
  params = dict(config.rs2)
  fraction = params.get('fraction')
  if set(params) != {'fraction'} or not _number(fraction) or not 0 < fraction <= 1:
    raise errors.UserError(f'data.order.rs2={params!r} must have exactly the key fraction, in '
                           '(0, 1]: the share of the rows each epoch reads (e.g. 0.1).')
  return {'fraction': float(fraction)}


def _number(value) -> bool:
  return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _pacing(config: ml_collections.ConfigDict, total_steps: int) -> dict[str, Any]:
  """`competence`'s keyword arguments from data.order.pacing, T resolved against `total_steps`."""
  params = dict(config.pacing)
  if set(params) != _PACING_KEYS:
    raise errors.UserError(f'data.order.pacing={params!r} must have exactly the keys '
                           f'{sorted(_PACING_KEYS)}.')
  function, start, steps = params['function'], params['start'], params['steps']
  power, increase, step_length = params['power'], params['increase'], params['step_length']
  if function not in PACING_FUNCTIONS:
    raise errors.UserError(f'data.order.pacing.function={function!r} must be one of '
                           f'{list(PACING_FUNCTIONS)}.')
  if not _number(start) or not 0 < start <= 1:
    raise errors.UserError(f'data.order.pacing.start={start!r} must be in (0, 1]: the fraction of '
                           'the rows drawn from at step 0 (c0; 0.1 by default).')
  if not _number(steps) or steps <= 0 or (steps >= 1 and steps != int(steps)):
    raise errors.UserError(f'data.order.pacing.steps={steps!r} must be a fraction of train.steps '
                           'in (0, 1) or a whole number of steps >= 1: T, the step from which '
                           'every row is drawn from (0.5 by default: half the run).')
  if not _number(power) or power <= 0:
    raise errors.UserError(f'data.order.pacing.power={power!r} must be a positive number (the '
                           "root pacing's p; 2, Platanios et al.'s square root, by default).")
  if not _number(increase) or increase <= 1:
    raise errors.UserError(f'data.order.pacing.increase={increase!r} must be a number > 1 (the '
                           "step pacing's factor per step_length steps).")
  if isinstance(step_length, bool) or not isinstance(step_length, int) or step_length < 0:
    raise errors.UserError(f'data.order.pacing.step_length={step_length!r} must be an integer >= 0 '
                           '(0: the increases spaced so that every row is drawn from by step T).')
  full_at = int(steps) if steps >= 1 else max(1, round(steps * total_steps))
  if not step_length:
    step_length = max(1, full_at // max(1, _increases(start, increase)))
  return {'function': function, 'start': float(start), 'full_at': full_at, 'power': float(power),
          'increase': float(increase), 'step_length': step_length}


@dataclasses.dataclass(frozen=True)
class Ordering:
  """An ordering by name: its function, whether it reads row scores, the config keys it reads
  (`params`: config.data.order and train.steps -> keyword arguments, checking them), for orderings
  whose epochs are not the task's rows the lengths of one period of epochs (num_rows, **params ->
  lengths), and for a sampled ordering `draw` ((num_rows, seed, task_key, examples_J, step,
  **params) -> positions_J): the position in `order`'s one order (epoch 0) that each task-local
  example of a step reads; `params` go to `draw` then, not to `order`."""
  order: Callable[..., np.ndarray]
  uses_scores: bool
  params: Callable[[ml_collections.ConfigDict, int], dict[str, Any]] = lambda config, steps: {}
  epoch_lengths: Callable[..., list[int]] | None = None
  draw: Callable[..., np.ndarray] | None = None


# Orderings by name (config key `data.order.name`).
ORDERINGS: dict[str, Ordering] = {
    'random': Ordering(random_order, uses_scores=False),
    'easy_to_hard': Ordering(easy_to_hard, uses_scores=True),
    'hard_to_easy': Ordering(hard_to_easy, uses_scores=True),
    'folding': Ordering(folding, uses_scores=True, params=_folds),
    'cyclical': Ordering(cyclical, uses_scores=True, params=_cyclical,
                         epoch_lengths=cyclical_sizes),
    'pacing': Ordering(easy_to_hard, uses_scores=True, params=_pacing, draw=paced_positions),
    'rs2': Ordering(rs2, uses_scores=False, params=_rs2, epoch_lengths=rs2_sizes),
}


@dataclasses.dataclass(frozen=True)
class BoundOrdering:
  """The data order that config names: the ordering of `data.order.name` with its parameters,
  and the order of the documents before packing (`data.order.pack`, `data.order.in_context`)."""
  name: str
  order: Callable[[int, int, int, int, np.ndarray | None], np.ndarray]
  # The per-document score (`data.order.by`) that the ordering or 'score' packing reads; None for
  # none.
  score: str | None
  row_score: str
  pack_order: str
  in_context: in_context_lib.Config | None  # data.order.in_context, for pack 'in_context'
  _epoch_lengths: Callable[..., list[int]] | None
  _draw: Callable[..., np.ndarray] | None

  @property
  def score_key(self) -> str:
    """How errors name the config keys that ask for the score."""
    reader = (f'data.order.name={self.name!r}' if ORDERINGS[self.name].uses_scores else
              f'data.order.pack={self.pack_order!r}')
    return f'data.order.by={self.score!r} ({reader})'

  def epoch_lengths(self, num_rows: int) -> np.ndarray:
    """int64 [P]: rows read by each epoch of one period of epochs (P = 1 and [num_rows] for an
    ordering that reads every row once per epoch)."""
    if self._epoch_lengths is None:
      return np.array([num_rows], np.int64)
    return np.array(self._epoch_lengths(num_rows), np.int64)

  def locate(self, examples_J: np.ndarray, num_rows: int, step: int, seed: int,
             task_key: int) -> tuple[np.ndarray, np.ndarray]:
    """(epoch, position in that epoch's `order`) of each task-local example `examples_J` of step
    `step` of a task with `num_rows` rows: by the periodic epoch lengths (`locate`), or for a
    sampled ordering, drawn in its one order (epoch 0)."""
    if self._draw is None:
      return locate(examples_J, self.epoch_lengths(num_rows))
    return np.zeros_like(examples_J), self._draw(num_rows, seed, task_key, examples_J, step)

  def rows(self, num_rows: int, seed: int, task_key: int, epoch: int, positions_J: np.ndarray,
           order: Callable[[], np.ndarray]) -> np.ndarray:
    """int64 [J]: the rows at positions `positions_J` of epoch `epoch`'s order: computed alone for
    'random' (`random_rows`), else read from that epoch's `order()` (the caller caches it)."""
    if self.name == 'random':
      return random_rows(num_rows, seed, task_key, epoch, positions_J)
    return order()[positions_J]

  def document_order(self, store: store_lib.DocumentStore, seed: int,
                     scores_D: np.ndarray | None) -> np.ndarray:
    """int64 [num_documents]: the order in which packing visits the documents of `store`
    (`data.order.pack`); `scores_D` are their scores for 'score'."""
    if self.pack_order == 'score':
      return packing.by_score(scores_D, seed)
    if self.pack_order == 'in_context':
      return in_context_lib.document_order(store, self.in_context, seed)
    return packing.random_documents(store.num_documents, seed)


def bind(order_config: ml_collections.ConfigDict, total_steps: int) -> BoundOrdering:
  """The data order that `order_config` (config.data.order) names: `data.order.name` and
  `data.order.pack`, their keys checked against a run of `total_steps` steps; fails naming a bad
  key."""
  name, pack_order = order_config.name, order_config.pack
  if name not in ORDERINGS:
    raise errors.UserError(f'data.order.name={name!r} is not a known ordering; choose one of '
                           f'{sorted(ORDERINGS)}.')
  if pack_order not in PACK_ORDERS:
    raise errors.UserError(f'data.order.pack={pack_order!r} is not a known document order; '
                           f'choose one of {list(PACK_ORDERS)}.')
  ordering = ORDERINGS[name]
  params = ordering.params(order_config, total_steps)
  score = None
  if ordering.uses_scores or pack_order == 'score':
    score = order_config.by
    reader = (f'data.order.name={name!r} orders rows' if ordering.uses_scores else
              "data.order.pack='score' orders documents")
    if not isinstance(score, str) or not score_files.parse(score)[1]:
      raise errors.UserError(f'data.order.by={score!r} must name a per-document score, a '
                             "metadata field such as 'difficulty' or a computed score "
                             f"SCORES:FIELD such as 'ref:nll' ({reader} by it).")
    if order_config.row_score not in ROW_SCORES:
      raise errors.UserError(f'data.order.row_score={order_config.row_score!r} must be one of '
                             f'{list(ROW_SCORES)}.')
  in_context = in_context_lib.bind(order_config) if pack_order == 'in_context' else None
  lengths = ordering.epoch_lengths and functools.partial(ordering.epoch_lengths, **params)
  if ordering.draw is None:
    order, draw = functools.partial(ordering.order, **params), None
  else:
    order, draw = ordering.order, functools.partial(ordering.draw, **params)
  return BoundOrdering(name, order, score, order_config.row_score, pack_order, in_context,
                       lengths, draw)


def locate(examples: np.ndarray, epoch_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(epoch, position within the epoch) of each task-local example index, for epochs whose
  lengths repeat with period `epoch_lengths`."""
  ends = np.cumsum(epoch_lengths)
  cycles, rest = np.divmod(examples, ends[-1])
  in_cycle = np.searchsorted(ends, rest, side='right')
  return cycles * len(epoch_lengths) + in_cycle, rest - (ends - epoch_lengths)[in_cycle]


def document_scores(store: store_lib.DocumentStore, score: str, task_name: str,
                    key: str) -> np.ndarray:
  """float64 [num_documents]: score `score` of every document of a task's store, in store order.

  `score` is a score reference (research/data/score_files.py): 'FIELD', a field of the store's
  per-document metadata (the synthetic generators label `difficulty`), or 'SCORES:FIELD', a field
  of a score file that `python -m launch.score` wrote (stored next to the store under the name
  SCORES, or at the path SCORES), checked to score this task's store in this vocabulary. `key`
  names the config key that asks for the score (e.g. "data.order.by='ref:nll'") in every error.
  A score that was not computed fails naming it and the command that computes it.
  """
  scores, field = score_files.parse(score)
  if scores is not None:
    return score_files.read(store, task_name, scores, field, key)
  metadata = store.metadata
  missing = [i for i, m in enumerate(metadata) if score not in m]
  if missing:
    keys = sorted({k for m in metadata for k in m})
    raise errors.UserError(
        f'{key}: task {task_name!r} has no per-document score {score!r} ({len(missing)} of its '
        f'{len(metadata)} training documents lack it; its metadata has {keys}). A bare name is '
        "read from the document metadata that the task's source writes (the arithmetic and lego "
        "generators label 'difficulty'); a computed score is named SCORES:FIELD, e.g. "
        f"'ref:{score}' once python -m launch.score --checkpoint=DIR --task={task_name} "
        '--name=ref has written it next to the store (research/data/score_files.py).')
  values = [m[score] for m in metadata]
  bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, float))
         or not math.isfinite(v)]
  if bad:
    raise errors.UserError(f'{key}: task {task_name!r} has non-numeric or non-finite {score!r} '
                           f'values such as {bad[0]!r}; use a numeric per-document score.')
  return np.array(values, np.float64)


def row_scores(documents_RL: np.ndarray, scores_D: np.ndarray, how: str = 'mean') -> np.ndarray:
  """float64 [R]: each packed row's score from its documents' scores: the mean, max or min over
  the distinct documents with a token in the row (each counted once, whatever its length; a
  document split across rows counts in each). `documents_RL` is packing's `documents` (-1 on
  padding); a row without documents scores 0."""
  num_rows = len(documents_RL)
  rows_T = np.repeat(np.arange(num_rows, dtype=np.int64), documents_RL.shape[1])
  docs_T = documents_RL.reshape(-1).astype(np.int64)
  real = docs_T >= 0
  pairs = np.unique(rows_T[real] * len(scores_D) + docs_T[real])  # sorted by row
  rows_P, docs_P = np.divmod(pairs, len(scores_D))
  counts = np.bincount(rows_P, minlength=num_rows)
  if how == 'mean':
    sums = np.bincount(rows_P, weights=scores_D[docs_P], minlength=num_rows)
    return sums / np.maximum(counts, 1)
  reduce = {'max': np.maximum, 'min': np.minimum}[how]
  out = np.zeros(num_rows, np.float64)
  starts = np.cumsum(counts) - counts
  present = counts > 0
  if present.any():
    out[present] = reduce.reduceat(scores_D[docs_P], starts[present])
  return out
