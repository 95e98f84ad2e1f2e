"""Packing documents into rows: lossless, segment ids and positions, high fill rate."""

import collections

import numpy as np
import pytest

from research.data import packing
from research.data import store as store_lib

_EOS = 1


def _toy_store(lengths: list[int]) -> store_lib.DocumentStore:
  """Documents of the given lengths: tokens 3, 4, ... (distinct across documents) ending in EOS."""
  pieces = [np.append(np.arange(3, 2 + n) + 1000 * d, _EOS) for d, n in enumerate(lengths)]
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  tokens = np.concatenate([np.zeros([0], np.int32), *pieces]).astype(np.int32)
  return store_lib.DocumentStore(tokens=tokens, offsets=offsets,
                                 doc_ids=[str(d) for d in range(len(lengths))], manifest={},
                                 directory='')


def _check_layout(packed: dict, seq_len: int) -> None:
  """Segment ids count 1, 2, ... per row then pad with 0; positions count from 0 per segment."""
  segments_NL, positions_NL = packed['segment_ids'], packed['positions']
  assert segments_NL.shape[1] == seq_len and packed['targets'].shape == segments_NL.shape
  assert all(packed[k].dtype == np.int32 for k in ('targets', 'segment_ids', 'positions'))
  assert packed['documents'].dtype == np.int64  # no overflow past 2^31 documents
  assert np.all(segments_NL[:, 0] == 1)
  steps = np.diff(segments_NL, axis=1)
  is_pad = segments_NL == 0
  assert np.all((steps == 0) | (steps == 1) | ((steps < 0) & is_pad[:, 1:]))
  assert np.all(is_pad[:, :-1] <= is_pad[:, 1:])  # padding only at the end of a row
  starts = np.concatenate([np.ones_like(steps[:, :1]), steps], axis=1) != 0
  expected = np.where(starts | is_pad, 0, np.roll(positions_NL, 1, axis=1) + 1)
  np.testing.assert_array_equal(positions_NL, np.where(is_pad, 0, expected))
  assert np.all(packed['targets'][is_pad] == 0)


def _segments(packed: dict) -> list[np.ndarray]:
  """The token chunks of every segment, row by row."""
  chunks = []
  for targets_L, segments_L in zip(packed['targets'], packed['segment_ids']):
    for segment in range(1, segments_L.max() + 1):
      chunks.append(targets_L[segments_L == segment])
  return chunks


def _documents_from_chunks(chunks: list[np.ndarray], seq_len: int) -> list[bytes]:
  """Joins consecutive chunks into documents: a chunk shorter than seq_len, or ending in EOS,
  ends a document."""
  documents, current = [], []
  for chunk in chunks:
    current.append(chunk)
    if chunk[-1] == _EOS:
      documents.append(np.concatenate(current).astype(np.int32).tobytes())
      current = []
    else:
      assert len(chunk) == seq_len  # only a document's last chunk may be shorter
  assert not current
  return documents


def _assert_lossless(store: store_lib.DocumentStore, packed: dict, seq_len: int) -> None:
  rebuilt = _documents_from_chunks(_segments(packed), seq_len)
  originals = [np.asarray(store.document(i), np.int32).tobytes()
               for i in range(store.num_documents)]
  assert collections.Counter(rebuilt) == collections.Counter(originals)


@pytest.mark.parametrize('seed', [0, 1])
def test_toy_store_packs_losslessly(seed):
  store = _toy_store([3, 9, 4, 1, 8, 2, 5, 16, 7])
  packed = packing.pack_documents(store, 4, seed)
  _check_layout(packed, 4)
  _assert_lossless(store, packed, 4)


def test_toy_store_next_fit_layout():
  store = _toy_store([2, 6])  # with seq_len 4: chunks [2], [4], [2]
  packed = packing.pack_documents(store, 4, seed=0)
  order = np.random.default_rng([packing._PACKING_STREAM, 0]).permutation(2)
  expected_segments = {(0, 1): [[1, 1, 2, 2], [1, 1, 1, 1]],  # [2] then [4] opens a row, [2] fits
                       (1, 0): [[1, 1, 1, 1], [1, 1, 2, 2]]}[tuple(order)]
  np.testing.assert_array_equal(packed['segment_ids'], expected_segments)


