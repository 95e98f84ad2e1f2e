"""Selection and pruning (`data.select`): the training documents of a task that a run keeps, by a
per-document score, applied before packing and ordering.

- Data Diet pruning (Paul et al. 2021, "Deep Learning on a Data Diet: Finding Important Examples
  Early in Training", arXiv 2107.07075): keep the highest-EL2N fraction, optionally after skipping
  the very highest (an offset window; the hardest examples are often noise).
- Perplexity filtering (Marion et al. 2023, "When Less is More: Investigating Data Pruning for
  Pretraining LLMs at Scale", arXiv 2309.04564): keep the lowest, highest or middle perplexity
  under a reference model.
- ZIP-FIT (Obbad et al. 2024, "ZIP-FIT: Embedding-Free Data Selection via Compression-Based
  Alignment", arXiv 2410.18194): keep the documents most aligned with a target task by gzip
  compression, no model needed (`by='zipfit'`, keep 'highest').
- Prototypicality pruning (Sorscher et al. 2022, "Beyond neural scaling laws: beating power law
  scaling via data pruning", arXiv 2206.14486): k-means in an embedding space, each document
  scored by its cosine distance to its nearest centroid (`by='prototypicality'`): keep 'highest'
  for the hard (atypical) documents, which the paper finds best with much data, 'lowest' for the
  easy (prototypical) ones, best with little.
- Diversity-centric selection (Yu et al. 2024, "Diversify and Conquer: Diversity-Centric Data
  Selection with Iterative Refinement", arXiv 2409.11378): the same k-means, and an equal share
  kept of every cluster (`by='diversity'`, keep 'lowest'), so a large cluster of near-duplicates
  does not crowd out the rare ones.

Config (research/defaults.py):

    data.select.by        a score reference (research/data/score_files.py): a metadata field
                          ('difficulty') or a computed score SCORES:FIELD ('ref:el2n',
                          'ref:perplexity'), or 'random' (a seeded random score per document and
                          run seed: random pruning, the baseline), 'zipfit',
                          'prototypicality' or 'diversity' (below); '' keeps every document
    data.select.keep      'lowest' or 'highest': the end of the score order kept from
    data.select.fraction  the share of the task's training documents kept, in (0, 1]
    data.select.offset    the share skipped first from that end, in [0, 1 - fraction]: the kept
                          documents are those ranked [offset, offset + fraction) from it
    data.select.unit      what fraction and offset are shares of: 'documents' (their count) or
                          'tokens' (their length: the same token budget whichever documents a
                          score favours; ZIP-FIT's gzip alignment favours short ones)
    data.select.between   (low, high): only documents whose score is in [low, high] are ranked
                          and kept (an end None: unbounded); () = every document.
                          A threshold, where `fraction` is a share: a time slice by a year
                          (`by='year'`, or launch.score --scorer=timestamp's 'NAME:timestamp'),
                          a toxicity or perplexity ceiling
    data.select.tasks     the tasks it applies to; () = every task the run trains on
    data.select.zipfit    by='zipfit': `target`, the task whose documents are the target set,
                          its `split` ('train' or 'validation'), and `size` N: the target set is
                          a sample of at most N of them, seeded by the run's seed
    data.select.prototypicality  by='prototypicality' or 'diversity': k-means with `clusters`
                          centroids and at
                          most `iterations` Lloyd steps over the documents' `embedding`, 'ngrams'
                          (their `ngram`-grams hashed into `dims` buckets) or 'checkpoint:PATH'
                          (a checkpoint's mean final hidden state), research/data/in_context.py

ZIP-FIT scores a document x by its alignment 1 - mean_y NCD(x, y) to the target documents y, NCD
the normalised compression distance under gzip (`zipfit_alignment`), over
the texts decoded from the stores of the run's vocabulary (the target's store is built if small
and missing). The paper compares against all the target examples; here a seeded sample of at most
`size` bounds the cost, D * size compressions of a document pair for D documents. A target that
is the selected task's own train split would align its sampled documents with themselves: name
another task, or the validation split. `by='zipfit'` computes it when the run loads the data, on
each host; for a large corpus, `python -m launch.score --scorer=zipfit` computes it once, a Beam
worker per shard of the store (research/data/score_build.py), into a score file that
`by='NAME:zipfit'` reads: the same targets (`zipfit_targets`) and scores for the same settings and
seed, so the same documents are kept.

Prototypicality embeds every document as in-context pretraining does (`in_context.embed`), scales
the embeddings to unit length and runs spherical k-means: a k-means++ start (seeded by the run's
seed and the task), then Lloyd's steps (each document to the centroid of highest cosine
similarity, each centroid the renormalised mean of its documents; an empty cluster keeps its
centroid) until the assignment stops changing or `iterations` steps. A document's score is its
cosine distance 1 - cos(x, c) to its nearest centroid c, in [0, 2]; an all-zero embedding (an
'ngrams' document shorter than `ngram` tokens) is 1. The paper clusters self-supervised (SwAV)
image embeddings with faiss; here the embedding is in_context's and k-means plain numpy, a block
of documents at a time: D x clusters x E multiply-adds a step (E the embedding's size). It is
computed when the run loads the data, on each host: unlike ZIP-FIT's, a document's score depends
on every other document (through the centroids), so it is no per-document Beam map. At scale it
would be three steps: the embeddings, a per-document map written per shard; the k-means on the
driver over a seeded sample of them (k-means++ and Lloyd's steps on, say, 100 x clusters
documents), or Lloyd's steps as Beam passes that each sum the embeddings per cluster
(`cluster_sums`) over the shards; then each document's distance to the broadcast centroids, a
per-document map into a score file. Not done: the load-time computation holds D x E floats.

Diversity scores each document by its rank within its k-means cluster under a seeded random
order, plus a uniform draw in [0, 1) (`diversity_scores`): kept lowest first, the selection takes
one document of every cluster, then a second of every cluster that has one, and so on, the
clusters at the last rank drawn at random: an equal share of each cluster (all of a cluster
smaller than its share), where random selection keeps each cluster in proportion to its size. The
paper's iterative refinement (cluster weights re-estimated from the training model's loss on each
cluster) is not built: the clusters are weighted equally.

Of D documents (those scored in `between`, when it is set), round(fraction * D) (at least 1) are
kept after skipping round(offset * D); equal scores rank in store order. With unit='tokens', of
their T tokens laid out in rank order, the documents whose middle token falls in
[offset * T, (offset + fraction) * T) are kept: the window rounded to the nearest document
boundaries (at least one document, the one holding the window's middle). The kept documents keep
their store order, in an in-memory store (`subset`) that packing, the orderings (by the kept
documents' scores) and inspection read as the task's store; the validation split, and so
evaluation, is untouched. `report` gives the kept
share of documents and tokens, which the pipeline logs when it loads the data.

Selection is not a `subset` task (research/data/tasks.py) on purpose: it keeps the task's name
(its evaluation keys and its stored scores stay the same), it sees the run's store, so its score
file is checked against the run's vocabulary like an ordering's, and a pruned run is one config
switch (`--config.data.select.fraction=0.5`) rather than a new task.
"""

