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

Model scores come from causal language-model log-probabilities. A document is cut into windows of
the model's `data.seq_len` tokens, as training cuts it (research/data/packing.py): every token is
predicted exactly once, from the previous tokens of its window, the first token of a window from the
start id the run trained with (its BOS, or 0: research/data/vocabularies.start_id). The windows are
packed next-fit into rows with segment ids (one window never sees another), the rows are batched
and placed on the mesh of a `research.train.Trainer` built from the checkpoint's config (sharded as
training shards), a jitted forward pass returns each token's log-probability and error norm, and
the host aggregates them per document. Documents are processed in groups of whole documents
(`group_tokens` at a time), so host memory stays bounded whatever the store's size. Given several
checkpoints (independent seeds or steps, as Data Diet averages EL2N over runs), each model score
is the mean over the checkpoints of the per-document score; perplexity is exp of the mean nll, and
GraNd is the paper's expectation over weights.

GraNd needs one gradient per document, so a document does not share rows: it has W rows of its
own, one window each, in a batch [N, W, L]. W is its number of windows and L is data.seq_len, or
for a one-window document its length, both rounded up to a power of two so that few shapes compile
(the rows and tokens added have weight 0). One jit takes the per-document gradients with
jax.vmap(jax.grad) and returns only their norms [N]. N is batch_size // W documents (each holds a
gradient the size of the parameters), rounded up to a multiple of the data-parallel size, and the
documents are sharded over the data-parallel axes.
"""

import dataclasses
import math
import zlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from research import errors, runs, sharding
from research.data import store as store_lib
from research.data import sources, vocabularies
from research.objectives import causal_lm, losses

SCORES = {'nll': 'nll', 'perplexity': 'perplexity', 'min_k': 'min_k_prob', 'el2n': 'el2n',
          'length': 'length', 'zlib': 'zlib_ratio', 'learnability': 'learnability',
          'difficulty': 'difficulty', 'grand': 'grand'}
MODEL_SCORES = ('nll', 'perplexity', 'min_k', 'el2n', 'learnability', 'grand')
DEFAULT_MIN_K = 0.2
GROUP_TOKENS = 1 << 22  # tokens per group of documents scored together (~60 host bytes each)


# --- scores without a model ------------------------------------------------------------------------

def lengths(store: store_lib.DocumentStore) -> np.ndarray:
  """[D] int64: each document's number of tokens, EOS included."""
  return np.diff(store.offsets)


def zlib_ratio(data: bytes | str) -> float:
  """len(zlib.compress(data, 9)) / len(data) of UTF-8 `data`; 0.0 for empty data."""
  data = data.encode('utf-8') if isinstance(data, str) else data
  return len(zlib.compress(data, 9)) / len(data) if data else 0.0


def document_texts(store: store_lib.DocumentStore, vocabulary) -> list[str]:
  """Each document's text, decoded from its tokens without the final EOS."""
  eos = vocabulary.eos_id
  texts = []
  for i in range(store.num_documents):
    ids = np.asarray(store.document(i)).tolist()
    if ids and ids[-1] == eos:
      ids = ids[:-1]
    texts.append(vocabulary.decode(ids))
  return texts


# --- per-token statistics on device, per-document aggregates on host ------------------------------

def token_statistics(logits_BLV, targets_BL) -> dict:
  """Each token's `log_prob` of its target and `el2n`, ||softmax(logits) - onehot(target)||_2,
  both [B, L] float32 (logits taken in float32)."""
  logits_BLV = logits_BLV.astype(jnp.float32)
  log_probs_BLV = jax.nn.log_softmax(logits_BLV, axis=-1)
  log_prob_BL = jnp.take_along_axis(log_probs_BLV, targets_BL[..., None], axis=-1)[..., 0]
  error_BLV = jnp.exp(log_probs_BLV) - jax.nn.one_hot(targets_BL, logits_BLV.shape[-1])
  return {'log_prob': log_prob_BL, 'el2n': jnp.sqrt(jnp.sum(jnp.square(error_BLV), axis=-1))}


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


# --- checkpoints -----------------------------------------------------------------------------------

