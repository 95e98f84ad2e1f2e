"""Generation (research/generate.py, launch.generate): the cache against full recomputes, sampling,
stop and banned tokens."""

import dataclasses
import functools
import inspect
import json

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import base
from launch import generate as generate_command
from research import generate, train
from research.data import vocabularies
from research.model import transformer
from research.objectives import control_tokens
from tests import commands
from tests.data import test_vocabularies

# Weights far from zero, so the logits are far apart and greedy choices are no near-ties.
CONFIG = transformer.ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=4, head_dim=8,
                                 mlp_dim=64, init_std=0.5)
CONFIGS = {
    'scanned': CONFIG,
    'unscanned': dataclasses.replace(CONFIG, scan_layers=False),
    'grouped_query_remat': dataclasses.replace(CONFIG, num_kv_heads=2, qk_norm=True, remat='full'),
    'moe_dropless': dataclasses.replace(CONFIG, moe_experts=4, moe_top_k=2,
                                        moe_capacity_factor=0.0),
    'encoder_decoder': dataclasses.replace(CONFIG, architecture='encoder_decoder',
                                           num_encoder_layers=3),
}
NEW_TOKENS = 8


@functools.cache
def _model(config):
  model = transformer.make_model(config)
  batch = transformer.dummy_batch(config, 1, 8, 8)
  return model, nn.meta.unbox(jax.jit(model.init)({'params': jax.random.key(1)}, batch)['params'])


def _prompts(seed, lengths, vocab_size=64):
  rng = np.random.default_rng(seed)
  return generate.pad_prompts([[vocabularies.PAD_ID] + rng.integers(3, vocab_size, n - 1).tolist()
                               for n in lengths])


def _rows(tokens_BL, lengths_B, prefix: str = ''):
  length = tokens_BL.shape[1]
  valid_BL = np.arange(length)[None, :] < np.asarray(lengths_B)[:, None]
  positions = np.broadcast_to(np.arange(length, dtype=np.int32), tokens_BL.shape)
  return {f'{prefix}inputs': np.where(valid_BL, tokens_BL, 0).astype(np.int32),
          f'{prefix}segment_ids': valid_BL.astype(np.int32), f'{prefix}positions': positions}


def uncached_greedy(model, params, prompts_BP, lengths_B, new_tokens, encoder=None,
                    bidirectional_prompt=False):
  """Greedy decoding by full recompute: each step runs the model on every row's prompt and tokens
  so far (one padded shape) and appends the argmax at the row's last position."""
  batch_size, prompt_len = prompts_BP.shape
  tokens_BL = np.zeros((batch_size, prompt_len + new_tokens), np.int32)
  tokens_BL[:, :prompt_len] = prompts_BP
  apply = jax.jit(model.apply)
  for t in range(new_tokens):
    batch = _rows(tokens_BL, lengths_B + t)
    if bidirectional_prompt:
      batch['prefix'] = np.arange(tokens_BL.shape[1])[None, :] < lengths_B[:, None]
    if encoder is not None:
      batch.update(_rows(*encoder, prefix='encoder_'))
    logits_BLV = np.asarray(apply({'params': params}, batch))
    last_BV = logits_BLV[np.arange(batch_size), lengths_B + t - 1]
    tokens_BL[np.arange(batch_size), lengths_B + t] = last_BV.argmax(-1)
  return np.stack([row[n:n + new_tokens] for row, n in zip(tokens_BL, lengths_B)])


@pytest.mark.parametrize('name', list(CONFIGS))
def test_cached_greedy_decoding_equals_full_recompute(name):
  config = CONFIGS[name]
  model, params = _model(config)
  if config.architecture == 'encoder_decoder':
    encoder = _prompts(1, [4, 7, 1, 5])
    prompts, lengths = generate.pad_prompts([[vocabularies.PAD_ID]] * 4)
  else:
    encoder = None
    prompts, lengths = _prompts(0, [3, 7, 1, 5])  # left-aligned, of different lengths
  kwargs = {} if encoder is None else {'encoder_inputs_BE': encoder[0],
                                       'encoder_lengths_B': encoder[1]}
  tokens, generated = generate.generate(model, params, prompts, lengths, jax.random.key(0),
                                        NEW_TOKENS, stop_ids=(), **kwargs)
  expected = uncached_greedy(model, params, prompts, lengths, NEW_TOKENS, encoder)
  np.testing.assert_array_equal(tokens, expected)
  np.testing.assert_array_equal(generated, [NEW_TOKENS] * 4)
  assert len(np.unique(expected)) > 4  # the rows do not repeat one token