import dataclasses
import gzip
import math
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from research import errors
from research.data import in_context, orderings, score_files, tasks, vocabularies
from research.data import store as store_lib

KEEPS = ('lowest', 'highest')
UNITS = ('documents', 'tokens')  # data.select.unit: what fraction and offset are shares of
RANDOM = 'random'  # data.select.by: a seeded random score per document
_RANDOM_STREAM = 0x73656c65  # seeded-stream tag of the random scores
ZIPFIT = 'zipfit'  # data.select.by: ZIP-FIT alignment to the documents of data.select.zipfit
_ZIPFIT_STREAM = 0x7a697066  # seeded-stream tag of ZIP-FIT's sample of target documents
_ZIPFIT_KEYS = {'target', 'split', 'size'}
PROTOTYPICALITY = 'prototypicality'  # data.select.by: cosine distance to the nearest centroid
DIVERSITY = 'diversity'  # data.select.by: rank within the document's k-means cluster
KMEANS = (PROTOTYPICALITY, DIVERSITY)  # the selections that cluster (data.select.prototypicality)
_PROTOTYPICALITY_STREAM = 0x70726f74  # seeded-stream tag of the k-means++ start
_DIVERSITY_STREAM = 0x64697665  # seeded-stream tag of the order within a cluster
_PROTOTYPICALITY_KEYS = {'clusters', 'iterations', 'embedding', 'ngram', 'dims'}
_BLOCK_ELEMENTS = 1 << 23  # document-centroid similarities computed at a time
_SLACK = 1e-9  # offset + fraction may exceed 1 by float rounding


