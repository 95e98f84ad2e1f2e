"""The stateless batch source: the batch at step s is a pure function of (config.data, seed, s).

Training resumes at any step, on any number of hosts, with no iterator state to checkpoint.

The rows of a global batch come from two streams: the main mixture schedule (`data.mixture`, then
the stages of `data.stages`) and, when `data.replay.fraction` > 0, replay that fills that fraction
of every batch (the last rows) with a fixed mixture or a power law over the earlier stages' tasks
(research/data/replay.py, `data.replay.sampler`). research/data/sampler.py
decides which task-local example each row is (Skill-it, research/data/skillit.py, appends stages to
the main schedule as it trains); example j of a task with N packed rows reads row
`order(epoch=j // N)[j % N]`, where `order` is the ordering function named by `data.order.name`
(research/data/orderings.py; a fresh seeded permutation per epoch by default, or an order by a
per-row score). An ordering whose epochs read fewer rows by design (`cyclical`) has epoch lengths
that repeat with a period, and j falls in the epoch that their running sum gives; a sampled
ordering (`pacing`) reads, for example j at step s, a row drawn from a pool that grows with s.
Row orders are seeded by the task's name, not its position in a mixture, so adding a task leaves
the other tasks' row order alone. Before packing, `data.select` may keep only part of a task's
training documents by a per-document score (research/data/selection.py); the task's rows, stores
and row scores are then those of the kept documents. Packing visits a task's documents in the
order of `data.order.pack`: a seeded permutation, ascending score, or in-context pretraining's
path through similar documents (research/data/in_context.py).

Every task's packed rows, their scores and their order are research/data/task_rows.py's: read by
index from a rows store, or packed here from the whole task for the features that need it.

The objective (research/objectives/registry.py) decides how documents are packed and turns each
batch of packed rows into the model's examples. For causal LM every batch is a dict of
[batch_size, seq_len] arrays: int32 `targets`, `segment_ids`, `positions` (see packing.py),
`inputs` (targets shifted right within each segment; see research/objectives/causal_lm.py) and
float32 `weights` (1 on tokens, 0 on padding); denoising objectives add `prefix` (decoder) or the
`encoder_*` rows (encoder-decoder).
"""

import bisect
import dataclasses
import functools

from collections.abc import Callable, Iterator, Sequence

import grain
import ml_collections
import numpy as np

from research import errors, schedules

from research.data import skillit
from research.data import orderings as orderings_lib
from research.data import probes as probes_lib
from research.data import replay as replay_lib
from research.data import rows as rows_lib
from research.data import sampler as sampler_lib
from research.data import selection as selection_lib
from research.data import shapes as shapes_lib
from research.data import store as store_lib
from research.data import task_rows, tasks, vocabularies
from research.objectives import registry

_MAIN_STREAM, _REPLAY_STREAM = 0x6d61696e, 0x7265706c
_STAGE_KEYS = {'at_step', 'at_fraction', 'mixture'}


# Orderings by name (config key `data.order.name`), defined in research/data/orderings.py.
ORDERINGS = orderings_lib.ORDERINGS
random_order = orderings_lib.random_order


def _check_seed(seed: int) -> None:
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise errors.UserError(f'seed={seed!r} must be a non-negative integer.')


def mixture_schedule(data_config: ml_collections.ConfigDict,
                     total_steps: int) -> list[sampler_lib.Stage]:
  """Stage 0 (`data.mixture` from step 0) and the stages of `data.stages`, ordered by start step.

  A stage starts `at_step` (an int) or `at_fraction` of `train.steps` (a float in (0, 1)), exactly
  one of the two, and must start inside the run.
  """
  stages = [sampler_lib.Stage(0, tasks.expand_mixtures(dict(data_config.mixture), 'data.mixture'))]
  for name, stage in data_config.stages.items():
    key = f'data.stages.{name}'
    if not isinstance(stage, ml_collections.ConfigDict) or not set(stage.keys()) <= _STAGE_KEYS:
      raise errors.UserError(f'{key} must be a ConfigDict with keys from {sorted(_STAGE_KEYS)} (a '
                             "start, at_step=int or at_fraction=float, and a mixture), got "
                             f'{stage!r}.')
    start = schedules.start_step(stage, key, total_steps)
    if 'mixture' not in stage:
      raise errors.UserError(f'{key} has no mixture; set {key}.mixture to task weights.')
    stages.append(sampler_lib.Stage(start, tasks.expand_mixtures(dict(stage.mixture),
                                                                 f'{key}.mixture')))
  stages.sort(key=lambda s: s.start_step)
  starts = [s.start_step for s in stages]
  if len(set(starts)) != len(starts):
    raise errors.UserError(f'Two entries of data.stages start at the same step ({starts}); give '
                           'each stage its own start.')
  return stages


