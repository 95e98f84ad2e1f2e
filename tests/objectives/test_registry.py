"""Objectives on packed rows: layouts, fit, reconstruction, determinism and config errors."""

import numpy as np
import pytest

from experiments import base
from research import errors
from research.data import packing, vocabularies
from research.objectives import denoising
from research.objectives import registry
from tests.data import test_vocabularies

VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=100)
SENTINELS = {vocabularies.sentinel_id(VOCABULARY, k): k for k in range(91)}
MODES = {vocabularies.control_token_id(VOCABULARY, m) for m in denoising.MODE_TOKENS.values()}


def _objective(name='ul2', architecture='decoder', seq_len=256, target_len=0, **overrides):
  config = base.get_config()
  config.objective.name, config.model.architecture = name, architecture
  config.data.seq_len, config.objective.target_len = seq_len, target_len
  config.data.extra_ids = 100
  for key, value in overrides.items():
    section, field = key.split('__')
    config[section][field] = value
  return registry.make_objective(config, VOCABULARY)


@pytest.fixture(scope='module')
def code_store(data_dir):
  from research.data import store as store_lib
  return store_lib.load_store('stdlib_code', 'train', 'byte', data_dir)


def _packed_rows(store, objective, count=64):
  packed = packing.pack_documents(store, objective.row_len, 0, objective.chunk_len,
                                  objective.costs, objective.budgets)
  return {k: v[:count] for k, v in packed.items()}


def test_decoder_row_prefix_covers_the_inputs_and_loss_the_targets():
  row = registry.decoder_row([(np.array([7, 8, 9]), np.array([4, 5])),
                              (np.array([6]), np.array([3]))], 9)
  assert row['targets'].tolist() == [7, 8, 9, 4, 5, 6, 3, 0, 0]
  assert row['inputs'].tolist() == [0, 7, 8, 9, 4, 0, 6, 0, 0]  # shifted within each segment
  assert row['segment_ids'].tolist() == [1, 1, 1, 1, 1, 2, 2, 0, 0]
  assert row['positions'].tolist() == [0, 1, 2, 3, 4, 0, 1, 0, 0]
  # Positions 0..3 read BOS and the inputs, position 3 predicts the first target.
  assert row['prefix'].tolist() == [True] * 4 + [False] + [True, True] + [False] * 2
  assert row['weights'].tolist() == [0, 0, 0, 1, 1, 0, 1, 0, 0]


def test_encoder_decoder_row_shares_segments_between_the_rows():
  row = registry.encoder_decoder_row([(np.array([7, 8]), np.array([4, 5])),
                                      (np.array([6]), np.array([3]))], 4, 4)
  assert row['encoder_inputs'].tolist() == [7, 8, 6, 0]
  assert row['encoder_segment_ids'].tolist() == [1, 1, 2, 0]
  assert row['targets'].tolist() == [4, 5, 3, 0] and row['inputs'].tolist() == [0, 4, 0, 0]
  assert row['segment_ids'].tolist() == [1, 1, 2, 0]
  assert row['weights'].tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize('architecture,target_len', [('decoder', 0), ('encoder_decoder', 128)])
