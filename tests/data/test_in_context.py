"""In-context pretraining (research/data/in_context.py): n-gram embeddings, exact blockwise k-NN,
ICLM's greedy chains, and packing that keeps documents of one topic together."""

import jax
import ml_collections
import numpy as np
import pytest

from experiments import base
from research import errors, finished
from research.data import in_context, packing
from research.data import store as store_lib
from research.data import tasks
from tests.test_scores import save_run, window_rows

_CONFIG = in_context.Config(embedding='ngrams', ngram=3, dims=1024, neighbours=10, max_chain=21)
_LETTERS = ('abcdefgh', 'ijklmnop', 'qrstuvwx')  # three topics' disjoint alphabets


def _store(texts: list[str]) -> store_lib.DocumentStore:
  """Byte-token documents of `texts`, each ending in EOS (1)."""
  pieces = [np.append(np.frombuffer(t.encode(), np.uint8).astype(np.int32) + 3, 1) for t in texts]
  offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
  return store_lib.DocumentStore(tokens=np.concatenate(pieces).astype(np.int32), offsets=offsets,
                                 doc_ids=[str(d) for d in range(len(texts))],
                                 manifest={'vocabulary': 'byte'}, directory='')


def _topic_store(num_documents: int = 600, seed: int = 0):
  """Documents of 3-12 words, each of one of three topics: words of 20 per topic, each spelt from
  the topic's own letters; (store, topic of each document)."""
  rng = np.random.default_rng(seed)
  words = [[''.join(rng.choice(list(letters), rng.integers(3, 8))) for _ in range(20)]
           for letters in _LETTERS]
  topics_D = rng.integers(0, 3, num_documents)
  texts = [' '.join(rng.choice(words[t], rng.integers(3, 13))) for t in topics_D]
  return _store(texts), topics_D


def _same_topic_neighbours(order_D: np.ndarray, topics_D: np.ndarray) -> float:
  """The fraction of adjacent documents of the order that share a topic."""
  return float(np.mean(topics_D[order_D[1:]] == topics_D[order_D[:-1]]))


def test_ngram_embeddings_count_each_documents_own_ngrams():
  texts = ['abcabc', 'xy', 'hello world', 'abcabc']
  embeddings = in_context.ngram_embeddings(_store(texts), 3, 64)
  lengths = np.array([len(t) + 1 for t in texts])  # with EOS
  np.testing.assert_array_equal(embeddings.sum(axis=1), np.maximum(lengths - 2, 0))
  np.testing.assert_array_equal(embeddings[0], embeddings[3])
  # A document's n-grams are its own: the same whatever documents are stored around it.
  alone = in_context.ngram_embeddings(_store(['hello world']), 3, 64)
  np.testing.assert_array_equal(alone[0], embeddings[2])
  assert embeddings.dtype == np.float32 and embeddings.shape == (4, 64)
  assert in_context.ngram_embeddings(_store(['a']), 3, 64).sum() == 0  # shorter than n: none


def test_nearest_neighbours_are_exact_whatever_the_block(monkeypatch):
  rng = np.random.default_rng(1)
  embeddings = rng.normal(size=(200, 16)).astype(np.float32)
  embeddings[7] = 0  # similar to nothing: ties with every document
  embeddings[20:40] = embeddings[20]  # duplicates: ties at the top
  unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
  similar = unit @ unit.T
  np.fill_diagonal(similar, -np.inf)
  after = (np.arange(200) - np.arange(200)[:, None]) % 200  # ties: the next ones, cyclically
  expected = np.lexsort((after, -similar), axis=1)[:, :5]
  neighbours = in_context.nearest_neighbours(embeddings, 5)
  np.testing.assert_array_equal(neighbours, expected)
  np.testing.assert_array_equal(neighbours[7], [8, 9, 10, 11, 12])
  np.testing.assert_array_equal(neighbours[38], [39, 20, 21, 22, 23])
  monkeypatch.setattr(in_context, '_BLOCK_ELEMENTS', 3 * 200 + 1)  # blocks of 3 rows
  np.testing.assert_array_equal(in_context.nearest_neighbours(embeddings, 5), expected)
  assert in_context.nearest_neighbours(embeddings[:3], 10).shape == (3, 2)  # at most D - 1
  assert in_context.nearest_neighbours(embeddings[:1], 10).shape == (1, 0)


def test_chains_follow_the_first_unvisited_neighbour_up_to_max_chain():
  store, _ = _topic_store()
  neighbours = in_context.nearest_neighbours(in_context.embed(store, _CONFIG), 10)
  for max_chain in (1, 5, 21):
    chains = in_context.chains(neighbours, max_chain)
    assert sorted(d for chain in chains for d in chain) == list(range(store.num_documents))
    assert max(len(chain) for chain in chains) <= max_chain
    visited = set()
    for chain in chains:
      visited.add(chain[0])
      for previous, document in zip(chain, chain[1:]):
        assert document == next(n for n in neighbours[previous] if n not in visited)
        visited.add(document)
  assert max(len(chain) for chain in in_context.chains(neighbours, 21)) == 21
  # The first chain starts at the document of lowest in-degree.
  in_degree = np.bincount(neighbours.reshape(-1), minlength=store.num_documents)
  assert in_context.chains(neighbours, 21)[0][0] == np.argmin(in_degree)