@dataclasses.dataclass(frozen=True)
class MixturePlan:
  """The checked mixtures of a run: main stages, replay stages and rows, and every task named."""
  stages: list[sampler_lib.Stage]
  replay: list[sampler_lib.Stage]  # research/data/replay.py
  num_replay: int  # the rows of a batch that replay takes where it replays
  main_rows: tuple[int, ...]  # the main stream's rows of each step of each of `stages`
  replay_rows: tuple[int, ...]  # the replay stream's rows of each step of each of `replay`
  task_names: list[str]
  selection: selection_lib.Selection | None = None  # data.select; None keeps every document
  online: skillit.Config | None = None  # data.skillit (Skill-it online mixing); None: off
  probes: tuple[probes_lib.ProbeSpec, ...] = ()  # data.probes (knowledge-injection probes)


def mixture_plan(data_config: ml_collections.ConfigDict, batch_size: int,
                 total_steps: int) -> MixturePlan:
  """Registers `data.tasks`, checks the mixtures, replay, ordering and probes; reads no data."""
  orderings_lib.bind(data_config.order, total_steps)  # fails naming a bad data.order key
  online = skillit.bind(data_config)  # fails naming a bad data.skillit key
  tasks.register_config_tasks(data_config)
  stages = mixture_schedule(data_config, total_steps)
  main_tasks = sampler_lib.schedule_tasks(stages, 'data.mixture')
  streams = replay_lib.streams(data_config.replay, stages, batch_size, data_config.mixture_block,
                               total_steps)
  names = sorted(main_tasks | sampler_lib.schedule_tasks(streams.replay, 'data.replay.mixture'))
  for name in names:
    tasks.check_task(name)
  for name in online.eval_tasks if online else []:
    tasks.check_task(name, 'data.skillit.eval_tasks')
  probes = probes_lib.probe_specs(data_config, total_steps, set(names))
  return MixturePlan(stages, list(streams.replay), streams.num_replay, streams.main_rows,
                     streams.replay_rows, names, selection_lib.bind(data_config, names), online,
                     tuple(probes))


def run_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """Every task run `config` reads: its mixtures, replay, probes, eval tasks, multiple-choice
  tasks and Skill-it's."""
  plan = mixture_plan(config.data, config.train.batch_size, config.train.steps)
  return list(dict.fromkeys([*plan.task_names, *(probe.task for probe in plan.probes),
                             *config.eval.tasks, *config.eval.multiple_choice.tasks,
                             *(plan.online.eval_tasks if plan.online else ())]))


def prepare_stores(config: ml_collections.ConfigDict) -> None:
  """Makes sure the train and validation stores of every task of run `config`, and the rows stores
  its objectives train on, are built: small ones are built now, a missing large one stops the run
  naming the launch.build_data command."""
  store_lib.prepare([(task, split) for task in run_tasks(config) for split in tasks.SPLITS],
                    config.data.vocabulary, config.data.store_dir)
  for task, recipe in row_stores(config):
    rows_lib.prepare(task, config.data.vocabulary, config.data.store_dir, recipe)


def row_stores(config: ml_collections.ConfigDict) -> list[tuple[str, rows_lib.Recipe]]:
  """(task, packing recipe) of every rows store (research/data/rows.py) run `config` reads: the
  tasks no whole-task feature reads, packed for each objective the run trains with (its
  `config.phases` may switch it)."""
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  plan = mixture_plan(config.data, config.train.batch_size, config.train.steps)
  ordering = orderings_lib.bind(config.data.order, config.train.steps)
  stores = {}
  for _, objective in registry.objective_phases(config, vocabulary):
    recipe = rows_lib.recipe(objective)
    for name in plan.task_names:
      if not task_rows.whole_task_feature(name, ordering, plan.selection, objective):
        stores[(name, recipe.key)] = (name, recipe)
  return list(stores.values())


