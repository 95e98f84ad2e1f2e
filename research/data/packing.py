"""Packing a document store into fixed-length rows with segment ids and positions.

Documents are visited in a seeded permutation. A document longer than the row length L is cut into
chunks of L tokens (the last one shorter), each chunk its own segment. Chunks are placed greedily
in order: a chunk goes into the current row if it fits, otherwise it starts a new row (next-fit;
no look-back, so the row order follows the document order).

Per row, `segment_ids` number the chunks 1, 2, 3, ... and are 0 on padding; `positions` count
from 0 within each chunk; `documents` hold the store index of each token's document (-1 on
padding), so inspection can name a row's documents and their metadata. No document is dropped.
"""

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


def _next_fit(lengths_P: np.ndarray, seq_len: int):
  """(row, column) where each chunk starts: a chunk that does not fit opens the next row."""
  rows, columns = [], []
  row, column = -1, seq_len
  for length in lengths_P.tolist():
    if column + length > seq_len:
      row, column = row + 1, 0
    rows.append(row)
    columns.append(column)
    column += length
  return np.array(rows, np.int64), np.array(columns, np.int64)


def pack_documents(store: store_lib.DocumentStore, seq_len: int,
                   seed: int) -> dict[str, np.ndarray]:
  """Packs every document of `store` into rows of `seq_len` tokens.

  Returns int32 arrays `targets`, `segment_ids`, `positions` and `documents`, each
  [num_rows, seq_len].
  """
  if seq_len <= 0:
    raise errors.UserError(f'data.seq_len={seq_len} must be positive.')
  order_D = np.random.default_rng([_PACKING_STREAM, seed]).permutation(store.num_documents)
  lengths_D = np.diff(store.offsets)[order_D]
  starts_P, lengths_P = _chunks(lengths_D, store.offsets[:-1][order_D], seq_len)
  rows_P, columns_P = _next_fit(lengths_P, seq_len)
  num_rows = int(rows_P[-1]) + 1 if len(rows_P) else 0
  first_chunk_of_row_N = np.searchsorted(rows_P, np.arange(num_rows))
  segments_P = np.arange(len(rows_P)) - first_chunk_of_row_N[rows_P] + 1

  chunk_T = np.repeat(np.arange(len(lengths_P)), lengths_P)
  position_T = np.arange(len(chunk_T)) - (np.cumsum(lengths_P) - lengths_P)[chunk_T]
  destination_T = rows_P[chunk_T] * seq_len + columns_P[chunk_T] + position_T
  packed = {k: np.zeros([num_rows, seq_len], np.int32)
            for k in ('targets', 'segment_ids', 'positions')}
  packed['documents'] = np.full([num_rows, seq_len], -1, np.int32)
  packed['targets'].reshape(-1)[destination_T] = store.tokens[starts_P[chunk_T] + position_T]
  packed['segment_ids'].reshape(-1)[destination_T] = segments_P[chunk_T]
  packed['positions'].reshape(-1)[destination_T] = position_T
  doc_P = np.repeat(order_D, -(-lengths_D // seq_len))  # the store index of every chunk
  packed['documents'].reshape(-1)[destination_T] = doc_P[chunk_T]
  return packed