def test_the_order_puts_documents_of_a_topic_together():
  store, topics_D = _topic_store()
  order = in_context.document_order(store, _CONFIG, seed=0)
  np.testing.assert_array_equal(np.sort(order), np.arange(store.num_documents))
  np.testing.assert_array_equal(order, in_context.document_order(store, _CONFIG, seed=0))
  assert not np.array_equal(order, in_context.document_order(store, _CONFIG, seed=1))  # ties
  random = packing.random_documents(store.num_documents, 0)
  assert _same_topic_neighbours(random, topics_D) < 0.4  # about 1/3
  assert _same_topic_neighbours(order, topics_D) > 0.8


def test_in_context_packing_fills_rows_with_one_topic():
  store, topics_D = _topic_store()
  shares = {}
  orders = {'random': None, 'in_context': in_context.document_order(store, _CONFIG, 0)}
  for name, order in orders.items():
    documents = packing.pack_documents(store, 256, seed=0, order_D=order)['documents']
    assert sorted(np.unique(documents[documents >= 0])) == list(range(store.num_documents))
    # Per row, the share of its tokens from its most frequent topic.
    shares[name] = np.mean([np.bincount(topics_D[r[r >= 0]], minlength=3).max() / np.sum(r >= 0)
                            for r in documents])
  assert shares['random'] < 0.65 and shares['in_context'] > 0.85


@pytest.mark.parametrize('change, match', [
    ({'neighbours': 0}, r'data\.order\.in_context\.neighbours=0 must be a positive integer'),
    ({'max_chain': 2.5}, r'data\.order\.in_context\.max_chain=2\.5'),
    ({'embedding': 'contriever'},
     r"data\.order\.in_context\.embedding='contriever'.*checkpoint:PATH"),
    ({'embedding': 'checkpoint:'}, r"data\.order\.in_context\.embedding='checkpoint:'"),
    ({'radius': 3}, r'data\.order\.in_context=.*exactly the keys'),
])
def test_bad_in_context_config_names_the_key(change, match):
  order_config = ml_collections.ConfigDict(base.get_config().data.order.to_dict())
  order_config.in_context = {**order_config.in_context.to_dict(), **change}
  with pytest.raises(errors.UserError, match=match):
    in_context.bind(order_config)
  assert in_context.bind(base.get_config().data.order) == _CONFIG


@pytest.fixture(scope='module')
def checkpoint_run(data_dir, tmp_path_factory):
  """A freshly initialised tiny decoder of the byte vocabulary and the store of its task."""
  config = base.get_config()
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads, config.model.head_dim = 2, 16
  config.data.seq_len, config.data.store_dir = 16, data_dir
  config.data.tasks = ml_collections.ConfigDict(
      {'few_sums': {'source': 'arithmetic', 'num_documents': 30, 'max_digits': 6}})
  config.data.mixture = ml_collections.ConfigDict({'few_sums': 1.0})
  config.eval.batch_size = 8
  tasks.register_config_tasks(config.data)
  store = store_lib.load_store('few_sums', 'train', 'byte', data_dir)
  return save_run(config, str(tmp_path_factory.mktemp('in_context') / 'run')), config, store


def test_checkpoint_embeddings_are_each_documents_mean_final_hidden_state(checkpoint_run):
  path, config, store = checkpoint_run
  seq_len = config.data.seq_len
  assert np.diff(store.offsets).max() > seq_len  # some documents span two windows
  embeddings = in_context.checkpoint_embeddings(store, path)
  assert embeddings.shape == (store.num_documents, 32) and embeddings.dtype == np.float32
  # Reference: every window of every document a row of its own, the final norm's output captured.
  windows, batch = window_rows(store, seq_len)
  loaded = finished.load_checkpoint(path)
  _, state = loaded.model.apply(
      {'params': jax.device_get(loaded.params)}, batch,
      capture_intermediates=lambda module, method: module.name == 'final_norm')
  hidden_WLE = np.asarray(state['intermediates']['final_norm']['__call__'][0], np.float64)
  rows_of = [[row for row, (d, _) in enumerate(windows) if d == document]
             for document in range(store.num_documents)]
  expected = [hidden_WLE[rows][batch['segment_ids'][rows] > 0].mean(axis=0) for rows in rows_of]
  np.testing.assert_allclose(embeddings, np.array(expected), atol=2e-5)


def test_a_checkpoint_of_another_vocabulary_is_refused(checkpoint_run):
  path, _, store = checkpoint_run
  other = store_lib.DocumentStore(tokens=store.tokens, offsets=store.offsets, doc_ids=store.doc_ids,
                                  manifest={**store.manifest, 'vocabulary': 'spm:other.model'},
                                  directory='')
  with pytest.raises(errors.UserError,
                     match=r"data\.order\.in_context\.embedding='checkpoint:.*'byte'.*"
                           r"'spm:other\.model'"):
    in_context.embed(other, in_context.Config(f'checkpoint:{path}', 3, 1024, 10, 21))