@dataclasses.dataclass(frozen=True)
class ZipFit:
  """The checked `data.select.zipfit`, with where the run's stores are."""
  target: str
  split: str
  size: int
  vocabulary: str
  extra_ids: int
  store_dir: str


@dataclasses.dataclass(frozen=True)
class Prototypicality:
  """The checked `data.select.prototypicality`; `embedding`, `ngram` and `dims` are what
  `in_context.embed` reads."""
  clusters: int
  iterations: int
  embedding: str
  ngram: int
  dims: int


@dataclasses.dataclass(frozen=True)
class Selection:
  """The checked `data.select`."""
  by: str
  keep: str
  fraction: float
  offset: float
  unit: str  # one of UNITS
  tasks: tuple[str, ...]  # () = every task
  zipfit: ZipFit | None = None  # by='zipfit'
  prototypicality: Prototypicality | None = None  # by='prototypicality' or 'diversity'
  between: tuple[float | None, float | None] | None = None  # the scores kept; None = all

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
    if selection.unit == 'tokens':
      window += ' of the tokens'
    if selection.between is not None:
      window += f' of those scored in {list(selection.between)}'
    return (f'data.select keeps {self.fraction:.1%} of the training documents of task '
            f'{task_name!r} ({self.kept_documents} of {self.documents}; {self.kept_tokens} of '
            f'{self.tokens} tokens, {self.kept_tokens / max(self.tokens, 1):.1%}): the '
            f'{selection.keep} {selection.fraction:g} by {selection.by!r}{window}.')


def bind(data_config: ml_collections.ConfigDict, task_names: list[str]) -> Selection | None:
  """The checked `data.select` of a run training on `task_names`; None when it keeps everything."""
  config = data_config.select
  by, keep, fraction, offset, unit = (config.by, config.keep, config.fraction, config.offset,
                                      config.unit)
  tasks, between = tuple(config.tasks), tuple(config.between)
  if not by:
    if fraction != 1 or offset or tasks or between:
      raise errors.UserError(f'data.select.fraction={fraction}, offset={offset}, tasks={tasks} and '
                             f'between={between} select by no score: set data.select.by (e.g. '
                             'ref:el2n, or random).')
    return None
  if not isinstance(by, str) or not score_files.parse(by)[1]:
    raise errors.UserError(f'data.select.by={by!r} must be a score reference: a metadata field, '
                           f"SCORES:FIELD such as 'ref:el2n', {RANDOM!r}, {ZIPFIT!r}, "
                           f'{PROTOTYPICALITY!r} or {DIVERSITY!r}.')
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
  zipfit = _zipfit(data_config) if by == ZIPFIT else None
  prototypicality = _prototypicality(data_config) if by in KMEANS else None
  return Selection(by, keep, float(fraction), float(offset), unit, tasks, zipfit,
                   prototypicality, _between(between))


def _between(between: tuple) -> tuple[float | None, float | None] | None:
  """The checked `data.select.between`: (low, high), either None; None for ()."""
  if not between:
    return None
  finite = lambda v: (v is None or not isinstance(v, bool) and isinstance(v, (int, float))
                      and math.isfinite(v))
  if len(between) != 2 or not all(map(finite, between)) or (
      None not in between and between[0] > between[1]):
    raise errors.UserError(f'data.select.between={between!r} must be (low, high), the range of '
                           'scores kept, low <= high, either end None for no bound (e.g. '
                           "--config.data.select.between='(2015, 2019)'), or () for no range.")
  return tuple(None if v is None else float(v) for v in between)


def _zipfit(data_config: ml_collections.ConfigDict) -> ZipFit:
  """The checked `data.select.zipfit` of by='zipfit'."""
  params = dict(data_config.select.zipfit)
  if set(params) != _ZIPFIT_KEYS:
    raise errors.UserError(f'data.select.zipfit={params!r} must have exactly the keys '
                           f'{sorted(_ZIPFIT_KEYS)}.')
  check_zipfit(params, "data.select.by='zipfit'", lambda key: f'data.select.zipfit.{key}')
  return ZipFit(params['target'], params['split'], params['size'], data_config.vocabulary,
                data_config.extra_ids, data_config.store_dir)


