"""Every task's packed training rows, as a run reads them, with their scores and their order.

A task's rows come from its rows store (research/data/rows.py: packed once, shard by shard, read by
row index; Grain reads ahead), so a host reads only the rows of its part of the batch and memory does
not grow with the corpus; with 'random' ordering each row's place in an epoch is computed alone
(orderings.random_rows). The features that need the whole task (orderings and packing by score,
in-context packing, selection, document-rewriting objectives: `whole_task_feature`) read its
documents into memory and pack them here instead, up to IN_MEMORY_TOKENS tokens per task. Before
packing, `data.select` may keep only part of a task's training documents by a per-document score
(research/data/selection.py); the task's rows, stores and row scores are then those of the kept
documents. Packing visits a task's documents in the order of `data.order.pack`: a seeded
permutation, ascending score, or in-context pretraining's path through similar documents
(research/data/in_context.py). Objectives that rewrite documents (MeCo, control tokens) read
rewritten rows at the steps they apply to, and the plain rows at the others (MeCo's cooldown).

research/data/pipeline.TrainData reads these rows in the order its mixture samplers and the
ordering (`data.order.name`) give.
"""

import hashlib

import ml_collections
import numpy as np
from absl import logging

from research import errors
from research.data import orderings as orderings_lib
from research.data import rows as rows_lib
from research.data import selection as selection_lib
from research.data import store as store_lib
from research.data import vocabularies
from research.objectives import registry


def task_key(name: str) -> int:
  """A stable 32-bit integer for a task name, used to seed its row orders."""
  return int.from_bytes(hashlib.md5(name.encode('utf-8')).digest()[:4], 'big')


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


