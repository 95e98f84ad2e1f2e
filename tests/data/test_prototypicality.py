"""Prototypicality pruning (Sorscher et al. 2022, arXiv 2206.14486): `data.select.by=
'prototypicality'` scores each document by its cosine distance to its nearest k-means centroid in
an embedding space (research/data/selection.py)."""

import json

import ml_collections
import numpy as np
import pytest

from research import errors
from research.data import in_context, pipeline, selection
from research.data.synthetic import arithmetic, lego
from tests.data.test_in_context import _store

NUM_SUMS, NUM_CHAINS, NUM_PROSE = 60, 60, 6
# The embedding is byte counts (ngram=1): each arithmetic problem's digit trigrams are nearly its
# own, so with ngram=3 the problems are atypical of every cluster, and they score highest.
_PROSE = [  # outliers among arithmetic problems and lego chains
    'The assert statement checks a condition and raises AssertionError when it is false; '
    'it is removed when Python runs with optimisation.',
    'A context manager defines what happens on entering and leaving a with block.',
    'Generators produce their values lazily, one at a time, when iterated over.',
    'The logging module records events of a program at levels of severity.',
    'Decorators wrap a function to change its behaviour without editing its body.',
    'A dictionary maps hashable keys to values and keeps their insertion order.']


def test_scores_are_the_cosine_distance_to_the_nearest_centroid():
  embeddings = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
  rng = lambda: np.random.default_rng(0)
  # One cluster: its centroid is the direction of the sum of the unit rows, (1, 1) / sqrt(2).
  np.testing.assert_allclose(selection.prototypicality_scores(embeddings, 1, 20, rng()),
                             [1 - 0.5 ** 0.5, 1 - 0.5 ** 0.5, 0], atol=1e-6)
  # As many clusters as documents: each its own centroid.
  np.testing.assert_allclose(selection.prototypicality_scores(embeddings, 3, 20, rng()), 0,
                             atol=1e-6)
  # Two clusters: the distance to the nearest of the centroids k-means ends with.
  centroids = selection.kmeans_centroids(selection.unit_rows(embeddings), 2, 20, rng())
  unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
  cosines = unit @ (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).T
  np.testing.assert_allclose(selection.prototypicality_scores(embeddings, 2, 20, rng()),
                             1 - cosines.max(axis=1), atol=1e-6)
  # An all-zero embedding is similar to no centroid.
  zero = np.array([[1, 0], [0, 0]], np.float32)
  np.testing.assert_allclose(selection.prototypicality_scores(zero, 1, 20, rng()), [0, 1])


def test_blocks_do_not_change_the_nearest_centroids_or_the_cluster_sums(monkeypatch):
  unit = selection.unit_rows(np.random.default_rng(1).normal(size=(50, 8)).astype(np.float32))
  centroids = unit[:4]
  nearest, similarity = selection.nearest_centroids(unit, centroids)
  np.testing.assert_array_equal(nearest, (unit @ centroids.T).argmax(axis=1))
  expected_sums = np.zeros([5, 8], np.float32)  # cluster 4 is empty
  np.add.at(expected_sums, nearest, unit)
  np.testing.assert_allclose(selection.cluster_sums(unit, nearest, 5), expected_sums, atol=1e-5)
  monkeypatch.setattr(selection, '_BLOCK_ELEMENTS', 3 * 5)  # blocks of 3 rows
  blocked_nearest, blocked_similarity = selection.nearest_centroids(unit, centroids)
  np.testing.assert_array_equal(blocked_nearest, nearest)
  np.testing.assert_array_equal(blocked_similarity, similarity)
  np.testing.assert_allclose(selection.cluster_sums(unit, nearest, 5), expected_sums, atol=1e-5)


def _mixed(data_config, tmp_path):
  """A files task 'mixed' of arithmetic problems and lego chains with the few `_PROSE` sentences
  among them, each document's `kind` in its metadata."""
  rng = np.random.default_rng(0)
  documents = [{'text': t, 'kind': 'prose'} for t in _PROSE] + [
      {'text': d['text'], 'kind': 'arithmetic'} for d in arithmetic.documents('train', 1,
                                                                              NUM_SUMS)] + [
      {'text': d['text'], 'kind': 'lego'} for d in lego.documents('train', 1, NUM_CHAINS)]
  path, held_out = tmp_path / 'mixed.jsonl', tmp_path / 'held_out.jsonl'
  path.write_text(''.join(json.dumps(documents[i]) + '\n' for i in rng.permutation(len(documents))))
  held_out.write_text(json.dumps({'text': 'held out', 'kind': 'prose'}) + '\n')
  data_config.tasks = ml_collections.ConfigDict({  # every document of `path` in train
      'mixed': {'source': 'files', 'pattern': str(path), 'format': 'jsonl',
                'validation_pattern': str(held_out)}})
  data_config.mixture = ml_collections.ConfigDict({'mixed': 1.0})
  data_config.seq_len, data_config.mixture_block = 64, 16
  data_config.select.update({'by': 'prototypicality', 'keep': 'highest',
                             'fraction': NUM_PROSE / len(documents)})
  data_config.select.prototypicality.update({'clusters': 2, 'ngram': 1})
  return data_config