def check_zipfit(params: dict, asked: str, name: Callable[[str], str]) -> None:
  """Fails unless ZIP-FIT settings `params` (target, split, size) are valid; `asked` names what
  asks for ZIP-FIT and `name` a setting, as the user gives them (a config key, a flag)."""
  target, split, size = params['target'], params['split'], params['size']
  if not target or not isinstance(target, str):
    raise errors.UserError(f"{asked} needs {name('target')}={target!r} to name the task whose "
                           "documents are the target set (e.g. 'arithmetic').")
  tasks.check_task(target, name('target'))
  if split not in tasks.SPLITS:
    raise errors.UserError(f"{name('split')}={split!r} must be one of {list(tasks.SPLITS)}.")
  if isinstance(size, bool) or not isinstance(size, int) or size < 1:
    raise errors.UserError(f"{name('size')}={size!r} must be a positive integer: the most target "
                           'documents each document is compared with.')


def _prototypicality(data_config: ml_collections.ConfigDict) -> Prototypicality:
  """The checked `data.select.prototypicality` of by='prototypicality' or 'diversity'."""
  params = dict(data_config.select.prototypicality)
  in_context.check_settings(
      params, _PROTOTYPICALITY_KEYS, ('clusters', 'iterations', 'ngram', 'dims'),
      'data.select.prototypicality', 'clusters=10, iterations=20, ngram=3, dims=1024')
  return Prototypicality(**params)


def document_scores(selection: Selection, store: store_lib.DocumentStore, task_name: str,
                    seed: int, task_key: int) -> np.ndarray:
  """float64 [num_documents]: the score each document of `store` is selected by; NaN for those
  outside `selection.between` (never kept, `kept_documents`)."""
  scores_D = _scores(selection, store, task_name, seed, task_key)
  if selection.between is None:
    return scores_D
  low, high = selection.between
  inside_D = (scores_D >= (-np.inf if low is None else low)) & (
      scores_D <= (np.inf if high is None else high))
  if not inside_D.any():
    raise errors.UserError(
        f'data.select.between={list(selection.between)} keeps none of the '
        f'{store.num_documents} training documents of task {task_name!r}: their '
        f'{selection.by!r} scores run from {scores_D.min():g} to {scores_D.max():g}; widen it.')
  return np.where(inside_D, scores_D, np.nan)


def _scores(selection: Selection, store: store_lib.DocumentStore, task_name: str, seed: int,
            task_key: int) -> np.ndarray:
  """float64 [num_documents]: score `selection.by` of each document of `store`."""
  if selection.by == RANDOM:
    return np.random.default_rng([_RANDOM_STREAM, seed, task_key]).random(store.num_documents)
  if selection.by == ZIPFIT:
    return zipfit_scores(store, selection.zipfit, seed)
  if selection.by in KMEANS:
    rng = np.random.default_rng([_PROTOTYPICALITY_STREAM, seed, task_key])
    params = selection.prototypicality
    embeddings_DE = in_context.embed(store, params)
    if selection.by == PROTOTYPICALITY:
      return prototypicality_scores(embeddings_DE, params.clusters, params.iterations, rng)
    nearest_D, _ = kmeans_clusters(embeddings_DE, params.clusters, params.iterations, rng)
    return diversity_scores(nearest_D, np.random.default_rng([_DIVERSITY_STREAM, seed, task_key]))
  return orderings.document_scores(store, selection.by, task_name,
                                   f'data.select.by={selection.by!r}')


def zipfit_scores(store: store_lib.DocumentStore, zipfit: ZipFit, seed: int) -> np.ndarray:
  """float64 [num_documents]: each document's ZIP-FIT alignment to `zipfit_targets`."""
  vocabulary = vocabularies.make_vocabulary(zipfit.vocabulary, zipfit.extra_ids)
  return zipfit_alignment(store.texts(vocabulary), zipfit_targets(zipfit, seed))


def zipfit_targets(zipfit: ZipFit, seed: int, key: str = 'data.select.zipfit.target') -> list[str]:
  """The texts of a sample of at most `zipfit.size` documents of the target task's split, seeded
  by `seed`, in store order; `key` names the target in an error."""
  target = store_lib.load_store(zipfit.target, zipfit.split, zipfit.vocabulary, zipfit.store_dir)
  if not target.num_documents:
    raise errors.UserError(f'{key}={zipfit.target!r} has no {zipfit.split} documents to align '
                           'with; name a task (or split) that has some.')
  sample = np.random.default_rng([_ZIPFIT_STREAM, seed]).choice(
      target.num_documents, min(zipfit.size, target.num_documents), replace=False)
  vocabulary = vocabularies.make_vocabulary(zipfit.vocabulary, zipfit.extra_ids)
  return subset(target, np.sort(sample)).texts(vocabulary)