def test_ul2_rows_fit_and_reconstruct_every_segment(code_store, architecture, target_len):
  objective = _objective('ul2', architecture, 256, target_len)
  rows = _packed_rows(code_store, objective)
  batch, noise = objective.examples(rows, np.arange(64), seed=0, with_noise=True)
  encoder = architecture == 'encoder_decoder'
  assert batch['targets'].shape == (64, target_len or 256)
  if encoder:
    assert batch['encoder_inputs'].shape == (64, 256)
  for b in range(64):
    segments = rows['segment_ids'][b]
    for k, record in enumerate(noise[b], 1):
      original = rows['targets'][b][segments == k]
      dec = batch['segment_ids'][b] == k
      if encoder:
        inputs = batch['encoder_inputs'][b][batch['encoder_segment_ids'][b] == k]
        targets = batch['targets'][b][dec]
      else:
        sequence = batch['targets'][b][dec]
        weights = batch['weights'][b][dec]
        first_target = int(np.argmax(weights > 0))
        inputs, targets = sequence[:first_target], sequence[first_target:]
        assert np.all(weights[first_target:] == 1)
        assert np.all(batch['prefix'][b][dec][:first_target + 1])
        assert not np.any(batch['prefix'][b][dec][first_target + 1:])
      np.testing.assert_array_equal(
          denoising.original_tokens(inputs, targets, list(SENTINELS), MODES), original)
      assert len(record['noise']) == len(original)
      assert sum(record['noise']) == len(targets) - sum(t in SENTINELS for t in targets.tolist())


def test_denoiser_choices_follow_the_rates_per_segment(code_store):
  objective = _objective('ul2', seq_len=128)
  rows = _packed_rows(code_store, objective, count=4000)
  _, noise = objective.examples(rows, np.arange(len(rows['targets'])), seed=0, with_noise=True)
  names = [s['denoiser'] for row in noise for s in row]
  assert len(names) >= 4000
  frequencies = [names.count(d.name) / len(names) for d in objective.denoisers]
  np.testing.assert_allclose(frequencies, objective.rates, atol=0.02)


def test_examples_are_a_function_of_seed_and_example_id(code_store):
  objective = _objective('ul2r')
  rows = _packed_rows(code_store, objective, count=4)
  first = objective.examples(rows, np.array([10, 11, 12, 13]), seed=0)
  again = objective.examples(rows, np.array([10, 11, 12, 13]), seed=0)
  other = objective.examples(rows, np.array([14, 15, 16, 17]), seed=0)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  assert not np.array_equal(first['targets'], other['targets'])


def test_causal_objective_is_next_token_prediction_on_packed_rows(code_store):
  objective = _objective('causal_lm')
  assert objective.chunk_len == 256 and objective.budgets == (256,)
  rows = _packed_rows(code_store, objective, count=2)
  batch = objective.examples(rows, np.arange(2), seed=0)
  np.testing.assert_array_equal(batch['targets'], rows['targets'])
  assert batch['inputs'][0, 1] == rows['targets'][0, 0] and 'prefix' not in batch


@pytest.mark.parametrize('name,architecture', [('causal_lm', 'decoder'), ('ul2', 'decoder'),
                                               ('ul2', 'encoder_decoder')])
def test_every_decoder_segment_starts_from_the_vocabulary_s_bos(tmp_path, name, architecture):
  config = base.get_config()
  config.objective.name, config.model.architecture = name, architecture
  config.data.vocabulary = f'hf:{test_vocabularies.llama_like_tokenizer(tmp_path)}'
  config.data.extra_ids, config.data.seq_len = 100, 64
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, 100)
  objective = registry.make_objective(config, vocabulary)
  assert objective.start_id == 1  # <s>, not the <unk> at id 0
  segments = np.array([[1] * 20 + [2] * 24 + [0] * (objective.row_len - 44)] * 2, np.int32)
  rows = {'targets': np.where(segments > 0, np.arange(segments.size).reshape(2, -1) % 10 + 3, 0),
          'segment_ids': segments,
          'positions': np.array([[*range(20), *range(24)] + [0] * (objective.row_len - 44)] * 2)}
  batch = objective.examples(rows, np.arange(2), seed=0)
  ids = batch['segment_ids']
  starts = (ids > 0) & (ids != np.pad(ids, [(0, 0), (1, 0)])[:, :-1])
  assert starts.sum() == 4 and (batch['inputs'][starts] == 1).all()
  assert (batch['inputs'][ids == 0] == 0).all()  # padding stays 0
  config.data.start_id = 7  # a recorded start id (config.json) wins over the vocabulary's
  assert registry.make_objective(config, vocabulary).start_id == 7


