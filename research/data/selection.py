"""Selection and pruning (`data.select`): the training documents of a task that a run keeps, by a
per-document score, applied before packing and ordering.

- Data Diet pruning (Paul et al. 2021, "Deep Learning on a Data Diet: Finding Important Examples
  Early in Training", arXiv 2107.07075): keep the highest-EL2N fraction, optionally after skipping
  the very highest (an offset window; the hardest examples are often noise).
- Perplexity filtering (Marion et al. 2023, "When Less is More: Investigating Data Pruning for
  Pretraining LLMs at Scale", arXiv 2309.04564): keep the lowest, highest or middle perplexity
  under a reference model.

Config (research/defaults.py):

    data.select.by        a score reference (research/data/score_files.py): a metadata field
                          ('difficulty') or a computed score SCORES:FIELD ('ref:el2n',
                          'ref:perplexity'), or 'random' (a seeded random score per document and
                          run seed: random pruning, the baseline); '' keeps every document
    data.select.keep      'lowest' or 'highest': the end of the score order kept from
    data.select.fraction  the share of the task's training documents kept, in (0, 1]
    data.select.offset    the share skipped first from that end, in [0, 1 - fraction]: the kept
                          documents are those ranked [offset, offset + fraction) from it
    data.select.tasks     the tasks it applies to; () = every task the run trains on

Of D documents, round(fraction * D) (at least 1) are kept after skipping round(offset * D); equal
scores rank in store order. The kept documents keep their store order, in an in-memory store
(`subset`) that packing, the orderings (by the kept documents' scores) and inspection read as
the task's store; the validation split, and so evaluation, is untouched. `report` gives the kept
share of documents and tokens, which the pipeline logs when it loads the data.

Selection is not a `subset` task (research/data/tasks.py) on purpose: it keeps the task's name
(its evaluation keys and its stored scores stay the same), it sees the run's store, so its score
file is checked against the run's vocabulary like an ordering's, and a pruned run is one config
switch (`--config.data.select.fraction=0.5`) rather than a new task.
"""

import dataclasses

import ml_collections
import numpy as np

from research import errors
from research.data import orderings, score_files
from research.data import store as store_lib

KEEPS = ('lowest', 'highest')
RANDOM = 'random'  # data.select.by: a seeded random score per document
_RANDOM_STREAM = 0x73656c65  # seeded-stream tag of the random scores
_SLACK = 1e-9  # offset + fraction may exceed 1 by float rounding


@dataclasses.dataclass(frozen=True)
class Selection:
  """The checked `data.select`."""
  by: str
  keep: str
  fraction: float
  offset: float
  tasks: tuple[str, ...]  # () = every task

  def applies(self, task_name: str) -> bool:
    return not self.tasks or task_name in self.tasks


@dataclasses.dataclass(frozen=True)
class Report:
  """What a selection kept of one task's training documents."""
  kept_documents: int
  documents: int
  kept_tokens: int
  tokens: int

  @property
  def fraction(self) -> float:
    """The kept share of the documents."""
    return self.kept_documents / self.documents

  def describe(self, task_name: str, selection: Selection) -> str:
    window = (f' after skipping the {selection.offset:g} {selection.keep}' if selection.offset
              else '')
    return (f'data.select keeps {self.fraction:.1%} of the training documents of task '
            f'{task_name!r} ({self.kept_documents} of {self.documents}; {self.kept_tokens} of '
            f'{self.tokens} tokens, {self.kept_tokens / max(self.tokens, 1):.1%}): the '
            f'{selection.keep} {selection.fraction:g} by {selection.by!r}{window}.')


def bind(data_config: ml_collections.ConfigDict, task_names: list[str]) -> Selection | None:
  """The checked `data.select` of a run training on `task_names`; None when it keeps everything."""
  config = data_config.select
  by, keep, fraction, offset = config.by, config.keep, config.fraction, config.offset
  tasks = tuple(config.tasks)
  if not by:
    if fraction != 1 or offset or tasks:
      raise errors.UserError(f'data.select.fraction={fraction}, offset={offset} and tasks={tasks} '
                             'select by no score: set data.select.by (e.g. ref:el2n, or random).')
    return None
  if not isinstance(by, str) or not score_files.parse(by)[1]:
    raise errors.UserError(f'data.select.by={by!r} must be a score reference: a metadata field, '
                           f"SCORES:FIELD such as 'ref:el2n', or {RANDOM!r}.")
  if keep not in KEEPS:
    raise errors.UserError(f'data.select.keep={keep!r} must be one of {list(KEEPS)}.')
  if not 0 < fraction <= 1 or not 0 <= offset or offset + fraction > 1 + _SLACK:
    raise errors.UserError(f'data.select.fraction={fraction} and offset={offset} need 0 < fraction '
                           '<= 1, offset >= 0 and offset + fraction <= 1 (the kept window of the '
                           'score order).')
  unknown = [t for t in tasks if t not in task_names]
  if unknown:
    raise errors.UserError(f'data.select.tasks names {unknown}, which the run does not train on; '
                           f'choose from {task_names} (or () for all).')
  return Selection(by, keep, float(fraction), float(offset), tasks)


def document_scores(selection: Selection, store: store_lib.DocumentStore, task_name: str,
                    seed: int, task_key: int) -> np.ndarray:
  """float64 [num_documents]: the score each document of `store` is selected by."""
  if selection.by == RANDOM:
    return np.random.default_rng([_RANDOM_STREAM, seed, task_key]).random(store.num_documents)
  return orderings.document_scores(store, selection.by, task_name,
                                   f'data.select.by={selection.by!r}')


def kept_documents(scores_D: np.ndarray, keep: str, fraction: float,
                   offset: float = 0.0) -> np.ndarray:
  """int64 [K]: the store indices kept, ascending: ranked [offset, offset + fraction) of the
  documents from the `keep` ('lowest' or 'highest') end of `scores_D`, ties in store order."""
  num_documents = len(scores_D)
  count = min(max(1, round(fraction * num_documents)), num_documents)
  skip = min(round(offset * num_documents), num_documents - count)
  ranked = np.argsort(scores_D if keep == 'lowest' else -scores_D, kind='stable')
  return np.sort(ranked[skip:skip + count]).astype(np.int64)


def subset(store: store_lib.DocumentStore, kept_D: np.ndarray) -> store_lib.DocumentStore:
  """An in-memory store of the documents `kept_D` of `store` (with their ids, metadata and loss
  weights), in that order; it shares `store`'s directory, so caches there must be made from the
  full store."""
  lengths_K = np.diff(store.offsets)[kept_D]
  offsets = np.concatenate([[0], np.cumsum(lengths_K)]).astype(np.int64)
  index_T = np.repeat(store.offsets[:-1][kept_D] - offsets[:-1], lengths_K) + np.arange(offsets[-1])
  manifest = {**store.manifest, 'num_documents': len(kept_D), 'num_tokens': int(offsets[-1])}
  return dataclasses.replace(
      store, tokens=np.asarray(store.tokens[index_T]), offsets=offsets, manifest=manifest,
      doc_ids=[store.doc_ids[i] for i in kept_D],
      weights=None if store.weights is None else store.weights[index_T],
      metadata_json=[store.metadata_json[i] for i in kept_D])


def report(store: store_lib.DocumentStore, kept_D: np.ndarray) -> Report:
  lengths_D = np.diff(store.offsets)
  return Report(len(kept_D), store.num_documents, int(lengths_D[kept_D].sum()),
                int(lengths_D.sum()))