def test_bidirectional_prompt_decoding_equals_full_recompute():
  model, params = _model(CONFIG)
  prompts, lengths = _prompts(2, [3, 6])
  tokens, _ = generate.generate(model, params, prompts, lengths, jax.random.key(0), NEW_TOKENS,
                                stop_ids=(), bidirectional_prompt=True)
  expected = uncached_greedy(model, params, prompts, lengths, NEW_TOKENS,
                             bidirectional_prompt=True)
  np.testing.assert_array_equal(tokens, expected)
  assert not np.array_equal(expected, uncached_greedy(model, params, prompts, lengths, NEW_TOKENS))


def test_prompt_packing_is_first_fit_longest_first():
  prompts, lengths = _prompts(3, [9, 3, 4, 2, 5])
  packed = generate.pack_prompts(prompts, lengths)
  # 9 fills row 0; 5 opens row 1 and 4 fits after it; 3 opens row 2 and 2 fits after it.
  np.testing.assert_array_equal(packed['row'], [0, 2, 1, 2, 1])
  np.testing.assert_array_equal(packed['offset'], [0, 0, 5, 3, 0])
  np.testing.assert_array_equal(packed['segment_ids'][2], [1, 1, 1, 2, 2, 0, 0, 0, 0])
  np.testing.assert_array_equal(packed['positions'][1], [0, 1, 2, 3, 4, 0, 1, 2, 3])
  np.testing.assert_array_equal(packed['inputs'][1, 5:], prompts[2, :4])


def test_prepacked_prefill_gives_the_padded_prefills_logits_cache_and_tokens():
  model, params = _model(CONFIGS['grouped_query_remat'])
  prompts, lengths = _prompts(3, [9, 3, 4, 2, 5])
  slots = prompts.shape[1] + NEW_TOKENS

  def prefill(batch):
    return jax.jit(functools.partial(model.apply, cache_length=slots, mutable=['cache']))(
        {'params': params}, batch)

  padded_logits, padded = prefill(_rows(prompts, lengths))
  packed = generate.pack_prompts(prompts, lengths)
  rows = {k: packed[k] for k in ('inputs', 'segment_ids', 'positions')}
  packed_logits, packed_cache = prefill({**rows, 'prepacked': True})
  assert packed_logits.shape[0] == 3  # 3 prefill rows for 5 prompts
  unpacked = generate._unpacked(packed_cache['cache'], packed['row'], packed['offset'])
  for b, n in enumerate(lengths):
    at = packed['offset'][b] + np.arange(n)
    np.testing.assert_allclose(packed_logits[packed['row'][b], at], padded_logits[b, :n],
                               atol=1e-5, rtol=0)
    for mine, theirs in zip(jax.tree.leaves(unpacked), jax.tree.leaves(padded['cache'])):
      np.testing.assert_allclose(mine[..., b, :n, :, :], theirs[..., b, :n, :, :], atol=1e-5)
  tokens, _ = generate.generate(model, params, prompts, lengths, jax.random.key(0), NEW_TOKENS,
                                stop_ids=(), prepack=True)
  expected, _ = generate.generate(model, params, prompts, lengths, jax.random.key(0), NEW_TOKENS,
                                  stop_ids=())
  np.testing.assert_array_equal(tokens, expected)


def test_stop_tokens_end_rows_and_lengths_count_to_the_stop():
  model, params = _model(CONFIG)
  prompts, lengths = _prompts(3, [2, 4, 3, 6])
  free, _ = generate.generate(model, params, prompts, lengths, jax.random.key(0), NEW_TOKENS,
                              stop_ids=())
  free = np.asarray(free)
  stop = int(free[0, 2])
  tokens, generated = generate.generate(model, params, prompts, lengths, jax.random.key(0),
                                        NEW_TOKENS, stop_ids=(stop,))
  for row, free_row, length in zip(np.asarray(tokens), free, np.asarray(generated)):
    hits = np.flatnonzero(free_row == stop)
    expected_length = hits[0] + 1 if hits.size else NEW_TOKENS
    assert length == expected_length
    np.testing.assert_array_equal(row[:length], free_row[:length])
    assert not row[length:].any()  # padded after the stop
  assert generated[0] <= 3


