"""The stateless batch source: the batch at step s is a pure function of (config.data, seed, s).

Training resumes at any step, on any number of hosts, with no iterator state to checkpoint.

The rows of a global batch come from two streams: the main mixture schedule (`data.mixture`, then
the stages of `data.stages`) and, when `data.replay.fraction` > 0, a replay mixture that fills that
fraction of every batch (the last rows) with data from `data.replay.mixture`, as continual
pretraining with replay does (Ibrahim et al. 2024, arXiv 2403.08763). research/data/sampler.py
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

A task's rows come from its rows store (research/data/rows.py: packed once, shard by shard, read by
row index; Grain reads ahead), so a host reads only the rows of its part of the batch and memory does not
grow with the corpus; with 'random' ordering each row's place in an epoch is computed alone
(orderings.random_rows). The features that need the whole task (orderings and packing by score,
in-context packing, selection, document-rewriting objectives) read its documents into memory and
pack them here instead, up to IN_MEMORY_TOKENS tokens per task.

The objective (research/objectives/registry.py) decides how documents are packed and turns each
batch of packed rows into the model's examples. For causal LM every batch is a dict of
[batch_size, seq_len] arrays: int32 `targets`, `segment_ids`, `positions` (see packing.py),
`inputs` (targets shifted right within each segment; see research/objectives/causal_lm.py) and
float32 `weights` (1 on tokens, 0 on padding); denoising objectives add `prefix` (decoder) or the
`encoder_*` rows (encoder-decoder).
"""

import dataclasses
import functools
import hashlib

from collections.abc import Iterator

import grain
import ml_collections
import numpy as np
from absl import logging

from research import errors, schedules

from research.data import skillit
from research.data import orderings as orderings_lib
from research.data import probes as probes_lib
from research.data import rows as rows_lib
from research.data import sampler as sampler_lib
from research.data import selection as selection_lib
from research.data import store as store_lib
from research.data import tasks, vocabularies
from research.objectives import registry

_MAIN_STREAM, _REPLAY_STREAM = 0x6d61696e, 0x7265706c
_STAGE_KEYS = {'at_step', 'at_fraction', 'mixture'}


# Orderings by name (config key `data.order.name`), defined in research/data/orderings.py.
ORDERINGS = orderings_lib.ORDERINGS
random_order = orderings_lib.random_order


def _task_key(name: str) -> int:
  """A stable 32-bit integer for a task name, used to seed its row orders."""
  return int.from_bytes(hashlib.md5(name.encode('utf-8')).digest()[:4], 'big')


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
  replay: list[sampler_lib.Stage]
  num_replay: int
  task_names: list[str]
  selection: selection_lib.Selection | None = None  # data.select; None keeps every document
  online: skillit.Config | None = None  # data.skillit (Skill-it online mixing); None: off
  probes: tuple[probes_lib.ProbeSpec, ...] = ()  # data.probes (knowledge-injection probes)


def mixture_plan(data_config: ml_collections.ConfigDict, batch_size: int,
                 total_steps: int) -> MixturePlan:
  """Registers `data.tasks`, checks the mixtures, replay, ordering and probes; reads no data."""
  orderings_lib.bind(data_config.order, total_steps)  # fails naming a bad data.order key
  online = skillit.bind(data_config)  # fails naming a bad data.skillit key
  fraction = data_config.replay.fraction
  num_replay = round(fraction * batch_size)
  if not 0 <= fraction < 1 or (fraction > 0 and num_replay == 0):
    raise errors.UserError(f'data.replay.fraction={fraction} must be in [0, 1) and give at least '
                           f'one row of the batch of {batch_size} (or be 0).')
  tasks.register_config_tasks(data_config)
  stages = mixture_schedule(data_config, total_steps)
  replay = [sampler_lib.Stage(0, tasks.expand_mixtures(dict(data_config.replay.mixture),
                                                      'data.replay.mixture'))] if num_replay else []
  names = sorted(sampler_lib.schedule_tasks(stages, 'data.mixture')
                 | sampler_lib.schedule_tasks(replay, 'data.replay.mixture'))
  for name in names:
    tasks.check_task(name)
  for name in online.eval_tasks if online else []:
    tasks.check_task(name, 'data.skillit.eval_tasks')
  probes = probes_lib.probe_specs(data_config, total_steps, set(names))
  return MixturePlan(stages, replay, num_replay, names, selection_lib.bind(data_config, names),
                     online, tuple(probes))