def test_outliers_among_planted_clusters_score_highest(data_config, tmp_path):
  config = _mixed(data_config, tmp_path)
  data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  kept = data.rows.stores['mixed'].metadata
  assert data.rows.selected['mixed'].kept_documents == len(kept) == NUM_PROSE
  assert [m['kind'] for m in kept] == ['prose'] * NUM_PROSE
  # The same run keeps the same documents; the k-means++ start is seeded by the run's seed.
  again = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  assert again.rows.stores['mixed'].doc_ids == data.rows.stores['mixed'].doc_ids


def test_kmeans_recovers_planted_clusters_and_is_seeded():
  store = _store([d['text'] for d in arithmetic.documents('train', 2, NUM_SUMS)]
                 + [d['text'] for d in lego.documents('train', 2, NUM_CHAINS)] + _PROSE)
  params = selection.Prototypicality(clusters=2, iterations=20, embedding='ngrams', ngram=1,
                                     dims=1024)
  unit = selection.unit_rows(in_context.embed(store, params))
  centroids = selection.kmeans_centroids(unit, 2, 20, np.random.default_rng(0))
  nearest, _ = selection.nearest_centroids(unit, centroids)
  assert len(set(nearest[:NUM_SUMS])) == len(set(nearest[NUM_SUMS:-NUM_PROSE])) == 1
  assert nearest[0] != nearest[NUM_SUMS]
  select = selection.Selection('prototypicality', 'highest', 0.1, 0.0, 'documents', (), None,
                               params)
  scores = selection.document_scores(select, store, 'mixed', seed=3, task_key=7)
  assert set(np.argsort(-scores)[:NUM_PROSE]) == set(range(len(scores))[-NUM_PROSE:])
  np.testing.assert_array_equal(
      scores, selection.document_scores(select, store, 'mixed', seed=3, task_key=7))


@pytest.mark.parametrize('update, match', [
    ({'clusters': 0}, r'data\.select\.prototypicality\.clusters=0'),
    ({'iterations': 2.5}, r'data\.select\.prototypicality\.iterations=2\.5'),
    ({'embedding': 'contriever'}, r"data\.select\.prototypicality\.embedding='contriever'"),
    ({'embedding': 'checkpoint:'}, r"data\.select\.prototypicality\.embedding='checkpoint:'"),
    ({'k': 10}, r'data\.select\.prototypicality=.*exactly the keys'),
])
def test_bad_prototypicality_config_names_the_key(data_config, update, match):
  data_config.select.update({'by': 'prototypicality', 'keep': 'highest', 'fraction': 0.5})
  data_config.select.prototypicality = ml_collections.ConfigDict(
      {**data_config.select.prototypicality.to_dict(), **update})
  with pytest.raises(errors.UserError, match=match):
    selection.bind(data_config, ['stdlib_prose'])


def test_diversity_keeps_an_equal_share_of_every_cluster():
  """Diversify and Conquer (arXiv 2409.11378): clusters of 60, 30 and 10 documents give a third
  of a 30-document selection each (random selection: 18, 9 and 3); a smaller cluster is kept
  whole and the others share the rest."""
  clusters = np.repeat([0, 1, 2], [60, 30, 10])
  scores = selection.diversity_scores(clusters, np.random.default_rng(0))
  counts = lambda fraction: np.bincount(clusters[selection.kept_documents(scores, 'lowest',
                                                                          fraction)]).tolist()
  assert counts(0.3) == [10, 10, 10] and counts(0.5) == [20, 20, 10] and counts(1.0) == [60, 30, 10]
  # Within a cluster the order is random: another draw keeps other documents of the same counts.
  other = selection.diversity_scores(clusters, np.random.default_rng(1))
  kept, kept_other = (set(selection.kept_documents(s, 'lowest', 0.3).tolist())
                      for s in (scores, other))
  assert kept != kept_other and len(kept) == len(kept_other) == 30


def test_diversity_balances_planted_clusters_of_documents():
  store = _store([d['text'] for d in arithmetic.documents('train', 2, NUM_SUMS)]
                 + [d['text'] for d in lego.documents('train', 2, NUM_CHAINS // 3)])
  params = selection.Prototypicality(clusters=2, iterations=20, embedding='ngrams', ngram=1,
                                     dims=1024)
  select = selection.Selection('diversity', 'lowest', 0.25, 0.0, 'documents', (), None, params)
  scores = selection.document_scores(select, store, 'mixed', seed=3, task_key=7)
  kept = selection.kept_documents(scores, 'lowest', 0.25)
  # The run's k-means (the same seeded start) finds the two kinds, and the 20 kept documents are
  # 10 of each cluster, where random selection would keep about 15 sums and 5 chains.
  clusters, _ = selection.kmeans_clusters(
      in_context.embed(store, params), 2, 20,
      np.random.default_rng([selection._PROTOTYPICALITY_STREAM, 3, 7]))
  sums, chains = clusters[:NUM_SUMS], clusters[NUM_SUMS:]
  assert len(set(chains)) == 1 and np.mean(sums != chains[0]) >= 0.9  # 57 of the 60 sums
  assert np.bincount(clusters[kept]).tolist() == [10, 10]
  assert np.sum(kept >= NUM_SUMS) >= 8  # chains: random selection keeps about 5 of the 20
  np.testing.assert_array_equal(
      scores, selection.document_scores(select, store, 'mixed', seed=3, task_key=7))