def gzip_size(data: bytes) -> int:
  """C(x) of the normalised compression distance: bytes of gzip(data) (level 9, mtime 0)."""
  return len(gzip.compress(data, compresslevel=9, mtime=0))


def zipfit_alignment(texts: Sequence[str], targets: Sequence[str]) -> np.ndarray:
  """float64 [D]: ZIP-FIT alignment of each of `texts` to `targets` (Obbad et al. 2024, "ZIP-FIT:
  Embedding-Free Data Selection via Compression-Based Alignment", arXiv 2410.18194): 1 - the mean
  over the targets y of the normalised compression distance NCD(x, y) = (C(xy) - min(C(x), C(y)))
  / max(C(x), C(y)), C = `gzip_size` of the UTF-8 text and xy the two texts concatenated; higher
  = more aligned. D * len(targets) compressions of a pair: bound the targets."""
  targets_Y = [y.encode('utf-8') for y in targets]
  sizes_Y = np.array([gzip_size(y) for y in targets_Y], np.float64)
  alignment_D = np.empty(len(texts))
  for d, text in enumerate(texts):
    x = text.encode('utf-8')
    size_x = gzip_size(x)
    joint_Y = np.array([gzip_size(x + y) for y in targets_Y], np.float64)
    ncd_Y = (joint_Y - np.minimum(size_x, sizes_Y)) / np.maximum(size_x, sizes_Y)
    alignment_D[d] = 1 - ncd_Y.mean()
  return alignment_D


def prototypicality_scores(embeddings_DE: np.ndarray, clusters: int, iterations: int,
                           rng: np.random.Generator) -> np.ndarray:
  """float64 [D]: each document's cosine distance 1 - cos(x, c) to its nearest centroid c after
  spherical k-means of `embeddings_DE` (`kmeans_centroids`); higher = less prototypical."""
  _, similarity_D = kmeans_clusters(embeddings_DE, clusters, iterations, rng)
  return 1 - similarity_D.astype(np.float64)