def test_the_first_rows_alone_are_the_first_rows_of_the_whole_packing():
  store = _toy_store([5, 17, 3, 30, 8, 8, 2, 25, 11])
  whole = packing.pack_documents(store, 8, seed=3)
  assert len(whole['targets']) == 16
  for num_rows in (0, 1, 4, 16, 20):  # what evaluation packs of a validation shard
    first = packing.pack_documents(store, 8, seed=3, num_rows=num_rows)
    assert first.keys() == whole.keys()
    for key, value in whole.items():
      np.testing.assert_array_equal(first[key], value[:num_rows])


def test_empty_store_packs_to_no_rows():
  packed = packing.pack_documents(_toy_store([]), 8, seed=0)
  assert all(v.shape == (0, 8) for v in packed.values())


def test_code_corpus_packs_losslessly_and_densely(stores, code_packed):
  store = stores['stdlib_code', 'train']
  seq_len = code_packed['targets'].shape[1]
  _check_layout(code_packed, seq_len)
  _assert_lossless(store, code_packed, seq_len)
  assert (code_packed['segment_ids'] > 0).mean() > 0.95


def test_packing_is_seeded(stores):
  store = stores['stdlib_prose', 'validation']
  first = packing.pack_documents(store, 128, seed=3)
  again = packing.pack_documents(store, 128, seed=3)
  other = packing.pack_documents(store, 128, seed=4)
  np.testing.assert_array_equal(first['targets'], again['targets'])
  assert not np.array_equal(first['targets'], other['targets'])


def test_documents_name_each_token_source():
  lengths = [3, 9, 4, 1, 8, 2]
  store = _toy_store(lengths)
  packed = packing.pack_documents(store, 4, seed=0)
  documents = packed['documents']
  np.testing.assert_array_equal(documents == -1, packed['segment_ids'] == 0)
  for doc in range(len(lengths)):  # row-major order of a document's tokens is the document
    np.testing.assert_array_equal(packed['targets'][documents == doc], store.document(doc))


def test_the_default_order_is_the_seeded_permutation():
  store = _toy_store([3, 9, 4, 1, 8, 2, 5, 16, 7])
  default = packing.pack_documents(store, 4, seed=2)
  given = packing.pack_documents(store, 4, seed=0,
                                 order_D=packing.random_documents(store.num_documents, 2))
  for k in default:
    np.testing.assert_array_equal(given[k], default[k])
  with pytest.raises(ValueError, match='not a permutation'):
    packing.pack_documents(store, 4, seed=0, order_D=np.array([0, 1, 2, 3, 4, 5, 6, 7, 7]))


def test_by_score_sorts_ascending_with_ties_in_the_seeded_order():
  scores_D = np.array([2.0, 0.5, 2.0, 1.0, 0.5, 2.0, 2.0])
  order = packing.by_score(scores_D, seed=3)
  assert np.all(np.diff(scores_D[order]) >= 0)
  rank = np.argsort(packing.random_documents(7, 3))  # each document's place in the permutation
  for score in (0.5, 2.0):
    tied = order[scores_D[order] == score]
    assert np.all(np.diff(rank[tied]) > 0)


def test_score_packing_gives_rows_of_similar_score_and_every_document_once():
  rng = np.random.default_rng(0)
  lengths = rng.integers(2, 20, 2000).tolist()
  store = _toy_store(lengths)
  scores_D = rng.normal(size=2000) * 1.5  # real-valued scores, as a launch.score score
  spreads = {}
  for name, order in (('random', None), ('score', packing.by_score(scores_D, 0))):
    packed = packing.pack_documents(store, 64, seed=0, order_D=order)
    _check_layout(packed, 64)
    _assert_lossless(store, packed, 64)
    documents = packed['documents']
    assert sorted(np.unique(documents[documents >= 0])) == list(range(2000))
    spreads[name] = np.mean([np.ptp(scores_D[np.unique(r[r >= 0])]) for r in documents])
  # A random row's documents span most of the score range (about 3.5 x 1.5); a score row's few.
  assert spreads['random'] > 3 and spreads['score'] < 0.05 * spreads['random']
