"""Packing a document store into fixed-length rows with segment ids and positions.

Documents are visited in a given order, by default a seeded permutation (`random_documents`);
`data.order.pack` chooses it (research/data/orderings.py): 'score' visits them by ascending score
(`by_score`), so a row holds documents of similar score, and 'in_context' along ICLM's greedy path
through similar documents (research/data/in_context.py), so related documents share a row. A
document longer than the chunk length (the row
length L by default) is cut into chunks of that many tokens (the last one shorter), each chunk its
own segment. Chunks are placed greedily in order: a chunk goes into the current row if it fits,
otherwise it starts a new row (next-fit; no look-back, so the row order follows the document order).
A chunk fits when its cost fits every budget left: by default its length against L; a denoising
objective charges what its longest output can take in each of the model's rows
(research/objectives/registry.py), so every denoised row fits.

Per row, `segment_ids` number the chunks 1, 2, 3, ... and are 0 on padding; `positions` count
from 0 within each chunk; `documents` hold the store index (int64) of each token's document (-1 on
padding), so inspection can name a row's documents and their metadata. No document is dropped.
"""

import dataclasses

import numpy as np

from research import errors
from research.data import store as store_lib

_PACKING_STREAM = 0x7061636b  # separates this seeded stream from the sampler's


def _chunks(lengths_D: np.ndarray, starts_D: np.ndarray, seq_len: int):
  """(start, length) in the token array of every chunk of every document, in document order."""
  num_chunks_D = -(-lengths_D // seq_len)
  first_chunk_D = np.cumsum(num_chunks_D) - num_chunks_D
  doc_P = np.repeat(np.arange(len(lengths_D)), num_chunks_D)
  chunk_in_doc_P = np.arange(len(doc_P)) - first_chunk_D[doc_P]
  starts_P = starts_D[doc_P] + chunk_in_doc_P * seq_len
  lengths_P = np.minimum(seq_len, lengths_D[doc_P] - chunk_in_doc_P * seq_len)
  return starts_P, lengths_P


def _next_fit(lengths_P: np.ndarray, costs_PC: np.ndarray, budgets: tuple[int, ...]):
  """(row, column) where each chunk starts: a chunk whose costs do not fit opens the next row."""
  rows, columns = [], []
  row, column, used = -1, 0, list(budgets)
  for length, costs in zip(lengths_P.tolist(), costs_PC.tolist()):
    if any(u + c > b for u, c, b in zip(used, costs, budgets)):
      row, column, used = row + 1, 0, [0] * len(budgets)
    rows.append(row)
    columns.append(column)
    column += length
    used = [u + c for u, c in zip(used, costs)]
  return np.array(rows, np.int64), np.array(columns, np.int64)


def random_documents(num_documents: int, seed: int) -> np.ndarray:
  """int64 [num_documents]: the default document order, a seeded permutation."""
  return np.random.default_rng([_PACKING_STREAM, seed]).permutation(num_documents)


def by_score(scores_D: np.ndarray, seed: int) -> np.ndarray:
  """int64 [D]: the documents by ascending score, equal scores in `random_documents`' order."""
  shuffled_D = random_documents(len(scores_D), seed)
  return shuffled_D[np.argsort(scores_D[shuffled_D], kind='stable')]


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where packing puts every chunk P of a store's documents, in the order packing visits them:
  chunk P is tokens [start_P, start_P + length_P) of the store's token array, of document doc_P,
  at column column_P of row row_P (rows fill from column 0, chunk after chunk)."""
  rows_P: np.ndarray
  columns_P: np.ndarray
  starts_P: np.ndarray
  lengths_P: np.ndarray
  documents_P: np.ndarray

  @property
  def num_rows(self) -> int:
    return int(self.rows_P[-1]) + 1 if len(self.rows_P) else 0

  def first_rows(self, num_rows: int) -> 'Layout':
    """The chunks of the first `num_rows` rows only (rows fill in chunk order)."""
    end = int(np.searchsorted(self.rows_P, num_rows))
    return Layout(*(getattr(self, f.name)[:end] for f in dataclasses.fields(self)))


def layout(store: store_lib.DocumentStore, seq_len: int, seed: int, chunk_len: int | None = None,
           costs=None, budgets: tuple[int, ...] | None = None,
           order_D: np.ndarray | None = None) -> Layout:
  """Where `pack_documents` puts every chunk of the documents of `store`: a Layout."""
  if seq_len <= 0:
    raise errors.UserError(f'data.seq_len={seq_len} must be positive.')
  chunk_len = chunk_len or seq_len
  if order_D is None:
    order_D = random_documents(store.num_documents, seed)
  elif not np.array_equal(np.sort(order_D), np.arange(store.num_documents)):
    raise ValueError(f'order_D is not a permutation of the {store.num_documents} documents.')
  lengths_D = np.diff(store.offsets)[order_D]
  starts_P, lengths_P = _chunks(lengths_D, store.offsets[:-1][order_D], chunk_len)
  costs_PC = lengths_P[:, None] if costs is None else costs(lengths_P)
  rows_P, columns_P = _next_fit(lengths_P, costs_PC, budgets or (seq_len,))
  documents_P = np.repeat(np.asarray(order_D, np.int64), -(-lengths_D // chunk_len))
  return Layout(rows_P, columns_P, starts_P, lengths_P, documents_P)


def pack_documents(store: store_lib.DocumentStore, seq_len: int, seed: int,
                   chunk_len: int | None = None, costs=None,
                   budgets: tuple[int, ...] | None = None,
                   order_D: np.ndarray | None = None,
                   num_rows: int | None = None) -> dict[str, np.ndarray]:
  """Packs every document of `store` into rows of `seq_len` tokens (with `num_rows`, only the
  first that many rows: the tokens of the others are never gathered).

  Documents are visited in `order_D`, a permutation of the store's indices (default
  `random_documents(num_documents, seed)`), and cut into chunks of at most `chunk_len` tokens
  (default `seq_len`); `costs` ([P] lengths -> [P, C] costs, default the lengths) and `budgets`
  (C budgets, default (seq_len,)) decide which chunks share a row. Returns int32 arrays `targets`,
  `segment_ids`, `positions` and int64 `documents`, each [num_rows, seq_len].
  """
  plan = layout(store, seq_len, seed, chunk_len, costs, budgets, order_D)
  if num_rows is not None:
    plan = plan.first_rows(num_rows)
  rows_P, lengths_P, num_rows = plan.rows_P, plan.lengths_P, plan.num_rows
  first_chunk_of_row_N = np.searchsorted(rows_P, np.arange(num_rows))
  segments_P = np.arange(len(rows_P)) - first_chunk_of_row_N[rows_P] + 1

  chunk_T = np.repeat(np.arange(len(lengths_P)), lengths_P)
  position_T = np.arange(len(chunk_T)) - (np.cumsum(lengths_P) - lengths_P)[chunk_T]
  destination_T = rows_P[chunk_T] * seq_len + plan.columns_P[chunk_T] + position_T
  source_T = plan.starts_P[chunk_T] + position_T
  packed = {k: np.zeros([num_rows, seq_len], np.int32)
            for k in ('targets', 'segment_ids', 'positions')}
  packed['documents'] = np.full([num_rows, seq_len], -1, np.int64)
  if store.weights is not None:
    packed['weights'] = np.zeros([num_rows, seq_len], np.float32)
    packed['weights'].reshape(-1)[destination_T] = store.weights[source_T]
  packed['targets'].reshape(-1)[destination_T] = store.tokens[source_T]
  packed['segment_ids'].reshape(-1)[destination_T] = segments_P[chunk_T]
  packed['positions'].reshape(-1)[destination_T] = position_T
  packed['documents'].reshape(-1)[destination_T] = plan.documents_P[chunk_T]
  return packed