def kmeans_clusters(embeddings_DE: np.ndarray, clusters: int, iterations: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(int64 [D], float32 [D]): each document's cluster after spherical k-means of
  `embeddings_DE` (`kmeans_centroids`) and its cosine similarity to the cluster's centroid."""
  if not len(embeddings_DE):
    return np.zeros(0, np.int64), np.zeros(0, np.float32)
  unit_DE = unit_rows(embeddings_DE)
  return nearest_centroids(unit_DE, kmeans_centroids(unit_DE, clusters, iterations, rng))


def diversity_scores(cluster_D: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """float64 [D]: each document's rank within its cluster `cluster_D` (0 for the first) in a
  random order, plus a uniform draw in [0, 1): the lowest k scores hold about k / K documents of
  each of K clusters (Diversify and Conquer's equal share per cluster)."""
  order_D = rng.permutation(len(cluster_D))
  order_D = order_D[np.argsort(cluster_D[order_D], kind='stable')]  # by cluster, random within
  sorted_D = cluster_D[order_D]
  starts_D = np.searchsorted(sorted_D, sorted_D, side='left')  # each cluster's first position
  scores_D = np.empty(len(cluster_D))
  scores_D[order_D] = np.arange(len(cluster_D)) - starts_D
  return scores_D + rng.random(len(cluster_D))


def unit_rows(embeddings_DE: np.ndarray) -> np.ndarray:
  """float32 [D, E]: each row scaled to unit length; an all-zero row stays zero."""
  norms_D1 = np.linalg.norm(embeddings_DE, axis=1, keepdims=True)
  return (embeddings_DE / np.maximum(norms_D1, 1e-12)).astype(np.float32)


def nearest_centroids(unit_DE: np.ndarray, centroids_KE: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(int64 [D], float32 [D]): each row's centroid of highest cosine similarity (the first of
  equal ones) and that similarity, for unit rows and centroids, a block of rows at a time."""
  block = max(1, _BLOCK_ELEMENTS // max(len(centroids_KE), 1))
  nearest_D = np.empty(len(unit_DE), np.int64)
  similarity_D = np.empty(len(unit_DE), np.float32)
  for start in range(0, len(unit_DE), block):
    similar_BK = unit_DE[start:start + block] @ centroids_KE.T
    nearest_D[start:start + block] = similar_BK.argmax(axis=1)
    similarity_D[start:start + block] = similar_BK.max(axis=1)
  return nearest_D, similarity_D


def kmeans_centroids(unit_DE: np.ndarray, clusters: int, iterations: int,
                     rng: np.random.Generator) -> np.ndarray:
  """float32 [K, E], K = min(clusters, D): spherical k-means of the unit rows `unit_DE`: a
  k-means++ start (each next centroid a row drawn with probability proportional to its squared
  distance 2 - 2 cos to the nearest centroid so far; uniformly once every row is a centroid), then
  Lloyd's steps (each row to its nearest centroid, each centroid the renormalised sum of its rows,
  an empty one kept) until the assignment repeats or `iterations` steps."""
  num_documents = len(unit_DE)
  first = rng.integers(num_documents)
  chosen = [first]
  best_D = unit_DE @ unit_DE[first]
  for _ in range(min(clusters, num_documents) - 1):
    weights_D = np.maximum(1 - best_D.astype(np.float64), 0)
    total = weights_D.sum()
    pick = rng.choice(num_documents, p=weights_D / total if total > 0 else None)
    chosen.append(pick)
    best_D = np.maximum(best_D, unit_DE @ unit_DE[pick])
  centroids_KE = unit_DE[chosen]
  assigned_D = None
  for _ in range(iterations):
    nearest_D, _ = nearest_centroids(unit_DE, centroids_KE)
    if assigned_D is not None and np.array_equal(nearest_D, assigned_D):
      break
    assigned_D = nearest_D
    sums_KE = cluster_sums(unit_DE, assigned_D, len(centroids_KE))
    norms_K1 = np.linalg.norm(sums_KE, axis=1, keepdims=True)
    centroids_KE = np.where(norms_K1 > 0, sums_KE / np.maximum(norms_K1, 1e-12), centroids_KE)
  return centroids_KE


def cluster_sums(unit_DE: np.ndarray, assigned_D: np.ndarray, clusters: int) -> np.ndarray:
  """float32 [clusters, E]: the sum of the rows assigned to each cluster (0 for an empty one), a
  block of rows at a time as a one-hot matrix product (np.add.at is ten times slower, and so is
  one_hot_KB @ unit_BE with few clusters: BLAS is fast for the transposed product)."""
  block = max(1, _BLOCK_ELEMENTS // clusters)
  sums_EK = np.zeros([unit_DE.shape[1], clusters], np.float32)
  for start in range(0, len(unit_DE), block):
    one_hot_BK = assigned_D[start:start + block, None] == np.arange(clusters)
    sums_EK += unit_DE[start:start + block].T @ one_hot_BK.astype(np.float32)
  return sums_EK.T


def kept_documents(scores_D: np.ndarray, keep: str, fraction: float, offset: float = 0.0,
                   lengths_D: np.ndarray | None = None) -> np.ndarray:
  """int64 [K]: the store indices kept, ascending: ranked [offset, offset + fraction) of the
  documents from the `keep` ('lowest' or 'highest') end of `scores_D`, ties in store order, as
  shares of their count, or with `lengths_D` (tokens per document) of their tokens (a document is
  kept when its middle token is in that window; at least one); a document scored NaN
  (outside data.select.between) is neither kept nor counted."""
  scored = np.flatnonzero(~np.isnan(scores_D))
  values = scores_D[scored]
  ranked = scored[np.argsort(values if keep == 'lowest' else -values, kind='stable')]
  if lengths_D is None:
    count = min(max(1, round(fraction * len(scored))), len(scored))
    skip = min(round(offset * len(scored)), len(scored) - count)
    return np.sort(ranked[skip:skip + count]).astype(np.int64)
  ranked_lengths = lengths_D[ranked]
  starts = np.cumsum(ranked_lengths) - ranked_lengths
  total = ranked_lengths.sum()
  low, high = offset * total, (offset + fraction) * total
  middles = starts + ranked_lengths / 2
  inside = (middles >= low) & (middles < high)
  if not inside.any() and len(ranked):  # the window falls inside one long document
    inside[np.searchsorted(starts, (low + high) / 2, side='right') - 1] = True
  return np.sort(ranked[inside]).astype(np.int64)


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