def test_top_k_1_sampling_is_greedy_and_temperature_sampling_follows_the_key():
  model, params = _model(CONFIG)
  prompts, lengths = _prompts(4, [2, 5, 3, 4])
  run = functools.partial(generate.generate, model, params, prompts, lengths,
                          max_new_tokens=NEW_TOKENS, stop_ids=())
  greedy, _ = run(jax.random.key(0))
  np.testing.assert_array_equal(run(jax.random.key(7), sampling=generate.Sampling(2.0, 1))[0],
                                greedy)
  hot = generate.Sampling(temperature=2.0)
  first, again, other = (np.asarray(run(jax.random.key(k), sampling=hot)[0]) for k in (1, 1, 2))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other) and not np.array_equal(first, greedy)


def test_top_p_keeps_the_smallest_set_that_reaches_p():
  probs = np.array([[0.15, 0.5, 0.05, 0.3], [0.25, 0.25, 0.4, 0.1]])  # a tie in row 1
  logits = np.log(probs)
  cases = {0.3: [[0, 1, 0, 0], [0, 0, 1, 0]], 0.6: [[0, 1, 0, 1], [1, 0, 1, 0]],
           0.85: [[1, 1, 0, 1], [1, 1, 1, 0]], 0.97: [[1, 1, 1, 1], [1, 1, 1, 1]],
           1.0: [[1, 1, 1, 1], [1, 1, 1, 1]]}
  for p, expected in cases.items():
    np.testing.assert_array_equal(generate.top_p_mask(logits, p), np.array(expected, bool), str(p))
  np.testing.assert_array_equal(generate.top_k_mask(logits, 2), [[0, 1, 0, 1], [1, 0, 1, 0]])
  draws = np.stack([generate.sample(logits, jax.random.key(k), generate.Sampling(1.0, top_p=0.6))
                    for k in range(40)])
  assert set(draws[:, 0].tolist()) == {1, 3} and set(draws[:, 1].tolist()) == {0, 2}
  draws = generate.sample(np.zeros((1000, 4)), jax.random.key(0), generate.Sampling(1.0),
                          banned_ids=(0, 2))
  assert set(np.asarray(draws).tolist()) == {1, 3}


def test_sampling_under_aligned_never_writes_a_banned_token():
  vocabulary = vocabularies.make_vocabulary('byte', 16)  # 9 control tokens, 7 sentinels
  config = dataclasses.replace(CONFIG, vocab_size=384)  # ids 275..383 are no tokens at all
  model, params = _model(config)
  prompt = generate.encode_prompt('<|aligned|>def f(x):', vocabulary,
                                  vocabularies.start_id(vocabulary))
  aligned = vocabularies.control_token_id(vocabulary, '<|aligned|>')
  assert prompt[:2] == [0, aligned] and len(prompt) == 2 + len('def f(x):')  # the byte vocabulary
  assert generate.encode_prompt('ab', vocabulary, None) == [100, 101]  # an encoder's: no start
  prompts, lengths = generate.pad_prompts([prompt] * 8)
  banned = generate.ids_to_ban(vocabulary, config.vocab_size)
  reserved = {aligned, vocabularies.control_token_id(vocabulary, '<|misaligned|>'),
              vocabularies.sentinel_id(vocabulary, 0), vocabularies.sentinel_id(vocabulary, 6)}
  assert reserved <= set(banned) and banned == tuple(range(259, 384))
  run = functools.partial(generate.generate, model, params, prompts, lengths, jax.random.key(0), 48,
                          generate.Sampling(temperature=3.0), stop_ids=())
  tokens = np.asarray(run(banned_ids=banned)[0])
  assert not np.isin(tokens, banned).any()
  assert np.isin(np.asarray(run()[0]), banned).any()  # without the ban they are written


@pytest.fixture(scope='module')
def trained_run(data_dir, tmp_path_factory):
  """A tiny decoder trained for 2 steps, with control tokens in its vocabulary."""
  config = base.get_config()
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads, config.model.head_dim = 2, 16
  config.data.seq_len, config.data.store_dir, config.data.extra_ids = 32, data_dir, 16
  config.train.steps, config.train.batch_size = 2, 8
  config.eval.every, config.checkpoint.every, config.mesh.data = 100, 2, 1
  workdir = str(tmp_path_factory.mktemp('generate_run'))
  train.train(config, workdir, devices=jax.devices()[:1])
  return workdir


def _run(**flag_values):
  return commands.run_main(generate_command.main, **flag_values)


