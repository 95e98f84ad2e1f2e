"""Documents cut into windows of a model's sequence length and batched, as a model scores them.

A document is cut into windows of `seq_len` tokens, as training cuts it (research/data/packing.py):
every token is predicted exactly once, from the previous tokens of its window, the first token of a
window from the start id the run trained with (its BOS, or 0: research/data/vocabularies.start_id).
The windows are packed next-fit into rows with segment ids (one window never sees another) and the
rows batched. Documents are processed in groups of whole documents (`group_tokens` at a time), so
host memory stays bounded whatever the store's size. The scores of research/analysis/scores.py,
the in-context embeddings (research/data/in_context.py), in-loop multiple choice
(research/multiple_choice.py) and the lm-evaluation-harness adapter read documents this way.
"""

import numpy as np

from research.data import store as store_lib
from research.objectives import causal_lm

GROUP_TOKENS = 1 << 22  # tokens per group of documents scored together (~60 host bytes each)


def lengths(store: store_lib.DocumentStore) -> np.ndarray:
  """[D] int64: each document's number of tokens, EOS included."""
  return np.diff(store.offsets)


def pack_windows(offsets: np.ndarray, tokens_T: np.ndarray, seq_len: int,
                 start_id: int = 0) -> dict[str, np.ndarray]:
  """Every document cut into windows of `seq_len` tokens, packed next-fit, in document order, into
  rows: int32 `targets`, `inputs` (causal LM from `start_id`, research/objectives/causal_lm.py),
  `segment_ids` (0 on padding), `positions` and `token_index` (the index into `tokens_T` of each
  target, -1 on padding), each [rows, seq_len]. `offsets` [D + 1] delimit the documents in
  `tokens_T`, from 0."""
  offsets = np.asarray(offsets, np.int64)
  lengths_D = np.diff(offsets)
  windows_D = -(-lengths_D // seq_len)
  doc_W = np.repeat(np.arange(len(lengths_D)), windows_D)
  in_doc_W = np.arange(len(doc_W)) - (np.cumsum(windows_D) - windows_D)[doc_W]
  starts_W = offsets[doc_W] + in_doc_W * seq_len
  lengths_W = np.minimum(seq_len, lengths_D[doc_W] - in_doc_W * seq_len)
  rows_W, columns_W, segments_W = (np.empty(len(doc_W), np.int64) for _ in range(3))
  row, column, segment = -1, seq_len, 0
  for w, length in enumerate(lengths_W.tolist()):
    if column + length > seq_len:
      row, column, segment = row + 1, 0, 0
    segment += 1
    rows_W[w], columns_W[w], segments_W[w] = row, column, segment
    column += length
  num_rows = row + 1
  window_T = np.repeat(np.arange(len(doc_W)), lengths_W)
  position_T = np.arange(len(window_T)) - (np.cumsum(lengths_W) - lengths_W)[window_T]
  destination_T = rows_W[window_T] * seq_len + columns_W[window_T] + position_T
  source_T = starts_W[window_T] + position_T
  rows = {key: np.zeros([num_rows, seq_len], np.int32)
          for key in ('targets', 'segment_ids', 'positions')}
  rows['token_index'] = np.full([num_rows, seq_len], -1, np.int64)
  rows['targets'].reshape(-1)[destination_T] = tokens_T[source_T]
  rows['segment_ids'].reshape(-1)[destination_T] = segments_W[window_T]
  rows['positions'].reshape(-1)[destination_T] = position_T
  rows['token_index'].reshape(-1)[destination_T] = source_T
  rows['inputs'] = causal_lm.causal_lm_example(rows['targets'], rows['segment_ids'], start_id)
  return rows


def power_of_two_ceiling(n) -> np.ndarray:
  """The least power of two >= n (1 for n <= 1), elementwise, int64."""
  return (2 ** np.ceil(np.log2(np.maximum(np.asarray(n), 1)))).astype(np.int64)


def document_rows(starts_N: np.ndarray, lengths_N: np.ndarray, tokens_T: np.ndarray, seq_len: int,
                  num_windows: int, row_length: int, start_id: int = 0) -> dict[str, np.ndarray]:
  """N documents, document n the tokens tokens_T[starts_N[n]:][:lengths_N[n]], each alone in
  `num_windows` rows of `row_length` tokens: row w holds its window w of `seq_len` tokens (cut as
  pack_windows cuts it), rows past its windows are padding, and a document of length 0 is all
  padding. int32 `inputs` (from `start_id`), `targets`, `segment_ids` (1 on the document's tokens,
  0 on padding) and `positions`, each [N, num_windows, row_length]; row_length must hold every
  window (seq_len when a document has several)."""
  in_document_WL = np.arange(num_windows)[:, None] * seq_len + np.arange(row_length)
  real_NWL = in_document_WL < np.asarray(lengths_N)[:, None, None]
  source_NWL = np.where(real_NWL, np.asarray(starts_N)[:, None, None] + in_document_WL, 0)
  rows = {'targets': np.where(real_NWL, tokens_T[source_NWL], 0).astype(np.int32),
          'segment_ids': real_NWL.astype(np.int32),
          'positions': np.where(real_NWL, np.arange(row_length), 0).astype(np.int32)}
  rows['inputs'] = causal_lm.causal_lm_example(rows['targets'], rows['segment_ids'], start_id)
  return rows


def document_groups(offsets: np.ndarray, max_tokens: int):
  """(first, end) document ranges of at most `max_tokens` tokens each (one longer document alone)."""
  num_docs, first = len(offsets) - 1, 0
  while first < num_docs:
    end = int(np.searchsorted(offsets, offsets[first] + max_tokens, side='right')) - 1
    end = min(max(end, first + 1), num_docs)
    yield first, end
    first = end


def grouped_documents(tokens: np.ndarray, offsets: np.ndarray, group_tokens: int):
  """The documents tokens[offsets[d]:offsets[d + 1]], a group of `document_groups` at a time: yields
  (first, end, group_offsets, tokens_T) for documents first..end - 1, tokens_T their int32 tokens
  and group_offsets [end - first + 1] their offsets in tokens_T, from 0."""
  offsets = np.asarray(offsets, np.int64)
  for first, end in document_groups(offsets, group_tokens):
    tokens_T = np.asarray(tokens[offsets[first]:offsets[end]]).astype(np.int32)
    yield first, end, offsets[first:end + 1] - offsets[first], tokens_T


def window_batches(tokens: np.ndarray, offsets: np.ndarray, seq_len: int, batch_size: int,
                   group_tokens: int, start_id: int = 0):
  """The documents tokens[offsets[d]:offsets[d + 1]] as batches of model input, a group of
  `grouped_documents` at a time: yields (first, end, group_offsets, batches), batches a list of
  dicts of `batch_size` rows each, the group's windows packed into rows by `pack_windows` (its
  token_index indexes the group's tokens) and the last batch filled out with padding rows
  (token_index -1, 0 in the other fields)."""
  for first, end, group_offsets, tokens_T in grouped_documents(tokens, offsets, group_tokens):
    rows = pack_windows(group_offsets, tokens_T, seq_len, start_id)
    padding = -len(rows['targets']) % batch_size
    rows = {key: np.pad(value, [(0, padding), (0, 0)],
                        constant_values=-1 if key == 'token_index' else 0)
            for key, value in rows.items()}
    batches = [{key: value[i:i + batch_size] for key, value in rows.items()}
               for i in range(0, len(rows['targets']), batch_size)]
    yield first, end, group_offsets, batches