@dataclasses.dataclass(frozen=True)
class Phase:
  """The steps from `start` on (up to the next phase): their objective, the tasks' rows packed for
  it, the probes' rows and the rows of a batch (`batch_size`, research/data/shapes.py)."""
  start: int
  objective: registry.Objective
  rows: task_rows.TaskRows
  probes: list
  batch_size: int


def stream_rows(data_config: ml_collections.ConfigDict, plan: MixturePlan,
                shapes: Sequence[shapes_lib.Shape]) -> list[list[tuple[int, int]]]:
  """The (first step, rows per step) spans of the main stream and of replay (if any), from the
  starts of their stages and of the batch `shapes` (the run's, then its phases'): a phase's batch
  keeps replay's share (data.replay.fraction of its rows, at the steps the run replays at);
  fails naming a phase whose batch gives replay no row."""
  batch_size = shapes[0].batch_size
  replay = {batch_size: plan.num_replay}
  for shape in shapes[1:]:
    try:
      replay[shape.batch_size] = replay_lib.check(data_config.replay, shape.batch_size,
                                                  len(plan.stages))
    except errors.UserError as error:
      raise errors.UserError(f'{shape.batch_key}={shape.batch_size}: {error}') from error
  streams = [(plan.stages, [rows < batch_size for rows in plan.main_rows], True)]
  if plan.replay:
    streams.append((plan.replay, [rows > 0 for rows in plan.replay_rows], False))
  spans = []
  for stages, replays, main in streams:  # replays: whether each stage has replay rows
    starts = [stage.start_step for stage in stages]
    spans.append([])
    for step in sorted({*starts, *(shape.start for shape in shapes)}):
      shape = shapes_lib.shape_at(shapes, step)
      replayed = replay[shape.batch_size] if replays[bisect.bisect(starts, step) - 1] else 0
      spans[-1].append((step, shape.batch_size - replayed if main else replayed))
  return spans