def checkpoint_config(path: str, flag: str = '--checkpoint',
                      decoder_only: bool = True) -> ml_collections.ConfigDict:
  """The config of the run (or launch.convert output) at checkpoint path `path`, local or gs://
  (research/runs.py). Fails naming `flag` when there is no checkpoint or no config.json, or, if
  `decoder_only` (as scores need), the model is not a decoder."""
  where = f'{flag}={path}'
  runs.find_checkpoint(path, where)
  config = runs.load_config(path, where)
  if decoder_only and config.model.architecture != 'decoder':
    raise errors.UserError(f'{flag}={path} is an {config.model.architecture} model; scores are '
                           'left-to-right log-likelihoods of a decoder (model.architecture='
                           "'decoder').")
  config.objective.distill.teacher = ''  # scoring needs no teacher
  return config


@dataclasses.dataclass
class LoadedCheckpoint:
  """A checkpoint's parameters on the mesh of its Trainer, and a jitted per-token scorer."""
  path: str
  step: int
  config: ml_collections.ConfigDict
  trainer: object  # research.train.Trainer
  params: object

  def __post_init__(self):
    self.start_id = vocabularies.data_start_id(self.config.data)
    trainer = self.trainer
    model = trainer.model

    def statistics(params, batch):
      logits_BLV = model.apply({'params': params}, batch)
      return token_statistics(logits_BLV, batch['targets'])

    def document_loss(params, rows):
      """The mean token cross-entropy of one document's rows [W, L]."""
      logits_WLV = model.apply({'params': params}, rows)
      sums = losses.token_cross_entropy(logits_WLV, rows['targets'], rows['segment_ids'] > 0)
      return sums['cross_entropy_sum'] / jnp.maximum(sums['weight_sum'], 1.0)

    def grand(params, batch):
      gradient_norm = lambda rows: optax.tree.norm(jax.grad(document_loss)(params, rows))
      return jax.vmap(gradient_norm)(batch)

    self._statistics = self.jit(statistics)
    self._grand = self.jit(grand)

  @property
  def seq_len(self) -> int:
    return self.config.data.seq_len

  def data_parallel_size(self) -> int:
    return sharding.data_parallel_size(dict(self.trainer.mesh.shape), self.trainer.rules)

  def jit(self, fn):
    """jax.jit of fn(params, batch) on the trainer's mesh: the parameters and the batch sharded as
    training shards them, the outputs replicated."""
    trainer = self.trainer
    return jax.jit(fn, in_shardings=(trainer.state_shardings.params, trainer.batch_sharding),
                   out_shardings=sharding.replicated(trainer.mesh))

  def apply(self, jitted, batch: dict[str, np.ndarray]):
    """The device arrays of jitted(params, batch), `jitted` from `jit`, for a global host batch of
    `pack_windows` rows (its token_index left out), the model's logical sharding rules active (not
    waited for)."""
    model_batch = {k: batch[k] for k in ('inputs', 'targets', 'segment_ids', 'positions')}
    with sharding.activate(self.trainer.mesh, self.trainer.rules):
      return jitted(self.params, self.trainer.place(model_batch))

  def statistics(self, batch: dict[str, np.ndarray]) -> dict:
    """The device arrays of `token_statistics` for a global host batch (not waited for)."""
    return self.apply(self._statistics, batch)

  def grand(self, batch: dict[str, np.ndarray]):
    """The device array [N] of each document's GraNd for a global host batch of `document_rows`
    [N, W, L] (not waited for). The model's activation constraints are left out (no logical rules
    active): under vmap they would shard each document's windows instead of the documents, which
    follow the batch's sharding."""
    return self._grand(self.params, self.trainer.place(batch))


