"""Fill-in-the-middle: examples reassemble, the rates are realised, config errors name the key."""

import ml_collections
import numpy as np
import pytest

from experiments import base
from research import config as config_lib
from research import errors, generate
from research.data import pipeline
from research.data import store as store_lib
from research.data import vocabularies
from research.objectives import documents, fim, registry

VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=16)
IDS = {name: vocabularies.control_token_id(VOCABULARY, name) for name in fim.SENTINELS}
_TEXTS = ['def f(x):\n  return x + 1\n', 'naïve → 東京 🙂', 'x', '']


def _store(texts: list[str]) -> store_lib.DocumentStore:
  pieces = [np.array(VOCABULARY.encode(t) + [VOCABULARY.eos_id], np.int32) for t in texts]
  offsets = np.concatenate([[0], np.cumsum([len(p) for p in pieces])]).astype(np.int64)
  return store_lib.DocumentStore(tokens=np.concatenate(pieces), offsets=offsets,
                                 doc_ids=[str(i) for i in range(len(texts))], manifest={},
                                 directory='')


def _reassembled(tokens: np.ndarray) -> list[int]:
  """The original document's ids (with EOS) of a FIM document's ids, read as PSM or SPM by where
  <SUF> is (a PSM document with an empty prefix reads the same either way)."""
  ids = tokens.tolist()
  assert ids[0] == IDS['<PRE>'] and ids[-1] == VOCABULARY.eos_id
  assert sorted(ids.count(i) for i in IDS.values()) == [1, 1, 1]
  suf, mid = ids.index(IDS['<SUF>']), ids.index(IDS['<MID>'])
  if suf == 1:  # SPM: <PRE> <SUF> suffix <MID> prefix middle; the prefix/middle cut is not marked
    return ids[mid + 1:-1] + ids[suf + 1:mid] + ids[-1:]
  return ids[1:suf] + ids[mid + 1:-1] + ids[suf + 1:mid] + ids[-1:]


@pytest.mark.parametrize('level', fim.LEVELS)
@pytest.mark.parametrize('spm_rate', [0.0, 1.0])
def test_fim_documents_reassemble_to_the_originals(level, spm_rate):
  store = _store(_TEXTS * 25)
  rewritten = documents.Fim(1.0, spm_rate, level).apply(store, 'task', VOCABULARY, seed=3)
  assert rewritten.num_documents == store.num_documents
  assert np.all(rewritten.weights == 1.0)
  for index in range(store.num_documents):
    assert _reassembled(rewritten.document(index)) == store.document(index).tolist()
    if spm_rate:
      assert rewritten.document(index)[1] == IDS['<SUF>']


def test_psm_and_spm_layouts_follow_bavarian_et_al():
  names = {name: name for name in fim.SENTINELS}
  assert fim.rearranged('abcdefg', ('psm', 2, 5), list, names) == [
      '<PRE>', 'a', 'b', '<SUF>', 'f', 'g', '<MID>', 'c', 'd', 'e']
  assert fim.rearranged('abcdefg', ('spm', 2, 5), list, names) == [
      '<PRE>', '<SUF>', 'f', 'g', '<MID>', 'a', 'b', 'c', 'd', 'e']


def test_transformed_and_spm_shares_match_the_rates():
  n, rate, spm_rate = 4000, 0.5, 0.3
  draws = [fim.draw(50, rate, spm_rate, np.random.default_rng([7, i])) for i in range(n)]
  transformed = [d for d in draws if d is not None]
  spm = sum(order == 'spm' for order, _, _ in transformed)
  # Within 4 binomial standard deviations.
  assert abs(len(transformed) - n * rate) < 4 * np.sqrt(n * rate * (1 - rate))
  m = len(transformed)
  assert abs(spm - m * spm_rate) < 4 * np.sqrt(m * spm_rate * (1 - spm_rate))
  assert all(0 <= start <= end <= 50 for _, start, end in transformed)