class TrainData:
  """Training batches of a mixture schedule (and replay), addressable by step.

  Loads (building on first use) and packs the train split of every task named in any stage once
  (`rows`, research/data/task_rows.TaskRows); `batch(step)` is then cheap and depends only on
  (data_config, seed, step): the mixture samplers pick each row's task and example, the ordering
  its packed row. The knowledge-injection probes of `data.probes` (research/data/probes.py) take
  the first rows of the batches of their steps. `plan` is the mixture plan config.validate built
  (else built here). `phases` ((start, objective), registry.objective_phases) switch the objective
  or the rows' length, `shapes` (research/data/shapes.shape_phases; default: `batch_size` rows
  throughout) the batch's rows.
  """

  def __init__(self, data_config: ml_collections.ConfigDict, batch_size: int, seed: int,
               total_steps: int, objective: registry.Objective | None = None,
               plan: MixturePlan | None = None,
               phases: Sequence[tuple[int, registry.Objective]] = (),
               shapes: Sequence[shapes_lib.Shape] = ()):
    _check_seed(seed)
    objective = self.objective = objective or registry.causal_objective(data_config.seq_len)
    if batch_size <= 0:
      raise errors.UserError(f'train.batch_size={batch_size} must be positive.')
    plan = self.plan = plan or mixture_plan(data_config, batch_size, total_steps)
    ordering = self._ordering = orderings_lib.bind(data_config.order, total_steps)
    names = self.task_names = plan.task_names
    block = data_config.mixture_block
    shapes = tuple(shapes) or (shapes_lib.Shape(0, data_config.seq_len, batch_size),)
    self._main_rows, *replay_rows = stream_rows(data_config, plan, shapes)
    self._samplers = [sampler_lib.MixtureSampler(names, plan.stages, self._main_rows, block, seed,
                                                 _MAIN_STREAM)]
    if plan.replay:
      self._samplers.append(sampler_lib.MixtureSampler(
          names, plan.replay, *replay_rows, block, seed, _REPLAY_STREAM,
          key='data.replay.mixture'))
    self._seed, self._block = seed, block
    self._phases = []
    batch_sizes = [shapes[0].batch_size,
                   *(shapes_lib.shape_at(shapes, start).batch_size for start, _ in phases)]
    for (start, phase_objective), rows in zip([(0, objective), *phases], batch_sizes):
      same = next((p for p in self._phases if p.objective == phase_objective), None)
      if same:  # a phase back to an earlier objective reads the rows packed for it
        self._phases.append(dataclasses.replace(same, start=start, batch_size=rows))
        continue
      self._phases.append(Phase(
          start, phase_objective,
          task_rows.TaskRows(data_config, names, seed, phase_objective, ordering, plan.selection),
          probes_lib.make_probes(list(plan.probes), data_config, phase_objective, seed,
                                 self._samplers[0].rows(start)), rows))
    self.rows, self.probes = self._phases[0].rows, self._phases[0].probes
    self._continue_phases()

  @property
  def phases(self) -> tuple[Phase, ...]:
    """The phases by start, the run's first (a phase from step 0 follows it and replaces it)."""
    return tuple(self._phases)

  def _phase_index(self, step: int) -> int:
    return max(i for i, phase in enumerate(self._phases) if phase.start <= step)

  def phase_at(self, step: int) -> Phase:
    """The phase of training step `step` (the last to start at or before it): the objective that
    makes its batch, the rows it reads and its batch size."""
    return self._phases[self._phase_index(step)]

  def _continue_phases(self) -> None:
    """Per sampler and phase, [num_tasks] what turns the task-local index of an example of the
    phase's steps into the index of its row in the phase's packing. A phase goes on from the
    tokens each task gave the steps before it: on rows of another length (research/data/shapes.py)
    it reads as far into every task as the run has read in tokens, so that a length warm-up reads
    no more of a task than a run at one length (the same as going on by rows at one length)."""
    self._shifts = []
    for sampler in self._samplers:
      shifts, tokens = [], 0  # of each task, read before the phase
      for phase, end in zip(self._phases, [p.start for p in self._phases[1:]] + [None]):
        row_len, before = phase.objective.row_len, sampler.examples_before(phase.start)
        first = -(-tokens // row_len)
        shifts.append(first - before)
        if end is not None:
          tokens = (first + sampler.examples_before(end) - before) * row_len
      self._shifts.append(shifts)

  def example_sources(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """[batch_size] task index (into `task_names`) and packed row of each example of `step`."""
    if step < 0:
      raise errors.UserError(f'Step {step} is negative; steps count from 0.')
    index = self._phase_index(step)
    sources = [sampler.sources(step) for sampler in self._samplers]
    tasks_B = np.concatenate([t for t, _ in sources])
    local_B = np.concatenate([j + shifts[index][t]
                              for (t, j), shifts in zip(sources, self._shifts)])
    rows_B = np.empty(len(tasks_B), np.int64)
    task_rows_ = self._phases[index].rows
    rewritten = task_rows_.rewrites(step)
    packed = task_rows_.of_step(step)
    for task in np.unique(tasks_B):
      of_task = tasks_B == task
      num_rows = packed[task].num_rows
      epochs, within = self._ordering.locate(local_B[of_task], num_rows, step, self._seed,
                                             task_rows_.task_keys[task])
      rows = np.empty(len(within), np.int64)
      for epoch in np.unique(epochs).tolist():
        at = epochs == epoch
        rows[at] = self._ordering.rows(
            num_rows, self._seed, task_rows_.task_keys[task], epoch, within[at],
            functools.partial(task_rows_.order, int(task), epoch, rewritten))
      rows_B[of_task] = rows
    return tasks_B, rows_B

  def row(self, task: int, row: int, step: int) -> dict[str, np.ndarray]:
    """Packed row `row` of task `task` (an index into `task_names`) as step `step` reads it, with
    its `documents`."""
    return {k: v[0] for k, v in
            self.phase_at(step).rows.of_step(step)[task].take(np.array([row])).items()}

  def epochs_before(self, step: int) -> dict[str, float]:
    """Epochs of each task's packed rows that the steps before `step` have read (repeats > 1): rows
    read over the task's rows, so full-data epochs for an ordering with shorter epochs; in the
    last step's phase's rows, which go on from the tokens the phases before it read."""
    index = self._phase_index(max(step - 1, 0))
    examples = sum(sampler.examples_before(step) + shifts[index]
                   for sampler, shifts in zip(self._samplers, self._shifts))
    num_rows = self._phases[index].rows.num_rows
    return {name: float(n) / num_rows[name]
            for name, n in zip(self.task_names, examples)}

  def mixture_weights(self, step: int) -> dict[str, float]:
    """Each task's share of the examples of `step`'s stage, main mixture and replay together
    (each by its rows of the batch); they sum to 1."""
    shares = sum(sampler.proportions(step) * sampler.rows(step) for sampler in self._samplers)
    return {name: float(share) / self.phase_at(step).batch_size
            for name, share in zip(self.task_names, shares)}

  def set_stages(self, stages: list[sampler_lib.Stage]) -> None:
    """Replaces the main mixture schedule: an online mixture (Skill-it, research/data/skillit.py)
    appends a stage at each update, so the steps before it read what they read before."""
    self._samplers[0] = sampler_lib.MixtureSampler(  # no data.stages, so no power-law replay
        self.task_names, stages, self._main_rows, self._block, self._seed, _MAIN_STREAM)
    self._continue_phases()

  def batches(self, first_step: int, last_step: int,
              rows: np.ndarray | Callable[[int], np.ndarray] | None = None,
              prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """The batches `batch(step, rows=rows)` of steps [first_step, last_step) in order, made ahead
    by Grain (a MapDataset over the steps, `prefetch` batches ahead, each on its own thread) while
    the training step runs; `rows` may be a function of a batch's size (`TrainData.phases` change
    it) giving the rows. A new mixture (`set_stages`) needs a new iterator from its first step."""
    rows_of = rows if callable(rows) else lambda _: rows
    of_size = {phase.batch_size: rows_of(phase.batch_size) for phase in self._phases}
    steps = grain.MapDataset.range(first_step, last_step)
    batch = lambda step: self.batch(step, rows=of_size[self.phase_at(step).batch_size])
    return iter(steps.map(batch).to_iter_dataset(
        grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch)))

  def batch(self, step: int, with_noise: bool = False, rows: np.ndarray | None = None):
    """The global batch of training step `step`: a dict of [batch_size, ...] arrays; with `rows`
    (ascending indices into the global batch), only those rows, computed alone: a host computes
    the rows its devices hold (research/sharding.process_rows), and every row is the same
    whichever rows are asked for.

    With `with_noise`, also each row's denoising record (`Objective.examples`).
    """
    phase = self.phase_at(step)
    rows_R = np.arange(phase.batch_size) if rows is None else np.asarray(rows, np.int64)
    tasks_B, packed_B = self.example_sources(step)
    tasks_R, packed_R = tasks_B[rows_R], packed_B[rows_R]
    step_rows = phase.rows.of_step(step)
    packed = {}
    for task in np.unique(tasks_R).tolist():
      of_task = np.flatnonzero(tasks_R == task)
      for k, v in step_rows[task].take(packed_R[of_task]).items():
        if k != 'documents':
          packed.setdefault(k, np.empty((len(rows_R),) + v.shape[1:], v.dtype))[of_task] = v
    probes_lib.inject(packed, rows_R, step, phase.probes)
    example_ids = int(shapes_lib.steps_before([p.start for p in self._phases], step)
                      @ [p.batch_size for p in self._phases]) + rows_R  # rows of earlier steps
    return phase.objective.examples(packed, example_ids, self._seed, step, with_noise)


def long_document_notice(data: TrainData) -> str:
  """One line for the whole run: how many training documents are longer than a chunk of the
  objective and so span several rows, with each such task's count; '' when none is."""
  rows = data.rows
  counts = {name: count for name, count in rows.split_documents.items() if count}
  if not counts:
    return ''
  total = sum(rows.num_documents.values())
  per_task = ', '.join(f'{name} {count:,} of {rows.num_documents[name]:,}'
                       for name, count in counts.items())
  return (f'{sum(counts.values()):,} of the {total:,} training documents ({per_task}) are longer '
          f'than a chunk of {data.objective.chunk_len} tokens (what a row of objective '
          f'{data.objective.name} holds) and span several rows (none is dropped).')


EVAL_SEED = 0  # the packing and noise of the evaluation batches, the same for every run


def eval_store(data_config, task_name: str, batch_size: int, num_batches: int,
               objective: registry.Objective) -> store_lib.DocumentStore:
  """The documents `eval_batches` packs: the first shards of `task_name`'s validation split that
  hold twice the tokens of its rows (all of a one-shard split), not the whole split."""
  if batch_size <= 0 or num_batches <= 0:
    raise errors.UserError(f'eval.batch_size={batch_size} and eval.batches={num_batches} must both '
                           'be positive.')
  store = store_lib.load_prefix(task_name, 'validation', data_config.vocabulary,
                                data_config.store_dir,
                                tokens=2 * batch_size * num_batches * objective.row_len)
  if not store.num_documents:  # its eval loss would be a silent 0.0
    _, train = store_lib.built_manifest(task_name, 'train', data_config.vocabulary,
                                        data_config.store_dir)
    raise errors.UserError(
        f"Task {task_name!r} has no validation documents: its validation split got 0 of its "
        f"{train['num_documents']} documents, so it cannot be evaluated; "
        f'{tasks.task_spec(task_name).holdout}.')
  return store


def eval_batches(data_config, task_name: str, batch_size: int, num_batches: int,
                 objective: registry.Objective | None = None,
                 documents: bool = False) -> list[dict[str, np.ndarray]]:
  """Up to `num_batches` batches of the first packed rows of `task_name`'s validation split (of
  its first shards, `eval_store`: a split of any size).

  When the split has fewer rows, returns as many batches as they fill (at least one), the last
  padded with all-zero rows whose weights are 0. Row i is example i of the `objective` (default
  causal LM). Packing and noise use `EVAL_SEED`, not the run's seed, so every evaluation of every
  run sees the same examples and runs that differ in their seed compare on one evaluation set.
  With `documents` (a causal objective only: its targets are the packed tokens), every batch also
  holds the packed rows' `documents`, the store index of each target's document (-1 on padding).
  """
  objective = objective or registry.causal_objective(data_config.seq_len)
  return pack_eval(eval_store(data_config, task_name, batch_size, num_batches, objective),
                   batch_size, num_batches, objective, documents)


def pack_eval(store: store_lib.DocumentStore, batch_size: int, num_batches: int,
              objective: registry.Objective,
              documents: bool = False) -> list[dict[str, np.ndarray]]:
  """`eval_batches` of the documents of `store` (`eval_store`'s): only the rows the batches hold
  are packed."""
  if documents and objective.denoising:
    raise ValueError(f'Denoising targets ({objective.name}) are not the packed documents\' tokens.')
  return row_batches(objective.pack(store, EVAL_SEED, num_rows=batch_size * num_batches),
                     batch_size, num_batches, objective, documents)


def row_batches(packed: dict[str, np.ndarray], batch_size: int, num_batches: int,
                objective: registry.Objective,
                documents: bool = False) -> list[dict[str, np.ndarray]]:
  """Up to `num_batches` batches of `objective`'s examples of the first of the `packed` rows,
  with `EVAL_SEED`'s noise: as many as the rows fill (at least one), the last padded with
  all-zero rows whose weights are 0; with `documents`, each batch also holds its rows'
  `documents`."""
  num_rows = min(len(packed['targets']), batch_size * num_batches)
  num_padded = max(1, -(-num_rows // batch_size)) * batch_size
  padded = {k: np.full((num_padded,) + v.shape[1:], -1 if k == 'documents' else 0, v.dtype)
            for k, v in packed.items()}
  for k, v in packed.items():
    padded[k][:num_rows] = v[:num_rows]
  batches = objective.examples(padded, np.arange(num_padded), EVAL_SEED)
  if documents:
    batches['documents'] = padded['documents']
  return [{k: v[i:i + batch_size] for k, v in batches.items()}
          for i in range(0, num_padded, batch_size)]
