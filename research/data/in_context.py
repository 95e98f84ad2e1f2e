"""In-context pretraining (ICLM; Shi et al. 2023, "In-Context Pretraining: Language Modeling Beyond
Document Boundaries", arXiv 2310.10638): related documents packed into the same context window
(`data.order.pack='in_context'`).

The document order of the paper's sort/sort.py (REFERENCE.md section 14):

1. Embed every training document (`data.order.in_context.embedding`):
   - 'ngrams': its token n-grams (n = `ngram`) hashed into `dims` buckets and counted, a stand-in
     for the paper's Contriever retriever that needs no model;
   - 'checkpoint:PATH': the mean over the document's tokens of the final hidden state (the output
     of the final norm, which the output layer reads) of the research checkpoint at PATH, each
     window of the model's data.seq_len tokens read as training reads it
     (research/analysis/scores.py).
2. Find each document's `neighbours` most similar other documents by cosine similarity: exact
   k-NN by blocks of rows (a block x D slice of the similarities at a time, never D x D), where the
   paper searches approximately with faiss.
3. Order the documents by a greedy path through the k-NN graph, the paper's approximation of a
   maximum-weight travelling salesman path: a chain starts at the unvisited document of lowest
   in-degree in the graph (the paper's choice; the released code pops an arbitrary one) and moves
   on to the most similar unvisited document among the current document's neighbours; a new chain
   starts when none of them is unvisited or the chain holds `max_chain` documents (the code's 21).
   The chains are concatenated. Ties, in similarity or in-degree, go by a seeded order of the
   documents; equally similar neighbours are shared out among duplicates (`nearest_neighbours`),
   which keeps the chains long where a corpus has many (as lego has).

The path is packing's document order (research/data/packing.py), so consecutive documents share a
row; `data.order.name` then reads the rows as usual (`random`, the default, shuffles them, as the
ICLM README recommends: similar documents within a context window, diverse ones across windows).

Left out: the paper's near-duplicate filter (a document dropped when the 3-gram Jaccard similarity
of its first 100 characters with the previous one exceeds 0.85) and merging chains shorter than
the cap into the chain of their nearest neighbour.

Cost: the embeddings take well under a second for a toy store, but the similarities take D^2 x E
multiply-adds (E the embedding's size): the order of the 20,000 lego documents with 'ngrams' (E =
1024) takes 12-16 s on two busy CPU cores (chains of 10 documents on average), that of 100,000
arithmetic documents 25 times as long. It is computed once, when a run loads its data, and not
cached.
"""

import dataclasses
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from research import errors, finished
from research.data import packing, windows
from research.data import store as store_lib

NGRAMS = 'ngrams'
CHECKPOINT = 'checkpoint:'  # the prefix of 'checkpoint:PATH'
_KEYS = {'embedding', 'ngram', 'dims', 'neighbours', 'max_chain'}
_BLOCK_ELEMENTS = 1 << 23  # similarities computed at a time (block rows x all documents)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # the n-gram hash's odd multiplier (2^64 / golden)


@dataclasses.dataclass(frozen=True)
class Config:
  """The checked `data.order.in_context`."""
  embedding: str
  ngram: int
  dims: int
  neighbours: int
  max_chain: int


def bind(order_config: ml_collections.ConfigDict) -> Config:
  """The checked `data.order.in_context` of `order_config` (config.data.order); fails naming a
  bad key."""
  params = dict(order_config.in_context)
  check_settings(params, _KEYS, ('ngram', 'dims', 'neighbours', 'max_chain'),
                 'data.order.in_context', 'ngram=3, dims=1024, neighbours=10, max_chain=21')
  return Config(**params)