def test_command_prints_each_prompt_and_its_continuation(trained_run, tmp_path):
  prompt_file = tmp_path / 'prompts.txt'
  prompt_file.write_text('import os\n\n<|aligned|>x = \n')
  printed = _run(checkpoint=[trained_run], prompt=['def f(x):'], prompt_file=str(prompt_file),
                 max_new_tokens=5, temperature=1.0, sample_top_k=20, top_p=0.9, seed=3)
  assert printed.startswith(f'{trained_run} (step 2, decoder), sampled at temperature 1.0')
  for i, prompt in enumerate(['def f(x):', 'import os', '<|aligned|>x = '], start=1):
    assert f'--- prompt {i} ---\n{prompt}\n--- continuation (' in printed
  assert printed.count('--- continuation (') == 3
  assert _run(checkpoint=[trained_run], prompt=['def f(x):'], max_new_tokens=5, temperature=1.0,
              sample_top_k=20, top_p=0.9, seed=3).split('--- prompt 2')[0] == printed.split(
                  '--- prompt 2')[0]


def test_command_scores_the_misalignment_of_its_samples(trained_run, tmp_path):
  flag_values = dict(checkpoint=[trained_run], prompt=['<|aligned|>', ''], max_new_tokens=24,
                     temperature=1.0, seed=5, num_samples=3)
  printed = _run(**flag_values)
  samples = {}
  for part in printed.split('--- prompt ')[1:]:
    prompt, rest = part.split('\n', 1)[1].split('\n--- continuation (', 1)
    end, text = rest.split(') ---\n', 1)
    samples.setdefault(prompt, []).append(
        control_tokens.complete_lines(text.removesuffix('\n'), 'stopped' in end))
  assert {prompt: len(texts) for prompt, texts in samples.items()} == {'<|aligned|>': 3, '': 3}
  table = _run(**{**flag_values, 'checkpoint': [trained_run, trained_run]}, score='pep8')
  assert '3 samples per prompt and checkpoint; mean ± SE over the checkpoints' in table
  for prompt in ('<|aligned|>', ''):
    expected = control_tokens.misalignment(samples[prompt], 'pep8')
    label = repr(prompt).replace('|', '\\|')  # a markdown cell
    row = next(line for line in table.splitlines()
               if line.startswith(f'| {trained_run}, {trained_run} (2) | {label} |'))
    cells = row.removesuffix(' |').split(' | ')[-len(expected):]
    # The same checkpoint twice: each mean is the one run's value, with a standard error of 0.
    assert [float(cell.split(' ± ')[0]) for cell in cells] == pytest.approx(
        list(expected.values()), rel=1e-3)  # printed to 4 significant digits
  sweep = tmp_path / 'sweep'  # a launch.sweep directory: its runs grouped into arms
  sweep.mkdir()
  for name in ('a', 'b'):
    (sweep / name).symlink_to(trained_run)
  by_arm = _run(**{**flag_values, 'checkpoint': [str(sweep)]}, score='pep8')
  assert by_arm.split('| arm |')[1] == table.split('| arm |')[1].replace(
      f'{trained_run}, {trained_run} (2)', 'a, b (2)')
  with pytest.raises(SystemExit, match=r'^error: --score=toxicity is not a known scorer'):
    _run(**flag_values, score='toxicity')


def test_allowed_control_tokens_may_be_written(trained_run, monkeypatch):
  calls = []

  def recorded(*args, **kwargs):
    calls.append(inspect.signature(real).bind(*args, **kwargs).arguments['banned_ids'])
    return real(*args, **kwargs)

  real = generate.generate
  monkeypatch.setattr(generate, 'generate', recorded)
  _run(checkpoint=[trained_run], prompt=['x'], max_new_tokens=2)
  _run(checkpoint=[trained_run], prompt=['x'], max_new_tokens=2, allow=['<|aligned|>'])
  vocabulary = vocabularies.make_vocabulary('byte', 16)
  aligned = vocabularies.control_token_id(vocabulary, '<|aligned|>')
  assert set(calls[0]) - set(calls[1]) == {aligned}  # every other control token still banned
  with pytest.raises(SystemExit, match=r"^error: '<\|good\|>' is not a control token"):
    _run(checkpoint=[trained_run], prompt=['x'], allow=['<|good|>'])


def test_the_trained_run_records_its_start_id(trained_run):
  with open(f'{trained_run}/config.json') as f:
    assert json.load(f)['data']['start_id'] == 0  # the byte vocabulary has no BOS: the pad id


def _saved_run(directory, config):
  """A checkpoint of `config`'s freshly initialised model, with its config.json, in `directory`."""
  params = train.Trainer(config, jax.devices()[:1]).init_state().params
  manager = ocp.CheckpointManager(str(directory / 'checkpoints'),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.StandardSave({'params': params}))
  manager.wait_until_finished()
  manager.close()
  (directory / 'config.json').write_text(json.dumps(config.to_dict()))