def run_tasks(config: ml_collections.ConfigDict) -> list[str]:
  """Every task run `config` reads: its mixtures, replay, probes, eval tasks, multiple-choice
  tasks and Skill-it's."""
  plan = mixture_plan(config.data, config.train.batch_size, config.train.steps)
  return list(dict.fromkeys([*plan.task_names, *(probe.task for probe in plan.probes),
                             *config.eval.tasks, *config.eval.multiple_choice.tasks,
                             *(plan.online.eval_tasks if plan.online else ())]))


def prepare_stores(config: ml_collections.ConfigDict) -> None:
  """Makes sure the train and validation stores of every task of run `config`, and the rows stores
  its objective trains on, are built: small ones are built now, a missing large one stops the run
  naming the launch.build_data command."""
  store_lib.prepare([(task, split) for task in run_tasks(config) for split in tasks.SPLITS],
                    config.data.vocabulary, config.data.store_dir)
  objective = run_objective(config)
  recipe = rows_lib.recipe(objective)
  for task in row_tasks(config, objective):
    rows_lib.prepare(task, config.data.vocabulary, config.data.store_dir, recipe)


def run_objective(config: ml_collections.ConfigDict) -> registry.Objective:
  """The objective run `config` trains with (research/objectives/examples.make_objective)."""
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  return registry.make_objective(config, vocabulary)


def row_tasks(config: ml_collections.ConfigDict, objective: registry.Objective) -> list[str]:
  """The tasks whose training rows run `config` (with its `objective`) reads from rows stores
  (research/data/rows.py): those no whole-task feature reads."""
  plan = mixture_plan(config.data, config.train.batch_size, config.train.steps)
  ordering = orderings_lib.bind(config.data.order, config.train.steps)
  return [name for name in plan.task_names
          if not _whole_task_feature(name, ordering, plan.selection, objective)]


IN_MEMORY_TOKENS = 2**28  # the largest task the whole-task features read into memory


def _train_store(task_name: str, data_config, feature: str) -> store_lib.DocumentStore:
  """The train store of a task that `feature` reads whole, in memory; refused above
  IN_MEMORY_TOKENS, never silently loaded."""
  directory, manifest = store_lib.built_manifest(task_name, 'train', data_config.vocabulary,
                                                 data_config.store_dir)
  if manifest['num_tokens'] > IN_MEMORY_TOKENS:
    raise errors.UserError(
        f'{feature} reads the whole training split of task {task_name!r} into memory, and it '
        f"holds {manifest['num_tokens']:,} tokens, over the {IN_MEMORY_TOKENS:,} these features "
        'allow; train on this task with the default data.order.name, data.order.pack and no '
        'data.select or document-rewriting objective, or use them on a smaller task (a subset '
        'task, data.tasks.NAME.source=\'subset\').')
  store = store_lib.read_documents(directory, manifest)
  if not store.num_documents:
    raise _no_documents(task_name)
  return store


def _rows_store(task_name: str, data_config, recipe: rows_lib.Recipe) -> rows_lib.RowStore:
  rows = rows_lib.load(task_name, data_config.vocabulary, data_config.store_dir, recipe)
  if not rows.num_rows:
    raise _no_documents(task_name)
  return rows


def _no_documents(task_name: str) -> errors.UserError:
  return errors.UserError(f'Task {task_name!r} in the data mixture has no training documents; '
                          'remove it from the mixture or give its source documents.')


def _whole_task_feature(name: str, ordering: orderings_lib.BoundOrdering,
                        selection: selection_lib.Selection | None,
                        objective: registry.Objective) -> str | None:
  """The config key of a feature that reads task `name` whole (orderings and packing by score,
  in-context packing, selection, rewriting objectives); None when its rows come from a rows
  store (research/data/rows.py)."""
  if ordering.score is not None:
    return ordering.score_key
  if ordering.pack_order != 'random':
    return f'data.order.pack={ordering.pack_order!r}'
  if selection is not None and selection.applies(name):
    return 'data.select'
  if objective.rewrite is not None:
    return f'objective {objective.name!r} (it rewrites documents)'
  return None