def test_eval_formats_for_a_causal_model_drop_the_prefix():
  formats = registry.eval_objectives(_objective('causal_lm'), ['R3_15', 'causal_lm'], VOCABULARY)
  assert set(formats) == {'', 'R3_15', 'causal_lm'}
  assert not formats['R3_15'].prefix_attention and formats['R3_15'].mode_ids
  ul2 = registry.eval_objectives(_objective('ul2'), [], VOCABULARY)
  assert set(ul2) == {'', 'R3_15', 'R8_15', 'X3_50', 'X8_50', 'X64_15', 'X64_50', 'S_25'}
  with pytest.raises(errors.UserError, match=r"eval\.objectives: 'R4' is neither"):
    registry.eval_objectives(_objective('ul2'), ['R4'], VOCABULARY)


def test_config_errors_name_the_key():
  with pytest.raises(errors.UserError, match=r"objective\.name='ul3'"):
    _objective('ul3')
  with pytest.raises(errors.UserError, match=r"objective\.name='causal_lm' trains a decoder"):
    _objective('causal_lm', 'encoder_decoder')
  with pytest.raises(errors.UserError, match=r'data\.extra_ids=100 gives 91 sentinels.*at least'):
    _objective('ul2', seq_len=2048)
  with pytest.raises(errors.UserError, match=r"model\.architecture='rnn'"):
    _objective('ul2', 'rnn')


def test_the_causal_denoiser_without_mode_tokens_is_causal_lm(code_store):
  """'S_100' (CodeGen2's 0-prefix denoiser, arXiv 2305.02309): an empty prefix, every token a
  target; without mode tokens and with causal attention its examples are causal LM's."""
  causal = _objective('causal_lm')
  denoiser = _objective('prefix_lm', objective__denoisers={'S_100': {'prefix': True, 'rate': 1.0}},
                        objective__mode_tokens=False, objective__prefix_attention=False)
  rows = _packed_rows(code_store, causal, count=4)
  expected, got = causal.examples(rows, np.arange(4), 0), denoiser.examples(rows, np.arange(4), 0)
  assert set(got) == set(expected) and 'prefix' not in got
  for key in expected:
    np.testing.assert_array_equal(got[key], expected[key], err_msg=key)


def test_codegen2_mixes_causal_lm_and_span_corruption_half_and_half(code_store):
  objective = _objective('codegen2', objective__mode_tokens=False,
                         objective__prefix_attention=False)
  assert [d.name for d in objective.denoisers] == ['S_100', 'R3_15'] and not objective.mode_ids
  rows = _packed_rows(code_store, objective)
  batch, noise = objective.examples(rows, np.arange(len(rows['targets'])), 0, with_noise=True)
  assert 'prefix' not in batch
  records = [record for row in noise for record in row]
  names = [record['denoiser'] for record in records]
  assert abs(names.count('S_100') / len(names) - 0.5) < 0.1
  for record in records:  # S_100 corrupts the whole segment, R3_15 about 15% of it
    rate = np.mean(record['noise'])
    assert rate == 1.0 if record['denoiser'] == 'S_100' else len(record['noise']) < 40 or (
        abs(rate - 0.15) < 0.02)
  formats = registry.eval_objectives(objective, ['R3_15'], VOCABULARY)
  assert not formats['R3_15'].prefix_attention and not formats['R3_15'].mode_ids


def test_causal_prefix_attention_needs_a_decoder():
  with pytest.raises(errors.UserError, match=r'objective\.prefix_attention=False .*decoder'):
    _objective('ul2', 'encoder_decoder', objective__prefix_attention=False)
  with pytest.raises(errors.UserError, match=r'S_1\.rate=1\.0 must be in \(0, 1\), or 1 for a '
                     'prefix denoiser'):
    _objective('ul2', objective__denoisers={'S_1': {'mean_span': 3, 'rate': 1.0}})
