"""Per-document scores of a document store: length, compressibility and scores from checkpoints.

Scores by name (`SCORES`: the name `launch.score --scores` takes -> the field it writes):

    length        the document's tokens, EOS included
    zlib          zlib_ratio: zlib-compressed bytes / bytes of the document's UTF-8 text (level 9;
                  0 for an empty text). The PPL/zlib baseline of Carlini et al. 2021 ("Extracting
                  Training Data from Large Language Models", arXiv 2012.07805) divides by it.
    nll           mean negative log-likelihood per token, in nats
    perplexity    exp(nll)
    min_k         min_k_prob: the mean log-probability of the floor(k * N) (at least 1) least likely
                  of the document's N tokens (Shi et al. 2023, "Detecting Pretraining Data from Large
                  Language Models", arXiv 2310.16789), k = 0.2 by default. It is the paper's
                  statistic, a log-probability (<= 0; the reference code stores its negation): high
                  means no very surprising token, "likely seen in training".
    el2n          the mean over the document's tokens of the per-token error L2 norm
                  ||softmax(logits_t) - onehot(target_t)||_2, the softmax over the model's whole
                  output vocabulary (Paul et al. 2021, "Deep Learning on a Data Diet: Finding
                  Important Examples Early in Training", arXiv 2107.07075, whose examples are single
                  labels; a document's score here averages its tokens' norms, so long and short
                  documents compare)
    grand         GraNd (the same paper): ||grad_w loss(w, x)||_2, the L2 norm of the gradient over
                  all parameters w of the document's loss, its mean token cross-entropy (every
                  token weighted as in nll; for a document of several windows, the gradient of the
                  mean over all its tokens, i.e. the sum of its windows' gradients). A backward pass
                  and a gradient per document: far costlier than the forward scores, computed only
                  when asked for
    learnability  nll at the early checkpoint(s) minus nll at the checkpoint(s): how much of the
                  document training has learnt (loss drop between two checkpoints)
    difficulty    the document's own `difficulty` metadata (the synthetic generators' labels)

Model scores come from causal language-model log-probabilities of the documents cut into windows
and batched as research/data/windows.py cuts them, on the mesh of the checkpoint's model
(research/finished.py, sharded as training shards): a jitted forward pass returns each token's
log-probability and error norm, and the host aggregates them per document, a group of whole
documents at a time. Given several checkpoints (independent seeds or steps, as Data Diet averages
EL2N over runs), each model score is the mean over the checkpoints of the per-document score;
perplexity is exp of the mean nll, and GraNd is the paper's expectation over weights.

GraNd needs one gradient per document, so a document does not share rows: it has W rows of its
own, one window each, in a batch [N, W, L]. W is its number of windows and L is data.seq_len, or
for a one-window document its length, both rounded up to a power of two so that few shapes compile
(the rows and tokens added have weight 0). One jit takes the per-document gradients with
jax.vmap(jax.grad) and returns only their norms [N]. N is batch_size // W documents (each holds a
gradient the size of the parameters), rounded up to a multiple of the data-parallel size, and the
documents are sharded over the data-parallel axes.
"""

import functools
import math
import zlib
from collections.abc import Sequence

import jax
import numpy as np
from etils import epath

from research import errors, finished, sharding
from research.analysis import lqs
from research.data import sources, windows
from research.data import store as store_lib

SCORES = {'nll': 'nll', 'perplexity': 'perplexity', 'min_k': 'min_k_prob', 'el2n': 'el2n',
          'length': 'length', 'zlib': 'zlib_ratio', 'learnability': 'learnability',
          'difficulty': 'difficulty', 'grand': 'grand', 'lqs': 'lqs'}
MODEL_SCORES = ('nll', 'perplexity', 'min_k', 'el2n', 'learnability', 'grand', 'lqs')
DEFAULT_MIN_K = 0.2
_LQS_STREAM = 0x6c7173  # seeded-stream tag of LQS's proxy sample


# --- scores without a model ------------------------------------------------------------------------


def zlib_ratio(data: bytes | str) -> float:
  """len(zlib.compress(data, 9)) / len(data) of UTF-8 `data`; 0.0 for empty data."""
  data = data.encode('utf-8') if isinstance(data, str) else data
  return len(zlib.compress(data, 9)) / len(data) if data else 0.0


# --- per-token statistics on device, per-document aggregates on host ------------------------------


def min_k_count(num_tokens, k: float):
  """floor(k * N), at least 1: how many of N tokens Min-K% averages (a hair of slack absorbs float
  error, so k = 0.3 of 10 tokens is 3)."""
  return np.maximum(1, np.floor(np.asarray(num_tokens) * k + 1e-9).astype(np.int64))