class TrainData:
  """Training batches of a mixture schedule (and replay), addressable by step.

  Loads (building on first use) and packs the train split of every task named in any stage once;
  `batch(step)` is then cheap and depends only on (data_config, seed, step). The knowledge-injection
  probes of `data.probes` (research/data/probes.py) take the first rows of the batches of their
  steps.
  """

  def __init__(self, data_config: ml_collections.ConfigDict, batch_size: int, seed: int,
               total_steps: int, objective: registry.Objective | None = None,
               plan: MixturePlan | None = None):
    _check_seed(seed)
    objective = self.objective = objective or registry.causal_objective(data_config.seq_len)
    if batch_size <= 0:
      raise errors.UserError(f'train.batch_size={batch_size} must be positive.')
    plan = self.plan = plan or mixture_plan(data_config, batch_size, total_steps)
    ordering = self._ordering = orderings_lib.bind(data_config.order, total_steps)
    names = self.task_names = plan.task_names
    block = data_config.mixture_block
    self._samplers = [sampler_lib.MixtureSampler(names, plan.stages, batch_size - plan.num_replay,
                                                 block, seed, _MAIN_STREAM)]
    if plan.num_replay:
      self._samplers.append(sampler_lib.MixtureSampler(
          names, plan.replay, plan.num_replay, block, seed, _REPLAY_STREAM,
          key='data.replay.mixture'))
    self._batch_size, self._seed, self._block = batch_size, seed, block
    # A task's rows come from its rows store (packed once, read by index), unless a feature reads
    # the whole task: then its store is read into memory and packed here, as that feature asks.
    features = {name: _whole_task_feature(name, ordering, plan.selection, objective)
                for name in names}
    full = {name: _train_store(name, data_config, feature)
            for name, feature in features.items() if feature}
    # Selection (data.select) keeps part of a task's documents, by scores of its whole store,
    # before packing and ordering; `stores` are then the kept documents.
    kept = self._select(plan.selection, full, seed)
    keep = lambda name, store: selection_lib.subset(store, kept[name]) if name in kept else store
    scores = {}  # per task: the kept documents' scores, read (and checked) before any packing
    for name in full:
      if ordering.score is not None:
        scores_D = orderings_lib.document_scores(full[name], ordering.score, name,
                                                 ordering.score_key)
        scores[name] = scores_D[kept[name]] if name in kept else scores_D
    self._stores = {name: keep(name, store) for name, store in full.items()}
    # The order packing visits each task's documents in (data.order.pack), plain or rewritten.
    orders = {name: ordering.document_order(store, seed, scores.get(name))
              for name, store in self._stores.items()}
    recipe = rows_lib.recipe(objective)
    self._packed = [
        rows_lib.PackedRows(objective.pack(self._stores[name], seed, orders[name]))
        if name in full else
        _rows_store(name, data_config, recipe) for name in names]
    # Objectives that rewrite documents (MeCo, control tokens) read rewritten rows at the steps
    # they apply to, and the plain rows at the others (MeCo's cooldown). They rewrite the whole
    # store (their caches beside it are of all its documents), then the selection applies.
    self._rewritten = None
    if objective.rewrite is not None:
      vocabulary = vocabularies.make_vocabulary(data_config.vocabulary, data_config.extra_ids)
      self._rewritten = [rows_lib.PackedRows(
          objective.pack(keep(name, objective.rewrite.apply(full[name], name, vocabulary, seed)),
                         seed, orders[name])) for name in names]
    # Documents longer than a chunk are split across rows (never dropped); counted for the log.
    self.split_documents, self.num_documents = {}, {}
    for name, rows in zip(names, self._packed):
      if name in self._stores:
        lengths_D = np.diff(self._stores[name].offsets)
        self.split_documents[name] = int(np.sum(lengths_D > objective.chunk_len))
        self.num_documents[name] = len(lengths_D)
      else:
        self.split_documents[name] = rows.manifest['split_documents']
        self.num_documents[name] = rows.manifest['num_documents']
    self.num_rows = {name: rows.num_rows for name, rows in zip(names, self._rows(0))}
    self._task_keys = [_task_key(name) for name in names]
    # Per packing (plain, rewritten) and task: one score per packed row, for orderings by score.
    self._row_scores = {False: [None] * len(names), True: [None] * len(names)}
    for task, name in enumerate(names):
      for rewritten, packed in ((False, self._packed), (True, self._rewritten)):
        if packed is not None and name in scores:
          self._row_scores[rewritten][task] = orderings_lib.row_scores(
              packed[task].packed['documents'], scores[name], ordering.row_score)
    self._orders = [((-1, None), None)] * len(names)  # per task: the latest (epoch, packing), order
    self.probes = probes_lib.make_probes(list(plan.probes), data_config, objective, seed,
                                         batch_size - plan.num_replay)
    self._data_config, self._readers = data_config, {}

  def document(self, name: str, index: int) -> tuple[str, dict]:
    """(id, metadata) of document `index` of task `name`, as its rows' `documents` number them
    (the kept documents of a selection): read alone from a store of any size."""
    if name in self._stores:
      return self._stores[name].doc_ids[index], self._stores[name].metadata[index]
    if name not in self._readers:
      self._readers[name] = store_lib.DocumentReader(*store_lib.built_manifest(
          name, 'train', self._data_config.vocabulary, self._data_config.store_dir))
    doc_id, metadata, _ = self._readers[name][index]
    return doc_id, metadata

  def _select(self, selection: selection_lib.Selection | None,
              stores: dict[str, store_lib.DocumentStore], seed: int) -> dict[str, np.ndarray]:
    """The store indices each selected task keeps; sets and logs `selected`, the reports."""
    self.selected: dict[str, selection_lib.Report] = {}
    kept = {}
    for name, store in stores.items():
      if selection is None or not selection.applies(name):
        continue
      scores_D = selection_lib.document_scores(selection, store, name, seed, _task_key(name))
      kept[name] = selection_lib.kept_documents(scores_D, selection.keep, selection.fraction,
                                                selection.offset)
      self.selected[name] = selection_lib.report(store, kept[name])
      logging.warning('%s', self.selected[name].describe(name, selection))
    return kept

  def _rewrites(self, step: int) -> bool:
    """Whether step `step` reads the rewritten rows of an objective that rewrites documents."""
    return self._rewritten is not None and self.objective.rewrite.applies_at(step)

  def _rows(self, step: int) -> list[dict[str, np.ndarray]]:
    """Every task's packed rows that step `step` reads."""
    return self._rewritten if self._rewrites(step) else self._packed

  def _row_order(self, task: int, epoch: int, rewritten: bool) -> np.ndarray:
    """The rows that epoch `epoch` of task `task` reads, in order, of the plain or rewritten
    packing."""
    cached, order = self._orders[task]
    if cached != (epoch, rewritten):
      packed = (self._rewritten if rewritten else self._packed)[task]
      order = self._ordering.order(packed.num_rows, self._seed, self._task_keys[task], epoch,
                                   self._row_scores[rewritten][task])
      self._orders[task] = ((epoch, rewritten), order)
    return order

  def example_sources(self, step: int) -> tuple[np.ndarray, np.ndarray]:
    """[batch_size] task index (into `task_names`) and packed row of each example of `step`."""
    if step < 0:
      raise errors.UserError(f'Step {step} is negative; steps count from 0.')
    sources = [sampler.sources(step) for sampler in self._samplers]
    tasks_B = np.concatenate([t for t, _ in sources])
    local_B = np.concatenate([j for _, j in sources])
    rows_B = np.empty(self._batch_size, np.int64)
    rewritten = self._rewrites(step)
    packed = self._rows(step)
    for task in np.unique(tasks_B):
      of_task = tasks_B == task
      num_rows = packed[task].num_rows
      epochs, within = self._ordering.locate(local_B[of_task], num_rows, step, self._seed,
                                             self._task_keys[task])
      rows = np.empty(len(within), np.int64)
      for epoch in np.unique(epochs).tolist():
        at = epochs == epoch
        rows[at] = self._ordering.rows(
            num_rows, self._seed, self._task_keys[task], epoch, within[at],
            functools.partial(self._row_order, int(task), epoch, rewritten))
      rows_B[of_task] = rows
    return tasks_B, rows_B

  def row(self, task: int, row: int, step: int) -> dict[str, np.ndarray]:
    """Packed row `row` of task `task` (an index into `task_names`) as step `step` reads it, with
    its `documents`."""
    return {k: v[0] for k, v in self._rows(step)[task].take(np.array([row])).items()}

  def first_rows(self, task: int, count: int) -> dict[str, np.ndarray]:
    """The first `count` (at most all) of the plain packed rows of task `task` (an index into
    `task_names`): a fixed set of its training rows."""
    return self._packed[task].take(np.arange(min(count, self._packed[task].num_rows)))

  def epochs_before(self, step: int) -> dict[str, float]:
    """Epochs of each task's packed rows that the steps before `step` have read (repeats > 1): rows
    read over the task's rows, so full-data epochs for an ordering with shorter epochs."""
    examples = sum(sampler.examples_before(step) for sampler in self._samplers)
    return {name: float(n) / self.num_rows[name] for name, n in zip(self.task_names, examples)}

  def mixture_weights(self, step: int) -> dict[str, float]:
    """Each task's share of the examples of `step`'s stage, main mixture and replay together
    (each by its rows of the batch); they sum to 1."""
    shares = sum(sampler.proportions(step) * sampler.batch_size for sampler in self._samplers)
    return {name: float(share) / self._batch_size for name, share in zip(self.task_names, shares)}

  def set_stages(self, stages: list[sampler_lib.Stage]) -> None:
    """Replaces the main mixture schedule: an online mixture (Skill-it, research/data/skillit.py)
    appends a stage at each update, so the steps before it read what they read before."""
    main = self._samplers[0]
    self._samplers[0] = sampler_lib.MixtureSampler(
        self.task_names, stages, main.batch_size, self._block, self._seed, _MAIN_STREAM)

  def batches(self, first_step: int, last_step: int, rows: np.ndarray | None = None,
              prefetch: int = 2) -> Iterator[dict[str, np.ndarray]]:
    """The batches `batch(step, rows=rows)` of steps [first_step, last_step) in order, made ahead
    by Grain (a MapDataset over the steps, `prefetch` batches ahead, each on its own thread) while
    the training step runs. A new mixture (`set_stages`) needs a new iterator from its first
    step."""
    steps = grain.MapDataset.range(first_step, last_step)
    return iter(steps.map(functools.partial(self.batch, rows=rows)).to_iter_dataset(
        grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch)))

  def batch(self, step: int, with_noise: bool = False, rows: np.ndarray | None = None):
    """The global batch of training step `step`: a dict of [batch_size, ...] arrays; with `rows`
    (ascending indices into the global batch), only those rows, computed alone: a host computes
    the rows its devices hold (research/sharding.process_rows), and every row is the same
    whichever rows are asked for.

    With `with_noise`, also each row's denoising record (`Objective.examples`).
    """
    rows_R = np.arange(self._batch_size) if rows is None else np.asarray(rows, np.int64)
    tasks_B, packed_B = self.example_sources(step)
    tasks_R, packed_R = tasks_B[rows_R], packed_B[rows_R]
    task_rows = self._rows(step)
    packed = {}
    for task in np.unique(tasks_R).tolist():
      of_task = np.flatnonzero(tasks_R == task)
      for k, v in task_rows[task].take(packed_R[of_task]).items():
        if k != 'documents':
          packed.setdefault(k, np.empty((len(rows_R),) + v.shape[1:], v.dtype))[of_task] = v
    probes_lib.inject(packed, rows_R, step, self.probes)
    example_ids = step * self._batch_size + rows_R
    return self.objective.examples(packed, example_ids, self._seed, step, with_noise)


def long_document_notice(data: TrainData) -> str:
  """One line for the whole run: how many training documents are longer than a chunk of the
  objective and so span several rows, with each such task's count; '' when none is."""
  counts = {name: count for name, count in data.split_documents.items() if count}
  if not counts:
    return ''
  total = sum(data.num_documents.values())
  per_task = ', '.join(f'{name} {count:,} of {data.num_documents[name]:,}'
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