def test_the_store_s_transformed_share_matches_the_rate_and_is_seeded():
  store = _store(_TEXTS * 500)
  rewrite = documents.Fim(0.25, 0.5, 'token')
  rewritten = rewrite.apply(store, 'task', VOCABULARY, seed=1)
  changed = [rewritten.document(i).tolist() != store.document(i).tolist()
             for i in range(store.num_documents)]
  n = store.num_documents
  assert abs(sum(changed) - n * 0.25) < 4 * np.sqrt(n * 0.25 * 0.75)
  again = rewrite.apply(store, 'task', VOCABULARY, seed=1)
  other = rewrite.apply(store, 'task', VOCABULARY, seed=2)
  np.testing.assert_array_equal(rewritten.tokens, again.tokens)
  assert not np.array_equal(rewritten.tokens, other.tokens)


@pytest.mark.parametrize('level', fim.LEVELS)
def test_rate_zero_leaves_documents_unchanged(level):
  store = _store(_TEXTS)
  rewritten = documents.Fim(0.0, 0.5, level).apply(store, 'task', VOCABULARY, seed=0)
  np.testing.assert_array_equal(rewritten.tokens, store.tokens)
  np.testing.assert_array_equal(rewritten.offsets, store.offsets)


def _config(**fim_settings):
  config = base.get_config()
  config.objective.name, config.data.extra_ids = 'fim', 16
  config.objective.fim.update(fim_settings)
  return config


def test_the_objective_is_causal_and_rewrites_documents():
  objective = registry.make_objective(_config(rate=0.9, spm_rate=0.1, level='token'), VOCABULARY)
  assert objective.name in registry.CAUSAL and not objective.denoising
  assert objective.rewrite == documents.Fim(0.9, 0.1, 'token')


@pytest.mark.parametrize('settings, match', [
    ({'rate': 1.5}, r'objective\.fim\.rate=1\.5'),
    ({'spm_rate': -0.1}, r'objective\.fim\.spm_rate=-0\.1'),
    ({'level': 'word'}, r"objective\.fim\.level='word'"),
])
def test_config_errors_name_the_key(settings, match):
  with pytest.raises(errors.UserError, match=match):
    registry.make_objective(_config(**settings), VOCABULARY)


def test_too_few_extra_ids_names_the_key():
  config = _config()
  config.data.extra_ids = 8
  with pytest.raises(errors.UserError, match=r'data\.extra_ids=8 is too few .* <MID>.* at least 9'):
    registry.make_objective(config, vocabularies.make_vocabulary('byte', extra_ids=8))


def test_training_batches_hold_fim_documents_with_every_token_in_the_loss(data_dir):
  config = _config(rate=1.0)
  config.data.tasks = ml_collections.ConfigDict(
      {'sums': {'source': 'arithmetic', 'num_documents': 200}})
  config.data.mixture = ml_collections.ConfigDict({'sums': 1.0})
  config.data.store_dir, config.data.seq_len, config.train.steps = data_dir, 128, 10
  objective = registry.make_objective(config, VOCABULARY)
  batch = pipeline.TrainData(config.data, 4, config.seed, 10, objective).batch(0)
  real = batch['segment_ids'] > 0
  assert np.all(batch['weights'] == real)
  starts = real & (batch['positions'] == 0)
  assert np.all(batch['targets'][starts] == IDS['<PRE>'])  # every whole document rewritten
  assert np.isin(batch['targets'][real], [IDS['<SUF>']]).sum() == starts.sum()


@pytest.mark.parametrize('key, value', [('rate', 2.0), ('level', 'line')])
def test_fim_keys_are_checked_while_another_objective_runs(key, value):
  config = base.get_config()
  config.objective.fim[key] = value
  with pytest.raises(errors.UserError, match=rf"'objective\.fim\.{key}'"):
    config_lib.check_ranges(config, config_lib.SWITCHED_RANGES)
    config_lib.check_choices(config)


def test_an_infilling_prompt_encodes_the_psm_layout_with_an_empty_middle():
  prompt = generate.encode_prompt('<PRE>def f(x):\n<SUF>\n  return y\n<MID>', VOCABULARY, None)
  text = 'def f(x):\n\n  return y\n'
  assert prompt == fim.rearranged(text, ('psm', 10, 10), VOCABULARY.encode, IDS)