def document_scores(log_prob_T: np.ndarray, el2n_T: np.ndarray, offsets: np.ndarray,
                    k: float = DEFAULT_MIN_K) -> dict[str, np.ndarray]:
  """`nll`, `min_k_prob` and `el2n` [D] of documents whose tokens' statistics are [T] arrays, document
  d being tokens offsets[d]:offsets[d + 1] (offsets [D + 1], from 0, every document non-empty)."""
  offsets = np.asarray(offsets, np.int64) - offsets[0]
  lengths_D = np.diff(offsets)
  num_docs = len(lengths_D)
  doc_T = np.repeat(np.arange(num_docs), lengths_D)
  log_prob_T = np.asarray(log_prob_T, np.float64)
  nll_D = -np.bincount(doc_T, log_prob_T, num_docs) / lengths_D
  el2n_D = np.bincount(doc_T, np.asarray(el2n_T, np.float64), num_docs) / lengths_D
  order_T = np.lexsort((log_prob_T, doc_T))  # by document, then ascending log-probability
  rank_T = np.arange(len(doc_T)) - offsets[doc_T]
  count_D = min_k_count(lengths_D, k)
  lowest = rank_T < count_D[doc_T]
  min_k_D = np.bincount(doc_T[lowest], log_prob_T[order_T][lowest], num_docs) / count_D
  return {'nll': nll_D, 'min_k_prob': min_k_D, 'el2n': el2n_D}


# --- checkpoints -----------------------------------------------------------------------------------