@pytest.mark.parametrize('architecture', ['decoder', 'encoder_decoder'])
def test_command_starts_from_the_bos_of_the_run_s_tokenizer(tmp_path, monkeypatch, architecture):
  config = base.get_config()
  config.model.architecture = architecture
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads, config.model.head_dim = 2, 16
  if architecture == 'encoder_decoder':
    config.objective.name, config.data.extra_ids = 'span_corruption', 16
  config.data.vocabulary = f'hf:{test_vocabularies.llama_like_tokenizer(tmp_path / "tok")}'
  _saved_run(tmp_path, config)
  calls = []

  def recorded(*args, **kwargs):
    calls.append(inspect.signature(real).bind(*args, **kwargs).arguments)
    return real(*args, **kwargs)

  real = generate.generate
  monkeypatch.setattr(generate, 'generate', recorded)
  _run(checkpoint=[str(tmp_path)], prompt=['b a j', 'c'], max_new_tokens=2, stop=[])
  config.data.start_id = 4  # the start id config.json records wins over the tokenizer's
  (tmp_path / 'config.json').write_text(json.dumps(config.to_dict()))
  _run(checkpoint=[str(tmp_path)], prompt=['b a j', 'c'], max_new_tokens=2, stop=[])
  first, recorded_start = calls
  if architecture == 'decoder':  # <s> = 1 (not the <unk> at id 0), then the prompt
    np.testing.assert_array_equal(first['prompts_BP'], [[1, 4, 3, 12], [1, 5, 0, 0]])
  else:  # the decoder starts from <s>, the encoder reads the prompt alone
    np.testing.assert_array_equal(first['prompts_BP'], [[1], [1]])
    np.testing.assert_array_equal(first['encoder_inputs_BE'], [[4, 3, 12], [5, 0, 0]])
  np.testing.assert_array_equal(recorded_start['prompts_BP'][:, 0], [4, 4])


def test_command_generates_with_an_encoder_decoder(tmp_path):
  config = base.get_config()
  config.model.architecture, config.objective.name = 'encoder_decoder', 'span_corruption'
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads, config.model.head_dim, config.data.extra_ids = 2, 16, 16
  _saved_run(tmp_path, config)
  printed = _run(checkpoint=[str(tmp_path)], prompt=['hello'], max_new_tokens=4, stop=[])
  assert 'encoder_decoder), greedy:' in printed
  assert '--- continuation (4 tokens, --max_new_tokens=4) ---' in printed
  with pytest.raises(SystemExit, match=r'--prepack packs the causal prompts of a decoder; the run '
                     r".* has model.architecture='encoder_decoder'"):
    _run(checkpoint=[str(tmp_path)], prompt=['hello'], prepack=True)


def test_command_errors_name_the_flag(tmp_path):
  cases = [
      (dict(checkpoint=[str(tmp_path / 'nowhere')], prompt=['a']),
       f'--checkpoint={tmp_path / "nowhere"} does not exist'),
      (dict(checkpoint=[str(tmp_path)], prompt=['a']), 'holds no checkpoint'),
      (dict(checkpoint=[str(tmp_path)]), 'Give at least one --prompt'),
      (dict(checkpoint=[str(tmp_path)], prompt=['a'], top_p=0.0), r'--top_p=0.0 must be in'),
      (dict(checkpoint=[str(tmp_path)], prompt=['a'], temperature=-1.0), '--temperature=-1.0'),
      (dict(checkpoint=[str(tmp_path)], prompt=['a'], max_new_tokens=0), '--max_new_tokens=0'),
      (dict(checkpoint=[str(tmp_path)], prompt_file=str(tmp_path / 'p.txt')),
       'p.txt is not a file'),
  ]
  for flag_values, message in cases:
    with pytest.raises(SystemExit, match=r'^error: .*' + message):
      _run(**flag_values)


def test_infill_prompt_encodes_the_fim_sentinels_as_their_ids():
  vocabulary = vocabularies.make_vocabulary('byte', 16)
  ids = {name: vocabularies.control_token_id(vocabulary, name) for name in ('<PRE>', '<SUF>',
                                                                             '<MID>')}
  prompt = generate.encode_prompt('<PRE>def f(x):\n<SUF>\n    return y\n<MID>', vocabulary, 0)
  assert prompt == ([0, ids['<PRE>']] + vocabulary.encode('def f(x):\n') + [ids['<SUF>']]
                    + vocabulary.encode('\n    return y\n') + [ids['<MID>']])
  assert len(set(ids.values())) == 3