def check_settings(params: dict, keys: set[str], positive: Sequence[str], key: str,
                   defaults: str) -> None:
  """Fails, naming config key `key` or its setting, unless `params` has exactly `keys`, the
  settings `positive` are positive integers (`defaults` lists theirs for the message) and the
  `embedding` setting is one `check_embedding` accepts."""
  if set(params) != keys:
    raise errors.UserError(f'{key}={params!r} must have exactly the keys {sorted(keys)}.')
  for name in positive:
    value = params[name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise errors.UserError(f'{key}.{name}={value!r} must be a positive integer (the defaults: '
                             f'{defaults}).')
  check_embedding(params['embedding'], f'{key}.embedding')


def check_embedding(embedding, key: str) -> None:
  """Fails, naming the config key `key`, unless `embedding` is 'ngrams' or 'checkpoint:PATH'."""
  if embedding != NGRAMS and not (isinstance(embedding, str) and embedding.startswith(CHECKPOINT)
                                  and len(embedding) > len(CHECKPOINT)):
    raise errors.UserError(f'{key}={embedding!r} must be {NGRAMS!r} '
                           "(hashed token n-grams) or 'checkpoint:PATH' (the mean final hidden "
                           'state of the checkpoint at PATH, a launch.train workdir).')


def ngram_embeddings(store: store_lib.DocumentStore, ngram: int, dims: int) -> np.ndarray:
  """float32 [D, dims]: each document's counts of its token n-grams (n = `ngram`, within the
  document), each hashed into one of `dims` buckets. A document shorter than n tokens has none."""
  tokens_T = np.asarray(store.tokens).astype(np.uint64)
  offsets = np.asarray(store.offsets, np.int64)
  num_grams = max(0, len(tokens_T) - ngram + 1)  # n-grams starting at every token position
  hash_G = np.zeros(num_grams, np.uint64)
  for i in range(ngram):  # multiplicative hashing of the tokens, 64-bit wrapping
    hash_G = (hash_G ^ tokens_T[i:i + num_grams]) * _MULTIPLIER
  bucket_G = (hash_G ^ (hash_G >> np.uint64(32))) % np.uint64(dims)
  doc_G = np.searchsorted(offsets, np.arange(num_grams), side='right') - 1
  within = np.arange(num_grams) + ngram <= offsets[doc_G + 1]  # the n-gram ends in its document
  cells, counts = np.unique(doc_G[within] * dims + bucket_G[within].astype(np.int64),
                            return_counts=True)
  embeddings_DE = np.zeros([store.num_documents, dims], np.float32)
  embeddings_DE.reshape(-1)[cells] = counts
  return embeddings_DE


def checkpoint_embeddings(store: store_lib.DocumentStore, path: str,
                          batch_size: int = 0) -> np.ndarray:
  """float32 [D, d_model]: each document's mean final hidden state under the checkpoint at `path`
  (the output of the model's final norm), its windows packed and batched as the model scores read
  them (research/analysis/scores.py `window_batches`); `batch_size` rows per forward pass (0: the
  run's eval.batch_size)."""


  key = f"data.order.in_context.embedding='{CHECKPOINT}{path}'"
  loaded = finished.load_checkpoint(path, flag=f'data.order.in_context.embedding {CHECKPOINT}')
  vocabulary = loaded.config.data.vocabulary
  if vocabulary != store.manifest.get('vocabulary'):
    raise errors.UserError(f"{key} is a model of data.vocabulary={vocabulary!r}, but the documents "
                           f"are in {store.manifest.get('vocabulary')!r}: embed them with a "
                           f"checkpoint of the run's vocabulary, or with {NGRAMS!r}.")

  def final_hidden(params, batch):
    _, state = loaded.model.apply(
        {'params': params}, batch,
        capture_intermediates=lambda module, method: module.name == 'final_norm')
    return state['intermediates']['final_norm']['__call__'][0]

  forward = loaded.jit(final_hidden)
  batch_size = batch_size or loaded.config.eval.batch_size
  sums_DE = np.zeros([store.num_documents, loaded.config.model.d_model])
  for first, _, group_offsets, batches in windows.window_batches(
      store.tokens, store.offsets, loaded.seq_len, batch_size, windows.GROUP_TOKENS,
      loaded.start_id):
    for batch in batches:  # each fetched before the next: [B, L, d_model] floats a batch
      hidden_BLE = np.asarray(jax.device_get(loaded.apply(forward, batch)))
      real_BL = batch['token_index'] >= 0
      doc_T = first + np.searchsorted(group_offsets, batch['token_index'][real_BL],
                                      side='right') - 1
      np.add.at(sums_DE, doc_T, hidden_BLE[real_BL])
  return (sums_DE / np.maximum(windows.lengths(store), 1)[:, None]).astype(np.float32)


def embed(store: store_lib.DocumentStore, config: Config) -> np.ndarray:
  """float32 [D, E]: the embedding of every document that `config.embedding` names."""
  if config.embedding == NGRAMS:
    return ngram_embeddings(store, config.ngram, config.dims)
  return checkpoint_embeddings(store, config.embedding[len(CHECKPOINT):])


def nearest_neighbours(embeddings_DE: np.ndarray, neighbours: int) -> np.ndarray:
  """int64 [D, K]: each document's K = min(neighbours, D - 1) most similar other documents by
  cosine similarity, most similar first, computed a block of rows at a time. Of equally similar
  documents, document d takes those that follow it in index order (cyclically: d + 1, d + 2, ...,
  D - 1, 0, 1, ...), so that duplicates share out their ties rather than all naming the same few.
  An all-zero embedding is similar to nothing (0)."""
  num_documents = len(embeddings_DE)
  k = min(neighbours, num_documents - 1)
  if k <= 0:
    return np.zeros([num_documents, 0], np.int64)
  norms_D1 = np.linalg.norm(embeddings_DE, axis=1, keepdims=True)
  unit_DE = (embeddings_DE / np.maximum(norms_D1, 1e-12)).astype(np.float32)
  block = max(1, _BLOCK_ELEMENTS // num_documents)
  columns_D = np.arange(num_documents)
  neighbours_DK = np.empty([num_documents, k], np.int64)
  for start in range(0, num_documents, block):
    stop = min(start + block, num_documents)
    rows_B1 = np.arange(start, stop)[:, None]
    similar_BD = unit_DE[start:stop] @ unit_DE.T
    similar_BD[rows_B1[:, 0] - start, rows_B1[:, 0]] = -np.inf  # not its own neighbour
    # All that are more similar than the k-th most similar, then as many of those as similar as it
    # as are wanted, by their cyclic distance after the row's document (`after`).
    kth_B1 = np.partition(similar_BD, num_documents - k, axis=1)[:, num_documents - k, None]
    above_BD = similar_BD > kth_B1
    tied_BD = similar_BD == kth_B1
    wanted_B1 = k - above_BD.sum(axis=1, keepdims=True)
    tied_up_to_BD = np.cumsum(tied_BD, axis=1, dtype=np.int32)
    tied_before_B1 = np.take_along_axis(tied_up_to_BD, rows_B1, axis=1)  # the row's own not tied
    tie_rank_BD = np.where(columns_D > rows_B1, tied_up_to_BD - tied_before_B1,
                           tied_up_to_BD + tied_up_to_BD[:, -1:] - tied_before_B1)
    chosen_BD = above_BD | (tied_BD & (tie_rank_BD <= wanted_B1))
    top_BK = np.nonzero(chosen_BD)[1].reshape(-1, k)
    after_BK = (top_BK - rows_B1) % num_documents
    ranked_BK = np.lexsort((after_BK, -np.take_along_axis(similar_BD, top_BK, axis=1)), axis=1)
    neighbours_DK[start:stop] = np.take_along_axis(top_BK, ranked_BK, axis=1)
  return neighbours_DK


def chains(neighbours_DK: np.ndarray, max_chain: int) -> list[list[int]]:
  """ICLM's greedy path through the k-NN graph `neighbours_DK` (each row most similar first), as
  chains of at most `max_chain` documents that hold every document once: each chain starts at the
  unvisited document of lowest in-degree (equal ones by index) and moves to the first unvisited
  neighbour of the current document, until there is none or the chain is full."""
  num_documents = len(neighbours_DK)
  in_degree_D = np.bincount(neighbours_DK.reshape(-1), minlength=num_documents)
  starts = np.argsort(in_degree_D, kind='stable').tolist()
  neighbour_lists = neighbours_DK.tolist()
  visited = [False] * num_documents
  path, next_start = [], 0
  while True:
    while next_start < num_documents and visited[starts[next_start]]:
      next_start += 1
    if next_start == num_documents:
      return path
    document = starts[next_start]
    chain = [document]
    visited[document] = True
    while len(chain) < max_chain:
      document = next((n for n in neighbour_lists[document] if not visited[n]), None)
      if document is None:
        break
      visited[document] = True
      chain.append(document)
    path.append(chain)


def document_order(store: store_lib.DocumentStore, config: Config, seed: int) -> np.ndarray:
  """int64 [D]: the in-context pretraining order of the documents of `store`, the chains of
  `chains` concatenated. Equal similarities and in-degrees go in the seeded order of
  `packing.random_documents` (not by store index, which would send the ties of duplicates and
  near-duplicates to the same few documents)."""
  shuffled_D = packing.random_documents(store.num_documents, seed)
  neighbours_DK = nearest_neighbours(embed(store, config)[shuffled_D], config.neighbours)
  return shuffled_D[[d for chain in chains(neighbours_DK, config.max_chain) for d in chain]]