def prefixed(tokens: np.ndarray, offsets: np.ndarray, prefix: Sequence[int]
             ) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, offsets) of the documents tokens[offsets[d]:offsets[d + 1]], each with the ids of
  `prefix` before it."""
  offsets = np.asarray(offsets, np.int64)
  lengths_D = np.diff(offsets) + len(prefix)
  new_offsets = np.concatenate([[0], np.cumsum(lengths_D)])
  doc_T = np.repeat(np.arange(len(lengths_D)), lengths_D)
  position_T = np.arange(new_offsets[-1]) - new_offsets[doc_T]
  in_prefix = position_T < len(prefix)
  out = np.empty(new_offsets[-1], tokens.dtype)
  out[in_prefix] = np.asarray(prefix, tokens.dtype)[position_T[in_prefix]]
  out[~in_prefix] = tokens[offsets[0]:offsets[-1]]
  return out, new_offsets


def model_scores(loaded: finished.LoadedCheckpoint, tokens: np.ndarray, offsets: np.ndarray,
                 k: float = DEFAULT_MIN_K, batch_size: int = 0,
                 group_tokens: int = windows.GROUP_TOKENS,
                 prefix: Sequence[int] = ()) -> dict[str, np.ndarray]:
  """`nll`, `min_k_prob` and `el2n` [D] of the documents tokens[offsets[d]:offsets[d + 1]] under
  the checkpoint; `batch_size` rows per forward pass (0: the run's eval.batch_size), a multiple of
  the data-parallel size. With `prefix`, the model reads those ids before every document and
  scores the document's tokens alone: the document's likelihood conditioned on the prefix (a MeCo
  source tag, Gao et al. 2025, arXiv 2501.01956; a control token, Korbak et al. 2023, arXiv
  2302.08582)."""
  batch_size = batch_size or loaded.config.eval.batch_size
  results = {name: np.zeros(len(offsets) - 1) for name in ('nll', 'min_k_prob', 'el2n')}
  if len(prefix):
    tokens, offsets = prefixed(tokens, offsets, prefix)
  for first, end, group_offsets, batches in windows.window_batches(tokens, offsets, loaded.seq_len,
                                                           batch_size, group_tokens,
                                                           loaded.start_id):
    pending = [loaded.statistics(batch) for batch in batches]  # dispatched together, fetched once
    statistics = {name: np.empty(group_offsets[-1], np.float32) for name in ('log_prob', 'el2n')}
    for batch, fetched in zip(batches, jax.device_get(pending)):
      real = batch['token_index'] >= 0
      for name, values in statistics.items():
        values[batch['token_index'][real]] = fetched[name][real]
    if len(prefix):  # the documents' own tokens, without the prefix before each
      doc_T = np.repeat(np.arange(len(group_offsets) - 1), np.diff(group_offsets))
      scored_T = np.arange(group_offsets[-1]) - group_offsets[doc_T] >= len(prefix)
      statistics = {name: values[scored_T] for name, values in statistics.items()}
      group_offsets = group_offsets - len(prefix) * np.arange(len(group_offsets))
    scores = document_scores(statistics['log_prob'], statistics['el2n'], group_offsets, k)
    for name, values in scores.items():
      results[name][first:end] = values
  return results


def grand_scores(loaded: finished.LoadedCheckpoint, tokens: np.ndarray, offsets: np.ndarray,
                 batch_size: int = 0, group_tokens: int = windows.GROUP_TOKENS) -> dict[str, np.ndarray]:
  """`grand` [D] (GraNd, Paul et al. 2021, arXiv 2107.07075) of the documents
  tokens[offsets[d]:offsets[d + 1]] under the checkpoint: batches of documents of W windows hold
  batch_size // W of them (0: the run's eval.batch_size), rounded up to a multiple of the
  data-parallel size."""
  return {'grand': per_document(loaded, tokens, offsets, loaded.grand, batch_size, group_tokens)}


def per_document(loaded: finished.LoadedCheckpoint, tokens: np.ndarray, offsets: np.ndarray,
                 score_batch, batch_size: int = 0,
                 group_tokens: int = windows.GROUP_TOKENS) -> np.ndarray:
  """[D]: `score_batch` (a global batch of `windows.document_rows` [N, W, L] -> device array [N],
  one value per document, e.g. `loaded.grand`) of each document tokens[offsets[d]:offsets[d + 1]],
  its documents batched as `grand_scores` says."""
  batch_size = batch_size or loaded.config.eval.batch_size
  parallel, seq_len = loaded.data_parallel_size(), loaded.seq_len
  scores_D = np.zeros(len(offsets) - 1)
  for first, _, group_offsets, group_tokens_T in windows.grouped_documents(tokens, offsets, group_tokens):
    starts_N, lengths_N = group_offsets[:-1], np.diff(group_offsets)
    windows_N = windows.power_of_two_ceiling(-(-lengths_N // seq_len))
    row_length_N = np.where(windows_N > 1, seq_len,
                            np.minimum(seq_len, windows.power_of_two_ceiling(lengths_N)))
    pending = []  # dispatched together, fetched once
    for num_windows, row_length in sorted(set(zip(windows_N.tolist(), row_length_N.tolist()))):
      bucket = np.flatnonzero((windows_N == num_windows) & (row_length_N == row_length))
      num_documents = -(-max(1, batch_size // num_windows) // parallel) * parallel
      for i in range(0, len(bucket), num_documents):
        documents = bucket[i:i + num_documents]
        padding = num_documents - len(documents)
        batch = windows.document_rows(np.pad(starts_N[documents], (0, padding)),
                              np.pad(lengths_N[documents], (0, padding)), group_tokens_T, seq_len,
                              num_windows, row_length, loaded.start_id)
        pending.append((first + documents, score_batch(batch)))
    for documents, scores_N in jax.device_get(pending):
      scores_D[documents] = scores_N[:len(documents)]
  return scores_D


def lqs_scores(loaded: finished.LoadedCheckpoint, tokens: np.ndarray, offsets: np.ndarray,
               target: store_lib.DocumentStore, steps: int, lr: float, proxy_batch: int,
               seed: int = 0, batch_size: int = 0) -> dict[str, np.ndarray]:
  """`lqs` [D] (DELT's Learnability-Quality Score, research/analysis/lqs.py) of the documents
  tokens[offsets[d]:offsets[d + 1]]: a trajectory of `steps` gradient-descent steps at `lr` from
  the checkpoint on batches of `proxy_batch` rows of a seeded sample of those documents, its
  co-state from the loss on `target`'s documents (its first `proxy_batch` rows), then each
  document's alignment with it along the trajectory."""
  states, lambdas = lqs_trajectory(loaded, tokens, offsets, target, steps, lr, proxy_batch, seed)
  return {'lqs': trajectory_scores(loaded, tokens, offsets, states, lambdas, lr, batch_size)}


def trajectory_scores(loaded: finished.LoadedCheckpoint, tokens: np.ndarray, offsets: np.ndarray,
                      states: Sequence, lambdas: Sequence, lr: float,
                      batch_size: int = 0) -> np.ndarray:
  """[D] LQS of the documents along `lqs_trajectory`'s `states` and `lambdas`: each document's
  gradient at theta_t dotted with lambda_{t+1}, over its gradient's norm at theta_0
  (`lqs.scores`)."""
  dots_TD = np.stack([per_document(loaded, tokens, offsets,
                                   functools.partial(loaded.alignment, states[t], lambdas[t + 1]),
                                   batch_size) for t in range(len(states) - 1)])
  norms_D = per_document(loaded, tokens, offsets, loaded.grand, batch_size)
  return lqs.scores(dots_TD, norms_D, lr)


def lqs_trajectory(loaded: finished.LoadedCheckpoint, tokens: np.ndarray, offsets: np.ndarray,
                   target: store_lib.DocumentStore, steps: int, lr: float, proxy_batch: int,
                   seed: int = 0) -> tuple[list, list]:
  """(theta_0..theta_T, lambda_0..lambda_T) of `lqs_scores`: the trajectory on batches of
  `proxy_batch` rows (rounded up to the data-parallel size) of the windows of a seeded permutation
  of the documents, and its co-state towards the first as many rows of `target`'s documents."""
  parallel = loaded.data_parallel_size()
  rows = -(-proxy_batch // parallel) * parallel
  order_D = np.random.default_rng([_LQS_STREAM, seed]).permutation(len(offsets) - 1)
  proxy = window_rows(tokens, offsets, order_D, loaded, rows * steps)
  batches = [loaded.placed.place({k: v[i:i + rows] for k, v in proxy.items()})
             for i in range(0, rows * steps, rows)]
  target_batch = loaded.placed.place(window_rows(
      target.tokens, target.offsets, np.arange(target.num_documents), loaded, rows))
  placed = loaded.placed
  with sharding.activate(placed.mesh, placed.rules):
    target_grad = jax.jit(jax.grad(lambda p: loaded.batch_loss(p, target_batch)))
    states = lqs.trajectory(loaded.batch_loss, loaded.params, batches, lr)
    return states, lqs.costates(loaded.batch_loss, target_grad, states, batches, lr)


def window_rows(tokens: np.ndarray, offsets: np.ndarray, order_D: np.ndarray,
                loaded: finished.LoadedCheckpoint, num_rows: int) -> dict[str, np.ndarray]:
  """`num_rows` rows of the windows of the documents in `order_D` (packed as windows.pack_windows,
  cycled when they fill fewer; without `token_index`)."""
  ends_D = np.cumsum(np.diff(offsets)[order_D])
  needed = np.searchsorted(ends_D, num_rows * loaded.seq_len) + 1
  chosen_tokens = np.concatenate([tokens[offsets[d]:offsets[d + 1]] for d in order_D[:needed]])
  rows = windows.pack_windows(np.concatenate([[0], ends_D[:needed]]), chosen_tokens,
                              loaded.seq_len, loaded.start_id)
  rows.pop('token_index')
  cycled = np.arange(num_rows) % len(rows['targets'])
  return {k: v[cycled] for k, v in rows.items()}


def mean_scores(per_checkpoint: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """The per-document mean of each score over checkpoints (Data Diet's expectation over runs)."""
  return {name: np.mean([scores[name] for scores in per_checkpoint], axis=0)
          for name in per_checkpoint[0]}


# --- documents of a text file ------------------------------------------------------------------------

def text_file_documents(path: str, text_field: str = 'text') -> list[dict]:
  """The documents of `path`: a .jsonl file gives one per non-blank line (its `text_field`, other
  scalar fields as metadata), any other file one per non-blank line of text; ids `PATH:LINE`
  (1-based), as a `files` task over the same path with format 'jsonl' names them."""
  if not epath.Path(path).exists():
    raise errors.UserError(f'--text_file={path} does not exist; give a .jsonl file (one JSON '
                           'object with a "text" field a line) or a text file (one document a '
                           'line).')
  if path.endswith('.jsonl'):
    return list(sources.file_documents(path, 'jsonl', text_field))
  documents = []
  with epath.Path(path).open('rb') as f:
    for number, raw in enumerate(f, start=1):
      try:
        line = raw.decode('utf-8').rstrip('\r\n')
      except UnicodeDecodeError as e:
        raise errors.UserError(f'--text_file={path} line {number} is not valid UTF-8; re-encode '
                               'the file as UTF-8.') from e
      if line.strip():
        documents.append({'id': f'{path}:{number}', 'text': line})
  return documents


def tokenize_documents(documents: list[dict], vocabulary) -> store_lib.DocumentStore:
  """An in-memory DocumentStore of `documents` (each `text` encoded, then EOS, as a task's store)."""
  eos = vocabulary.eos_id
  pieces = [list(vocabulary.encode(d['text'])) + [eos] for d in documents]
  lengths_D = np.array([len(p) for p in pieces], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths_D)]).astype(np.int64)
  tokens = np.array([t for p in pieces for t in p], np.int32)
  return store_lib.DocumentStore(tokens=tokens, offsets=offsets,
                                 doc_ids=[d['id'] for d in documents],
                                 manifest={'num_documents': len(documents),
                                           'num_tokens': int(tokens.size)}, directory='')


def check_min_k(k: float) -> None:
  if not 0 < k <= 1 or math.isnan(k):
    raise errors.UserError(f'--min_k={k} must be in (0, 1]: the fraction of least likely tokens '
                           'Min-K% prob averages (0.2 in Shi et al. 2023).')