def whole_task_feature(name: str, ordering: orderings_lib.BoundOrdering,
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


class TaskRows:
  """The packed training rows of tasks `names` (their order is the task index), plain and, for an
  objective that rewrites documents, rewritten; each row's score for the orderings by score
  (`row_scores`); the documents a selection kept (`selected`: its reports per task) and the
  documents longer than a chunk (`split_documents` of `num_documents`, per task)."""

  def __init__(self, data_config: ml_collections.ConfigDict, names: list[str], seed: int,
               objective: registry.Objective, ordering: orderings_lib.BoundOrdering,
               selection: selection_lib.Selection | None):
    self.objective, self._ordering, self._seed = objective, ordering, seed
    self._data_config, self._readers = data_config, {}
    # A task's rows come from its rows store (packed once, read by index), unless a feature reads
    # the whole task: then its store is read into memory and packed here, as that feature asks.
    features = {name: whole_task_feature(name, ordering, selection, objective) for name in names}
    full = {name: _train_store(name, data_config, feature)
            for name, feature in features.items() if feature}
    # Selection (data.select) keeps part of a task's documents, by scores of its whole store,
    # before packing and ordering; `stores` are then the kept documents.
    kept = self._select(selection, full, seed)
    keep = lambda name, store: selection_lib.subset(store, kept[name]) if name in kept else store
    scores = {}  # per task: the kept documents' scores, read (and checked) before any packing
    for name in full:
      if ordering.score is not None:
        scores_D = orderings_lib.document_scores(full[name], ordering.score, name,
                                                 ordering.score_key)
        scores[name] = scores_D[kept[name]] if name in kept else scores_D
    self.stores = {name: keep(name, store) for name, store in full.items()}
    # The order packing visits each task's documents in (data.order.pack), plain or rewritten.
    orders = {name: ordering.document_order(store, seed, scores.get(name))
              for name, store in self.stores.items()}
    recipe = rows_lib.recipe(objective)
    self.packed = [
        rows_lib.PackedRows(objective.pack(self.stores[name], seed, orders[name]))
        if name in full else
        _rows_store(name, data_config, recipe) for name in names]
    # Rewriting objectives rewrite the whole store (their caches beside it are of all its
    # documents), then the selection applies.
    self.rewritten = None
    if objective.rewrite is not None:
      vocabulary = vocabularies.make_vocabulary(data_config.vocabulary, data_config.extra_ids)
      self.rewritten = [rows_lib.PackedRows(
          objective.pack(keep(name, objective.rewrite.apply(full[name], name, vocabulary, seed)),
                         seed, orders[name])) for name in names]
    # Documents longer than a chunk are split across rows (never dropped); counted for the log.
    self.split_documents, self.num_documents = {}, {}
    for name, rows in zip(names, self.packed):
      if name in self.stores:
        lengths_D = np.diff(self.stores[name].offsets)
        self.split_documents[name] = int(np.sum(lengths_D > objective.chunk_len))
        self.num_documents[name] = len(lengths_D)
      else:
        self.split_documents[name] = rows.manifest['split_documents']
        self.num_documents[name] = rows.manifest['num_documents']
    self.num_rows = {name: rows.num_rows for name, rows in zip(names, self.of_step(0))}
    self.task_keys = [task_key(name) for name in names]
    # Per packing (plain, rewritten) and task: one score per packed row, for orderings by score.
    self.row_scores = {False: [None] * len(names), True: [None] * len(names)}
    for task, name in enumerate(names):
      for rewritten, packed in ((False, self.packed), (True, self.rewritten)):
        if packed is not None and name in scores:
          self.row_scores[rewritten][task] = orderings_lib.row_scores(
              packed[task].packed['documents'], scores[name], ordering.row_score)
    self._orders = [((-1, None), None)] * len(names)  # per task: the latest (epoch, packing), order

  def _select(self, selection: selection_lib.Selection | None,
              stores: dict[str, store_lib.DocumentStore], seed: int) -> dict[str, np.ndarray]:
    """The store indices each selected task keeps; sets and logs `selected`, the reports."""
    self.selected: dict[str, selection_lib.Report] = {}
    kept = {}
    for name, store in stores.items():
      if selection is None or not selection.applies(name):
        continue
      scores_D = selection_lib.document_scores(selection, store, name, seed, task_key(name))
      lengths_D = np.diff(store.offsets) if selection.unit == 'tokens' else None
      kept[name] = selection_lib.kept_documents(scores_D, selection.keep, selection.fraction,
                                                selection.offset, lengths_D)
      self.selected[name] = selection_lib.report(store, kept[name])
      logging.warning('%s', self.selected[name].describe(name, selection))
    return kept

  def rewrites(self, step: int) -> bool:
    """Whether step `step` reads the rewritten rows of an objective that rewrites documents."""
    return self.rewritten is not None and self.objective.rewrite.applies_at(step)

  def of_step(self, step: int) -> list[rows_lib.PackedRows | rows_lib.RowStore]:
    """Every task's packed rows that step `step` reads."""
    return self.rewritten if self.rewrites(step) else self.packed

  def order(self, task: int, epoch: int, rewritten: bool) -> np.ndarray:
    """The rows that epoch `epoch` of task `task` reads, in order, of the plain or rewritten
    packing (the latest epoch's order kept per task)."""
    cached, order = self._orders[task]
    if cached != (epoch, rewritten):
      packed = (self.rewritten if rewritten else self.packed)[task]
      order = self._ordering.order(packed.num_rows, self._seed, self.task_keys[task], epoch,
                                   self.row_scores[rewritten][task])
      self._orders[task] = ((epoch, rewritten), order)
    return order

  def first_rows(self, task: int, count: int) -> dict[str, np.ndarray]:
    """The first `count` (at most all) of the plain packed rows of task `task`: a fixed set of its
    training rows."""
    return self.packed[task].take(np.arange(min(count, self.packed[task].num_rows)))

  def document(self, name: str, index: int) -> tuple[str, dict]:
    """(id, metadata) of document `index` of task `name`, as its rows' `documents` number them
    (the kept documents of a selection): read alone from a store of any size."""
    if name in self.stores:
      return self.stores[name].doc_ids[index], self.stores[name].metadata[index]
    if name not in self._readers:
      self._readers[name] = store_lib.DocumentReader(*store_lib.built_manifest(
          name, 'train', self._data_config.vocabulary, self._data_config.store_dir))
    doc_id, metadata, _ = self._readers[name][index]
    return doc_id, metadata