def load_checkpoint(path: str, config: ml_collections.ConfigDict | None = None, devices=None,
                    fsdp: int = 1, tensor: int = 1, flag: str = '--checkpoint') -> LoadedCheckpoint:
  """The parameters of checkpoint path `path` (a workdir: its latest checkpoint; WORKDIR/
  checkpoints/<step>: that one; or a launch.convert output), read onto a mesh of `fsdp` x `tensor`
  x the remaining devices as data parallelism, with the run's mesh.rules."""
  from research import train  # train imports much; scores without a model need none of it

  config = config or checkpoint_config(path, flag)
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor, config.mesh.expert = -1, fsdp, tensor, 1
  devices = jax.devices() if devices is None else devices
  trainer = train.Trainer(config, devices)
  params, step = runs.restore_params(path, trainer.abstract_state.params, f'{flag}={path}')
  return LoadedCheckpoint(path=path, step=step, config=config, trainer=trainer, params=params)


def model_scores(loaded: LoadedCheckpoint, tokens: np.ndarray, offsets: np.ndarray,
                 k: float = DEFAULT_MIN_K, batch_size: int = 0,
                 group_tokens: int = GROUP_TOKENS) -> dict[str, np.ndarray]:
  """`nll`, `min_k_prob` and `el2n` [D] of the documents tokens[offsets[d]:offsets[d + 1]] under
  the checkpoint; `batch_size` rows per forward pass (0: the run's eval.batch_size), a multiple of
  the data-parallel size."""
  batch_size = batch_size or loaded.config.eval.batch_size
  results = {name: np.zeros(len(offsets) - 1) for name in ('nll', 'min_k_prob', 'el2n')}
  for first, end, group_offsets, batches in window_batches(tokens, offsets, loaded.seq_len,
                                                           batch_size, group_tokens,
                                                           loaded.start_id):
    pending = [loaded.statistics(batch) for batch in batches]  # dispatched together, fetched once
    statistics = {name: np.empty(group_offsets[-1], np.float32) for name in ('log_prob', 'el2n')}
    for batch, fetched in zip(batches, jax.device_get(pending)):
      real = batch['token_index'] >= 0
      for name, values in statistics.items():
        values[batch['token_index'][real]] = fetched[name][real]
    scores = document_scores(statistics['log_prob'], statistics['el2n'], group_offsets, k)
    for name, values in scores.items():
      results[name][first:end] = values
  return results


def grand_scores(loaded: LoadedCheckpoint, tokens: np.ndarray, offsets: np.ndarray,
                 batch_size: int = 0, group_tokens: int = GROUP_TOKENS) -> dict[str, np.ndarray]:
  """`grand` [D] (GraNd, Paul et al. 2021, arXiv 2107.07075) of the documents
  tokens[offsets[d]:offsets[d + 1]] under the checkpoint: batches of documents of W windows hold
  batch_size // W of them (0: the run's eval.batch_size), rounded up to a multiple of the
  data-parallel size."""
  batch_size = batch_size or loaded.config.eval.batch_size
  parallel, seq_len = loaded.data_parallel_size(), loaded.seq_len
  grand_D = np.zeros(len(offsets) - 1)
  for first, _, group_offsets, group_tokens_T in grouped_documents(tokens, offsets, group_tokens):
    starts_N, lengths_N = group_offsets[:-1], np.diff(group_offsets)
    windows_N = power_of_two_ceiling(-(-lengths_N // seq_len))
    row_length_N = np.where(windows_N > 1, seq_len,
                            np.minimum(seq_len, power_of_two_ceiling(lengths_N)))
    pending = []  # dispatched together, fetched once
    for num_windows, row_length in sorted(set(zip(windows_N.tolist(), row_length_N.tolist()))):
      bucket = np.flatnonzero((windows_N == num_windows) & (row_length_N == row_length))
      num_documents = -(-max(1, batch_size // num_windows) // parallel) * parallel
      for i in range(0, len(bucket), num_documents):
        documents = bucket[i:i + num_documents]
        padding = num_documents - len(documents)
        batch = document_rows(np.pad(starts_N[documents], (0, padding)),
                              np.pad(lengths_N[documents], (0, padding)), group_tokens_T, seq_len,
                              num_windows, row_length, loaded.start_id)
        pending.append((first + documents, loaded.grand(batch)))
    for documents, grand_N in jax.device_get(pending):
      grand_D[documents] = grand_N[:len(documents)]
  return {'grand': grand_D}


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
