import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import base
from research import defaults, errors, train
from research.model import layers, transformer

CONFIG = transformer.ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=2, head_dim=16,
                                 mlp_dim=64)
ENC_DEC = dataclasses.replace(CONFIG, architecture='encoder_decoder', num_encoder_layers=3)


def _positions(segments):
  """Positions that restart in each segment."""
  positions = np.zeros_like(segments)
  for row in range(segments.shape[0]):
    for t in range(1, segments.shape[1]):
      positions[row, t] = positions[row, t - 1] + 1 if segments[row, t] == segments[row, t - 1] else 0
  return positions


def _init(config, batch):
  model = transformer.make_model(config)
  return nn.meta.unbox(jax.jit(model.init)({'params': jax.random.key(0)}, batch)['params'])


def _apply(config, tokens, segments, prefix=None, params=None):
  batch = {'inputs': jnp.asarray(tokens), 'segment_ids': jnp.asarray(segments),
           'positions': jnp.asarray(_positions(segments))}
  if prefix is not None:
    batch['prefix'] = jnp.asarray(prefix)
  if params is None:
    params = _init(config, batch)
  return jax.jit(transformer.Decoder(config).apply)({'params': params}, batch), params


def _tokens(seed, length=12):
  return np.random.default_rng(seed).integers(1, 64, (1, length)).astype(np.int32)


def test_packed_documents_do_not_see_each_other_and_attention_is_causal():
  segments = np.array([[1] * 5 + [2] * 4 + [0] * 3], np.int32)
  tokens = _tokens(0)
  logits, params = _apply(CONFIG, tokens, segments)
  other = tokens.copy()
  other[0, 5:9] = _tokens(1)[0, 5:9]  # change the second document only
  logits_other, _ = _apply(CONFIG, other, segments, params=params)
  np.testing.assert_array_equal(logits[0, :5], logits_other[0, :5])
  assert np.abs(logits[0, 5:9] - logits_other[0, 5:9]).max() > 1e-3
  later = tokens.copy()
  later[0, 3] = (later[0, 3] + 1) % 64  # a later token of document 1 never changes earlier logits
  logits_later, _ = _apply(CONFIG, later, segments, params=params)
  np.testing.assert_array_equal(logits[0, :3], logits_later[0, :3])
  assert np.abs(logits[0, 3] - logits_later[0, 3]).max() > 1e-3


def test_prefix_is_bidirectional_and_the_rest_causal():
  segments = np.ones((1, 12), np.int32)
  prefix = np.array([[True] * 6 + [False] * 6])
  tokens = _tokens(2)
  logits, params = _apply(CONFIG, tokens, segments, prefix)
  changed = tokens.copy()
  changed[0, 4] = (changed[0, 4] + 7) % 64  # inside the prefix: position 0 sees it
  logits_changed, _ = _apply(CONFIG, changed, segments, prefix, params=params)
  assert np.abs(logits[0, 0] - logits_changed[0, 0]).max() > 1e-3
  changed = tokens.copy()
  changed[0, 8] = (changed[0, 8] + 7) % 64  # after the prefix: causal again
  logits_changed, _ = _apply(CONFIG, changed, segments, prefix, params=params)
  np.testing.assert_array_equal(logits[0, :8], logits_changed[0, :8])


def test_attention_mask_by_hand():
  segments = jnp.array([[1, 1, 2, 0]])
  mask = np.asarray(layers.attention_mask(segments)[0, 0])
  expected = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], bool)
  np.testing.assert_array_equal(mask, expected)
  mask = np.asarray(layers.attention_mask(jnp.array([[1, 1, 1]]), jnp.array([[True, True, False]]))[0, 0])
  np.testing.assert_array_equal(mask, np.array([[1, 1, 0], [1, 1, 0], [1, 1, 1]], bool))


def test_rotary_preserves_norm_and_depends_on_relative_position():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 16))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 16))
  def score(pq, pk):
    sin_q, cos_q = layers.rotary_tables(jnp.array([[pq]]), 16, 10000.0)
    sin_k, cos_k = layers.rotary_tables(jnp.array([[pk]]), 16, 10000.0)
    return float(jnp.sum(layers.apply_rotary(q, sin_q, cos_q) * layers.apply_rotary(k, sin_k, cos_k)))
  np.testing.assert_allclose(score(3, 1), score(10, 8), rtol=1e-5)
  assert abs(score(3, 1) - score(3, 2)) > 1e-3
  sin, cos = layers.rotary_tables(jnp.array([[5]]), 16, 10000.0)
  np.testing.assert_allclose(jnp.linalg.norm(layers.apply_rotary(q, sin, cos)), jnp.linalg.norm(q),
                             rtol=1e-5)


def test_every_parameter_has_logical_axis_names():
  config = dataclasses.replace(CONFIG, qk_norm=True, tie_embeddings=False)
  batch = transformer.dummy_batch(config, 1, 8, 8)
  boxed = transformer.Decoder(config).init({'params': jax.random.key(0)}, batch)['params']
  leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
  assert all(len(v.names) == v.value.ndim for v in leaves)
  params = nn.meta.unbox(boxed)
  assert params['layers']['attention']['query_norm']['scale'].shape == (2, 16)  # scanned: [layers, K]
  assert params['unembedding'].shape == (64, 32)
  assert boxed['layers']['mlp']['gate'].names == ('layers', 'embed', 'mlp')


@pytest.mark.parametrize('remat', ['full', 'dots'])
def test_remat_changes_memory_not_results(remat):
  tokens, segments = _tokens(3), np.ones((1, 12), np.int32)
  logits, params = _apply(CONFIG, tokens, segments)
  logits_remat, _ = _apply(dataclasses.replace(CONFIG, remat=remat), tokens, segments, params=params)
  np.testing.assert_allclose(logits, logits_remat, rtol=1e-6, atol=1e-6)


def test_unscanned_layers_compute_the_same_function():
  tokens, segments = _tokens(4), np.ones((1, 12), np.int32)
  logits, params = _apply(CONFIG, tokens, segments)
  logits_loop, _ = _apply(dataclasses.replace(CONFIG, scan_layers=False), tokens, segments,
                          params=transformer.unscan_params(params, CONFIG))
  np.testing.assert_allclose(logits, logits_loop, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('config', [
    CONFIG, ENC_DEC, dataclasses.replace(CONFIG, num_layers=4, moe_experts=2, moe_every=2)],
    ids=['decoder', 'encoder_decoder', 'moe_every_2'])
def test_unscanned_layers_start_from_the_scanned_init_unstacked(config):
  """train.make_init_fn gives unscanned layers the scanned model's draw, a module per layer, with
  the `layers` axis gone from each boxed parameter's logical names."""
  batch = transformer.dummy_batch(config, 1, 8, 8)
  tx = train.make_optimizer(base.get_config().train, lambda step: 1e-3)

  def init(model_config):
    return train.make_init_fn(transformer.make_model(model_config), tx, batch)(
        jax.random.key(3)).params

  scanned, unscanned = init(config), init(dataclasses.replace(config, scan_layers=False))
  stacks = [k for k in scanned if k.endswith('layers')]
  layers_per_stack = {'layers': config.num_layers, 'encoder_layers': config.encoder_layers,
                      'decoder_layers': config.num_layers}
  assert sorted(unscanned) == sorted(
      [k for k in scanned if k not in stacks] +
      [f'{k}_{i}' for k in stacks for i in range(layers_per_stack[k])])
  is_boxed = lambda x: isinstance(x, nn.Partitioned)
  expected = transformer.unscan_params(scanned, config)
  assert jax.tree.structure(expected, is_leaf=is_boxed) == jax.tree.structure(
      unscanned, is_leaf=is_boxed)
  for want, got in zip(jax.tree.leaves(expected, is_leaf=is_boxed),
                       jax.tree.leaves(unscanned, is_leaf=is_boxed)):
    np.testing.assert_array_equal(got.value, want.value)
    assert got.names == want.names and 'layers' not in got.names
  # Apart from unscan_params: layer 1 is slice 1 of the stacked weights (block_1 of group 0 when
  # every second layer is MoE).
  stack = stacks[0]
  stacked, index = ((scanned[stack]['block_1'], 0) if config.moe_every > 1
                    else (scanned[stack], 1))
  jax.tree.map(lambda got, want: np.testing.assert_array_equal(got, want[index]),
               nn.meta.unbox(unscanned[f'{stack}_1']), nn.meta.unbox(stacked))


@pytest.mark.parametrize('config', [dataclasses.replace(CONFIG, tie_embeddings=False), ENC_DEC],
                         ids=['decoder_untied', 'encoder_decoder'])
def test_hidden_outputs_make_the_logits(config):
  """`hidden=True` returns the final norm's output and the output weights (the unembedding, or
  the embedding when tied) that output_logits turns into the same logits."""
  model = transformer.make_model(config)
  batch = jax.tree.map(jnp.asarray, transformer.dummy_batch(config, 2, 12, 12))
  batch['inputs'] = jnp.asarray(np.random.default_rng(0).integers(1, 64, (2, 12)), jnp.int32)
  params = model.init(jax.random.key(0), batch)['params']
  x_BLD, unembed_VD = model.apply({'params': params}, batch, hidden=True)
  assert x_BLD.shape == (2, 12, config.d_model)
  expected = params['embedding'] if config.tie_embeddings else params['unembedding']
  np.testing.assert_array_equal(nn.meta.unbox(unembed_VD), nn.meta.unbox(expected))
  np.testing.assert_allclose(transformer.output_logits(config, x_BLD, unembed_VD),
                             model.apply({'params': params}, batch), rtol=1e-6, atol=1e-6)


def test_bfloat16_compute_keeps_float32_params_and_logits():
  config = dataclasses.replace(CONFIG, dtype='bfloat16')
  tokens, segments = _tokens(5), np.ones((1, 12), np.int32)
  logits, params = _apply(config, tokens, segments)
  assert logits.dtype == jnp.float32
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits32, _ = _apply(CONFIG, tokens, segments, params=params)
  np.testing.assert_allclose(logits, logits32, atol=0.05)  # the same function, at bf16 precision


def test_flops_per_token_formula():
  # 2 layers x (4*32*2*16 attention + 3*32*64 mlp) + 64*32 output = 2*(4096+6144)+2048 = 22528.
  assert transformer.matmul_params(CONFIG) == 22528
  # 6N + 12 * layers * L * H*K / 2 (causal) with L = 128.
  assert transformer.flops_per_token(CONFIG, 128) == 6 * 22528 + 12 * 2 * 128 * 32 / 2
  assert transformer.flops_per_token(CONFIG, 128, causal=False) == 6 * 22528 + 12 * 2 * 128 * 32


def _enc_dec_batch(encoder_tokens, encoder_segments, tokens, segments):
  return {'encoder_inputs': jnp.asarray(encoder_tokens),
          'encoder_segment_ids': jnp.asarray(encoder_segments),
          'encoder_positions': jnp.asarray(_positions(encoder_segments)),
          'inputs': jnp.asarray(tokens), 'segment_ids': jnp.asarray(segments),
          'positions': jnp.asarray(_positions(segments))}


def test_encoder_decoder_logits_and_named_parameters():
  config = dataclasses.replace(ENC_DEC, qk_norm=True, tie_embeddings=False, dtype='bfloat16')
  model = transformer.make_model(config)
  assert isinstance(model, transformer.EncoderDecoder)
  batch = transformer.dummy_batch(config, 2, 12, 8)
  assert {k: v.shape for k, v in batch.items()} == {
      'encoder_inputs': (2, 12), 'encoder_segment_ids': (2, 12), 'encoder_positions': (2, 12),
      'inputs': (2, 8), 'segment_ids': (2, 8), 'positions': (2, 8)}
  boxed = model.init({'params': jax.random.key(0)}, batch)['params']
  leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
  assert all(len(v.names) == v.value.ndim and v.value.dtype == jnp.float32 for v in leaves)
  assert boxed['encoder_layers']['attention']['query'].names == ('layers', 'embed', 'heads', 'kv')
  cross_out = boxed['decoder_layers']['cross_attention']['out']
  assert cross_out.names == ('layers', 'heads', 'kv', 'embed')
  params = nn.meta.unbox(boxed)
  assert params['encoder_layers']['mlp']['gate'].shape == (3, 32, 64)  # num_encoder_layers
  assert params['decoder_layers']['cross_attention']['key_norm']['scale'].shape == (2, 16)
  assert 'cross_attention' not in params['encoder_layers']
  assert {'embedding', 'unembedding', 'encoder_norm', 'final_norm'} <= set(params)
  logits = jax.jit(model.apply)({'params': params}, batch)
  assert logits.shape == (2, 8, 64) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits))


# A packed encoder-decoder row: examples 1 and 2 on both sides; the decoder row ends in padding
# while the encoder row has none, so the padding position has no encoder token to attend to.
ENCODER_SEGMENTS = np.array([[1] * 6 + [2] * 6], np.int32)
DECODER_SEGMENTS = np.array([[1] * 4 + [2] * 3 + [0]], np.int32)


def _encoder_output(model, variables, batch):
  """The encoder's output [B, E, D] after its final norm, captured from the model's forward pass."""
  _, state = model.apply(variables, batch, mutable='intermediates',
                         capture_intermediates=lambda module, _: module.name == 'encoder_norm')
  return state['intermediates']['encoder_norm']['__call__'][0]


def test_encoder_is_bidirectional_decoder_causal_and_examples_apart():
  encoder_tokens, tokens = _tokens(6, 12), _tokens(7, 8)
  batch = _enc_dec_batch(encoder_tokens, ENCODER_SEGMENTS, tokens, DECODER_SEGMENTS)
  params = _init(ENC_DEC, batch)
  model = transformer.EncoderDecoder(ENC_DEC)
  apply = jax.jit(lambda batch: (model.apply({'params': params}, batch),
                                 _encoder_output(model, {'params': params}, batch)))
  run = lambda e, d: jax.device_get(apply(_enc_dec_batch(e, ENCODER_SEGMENTS, d, DECODER_SEGMENTS)))
  logits, encoded = run(encoder_tokens, tokens)
  late = encoder_tokens.copy()
  late[0, 5] = (late[0, 5] + 7) % 64  # the last encoder token of example 1
  logits_late, encoded_late = run(late, tokens)
  assert np.abs(logits_late[0, 0] - logits[0, 0]).max() > 1e-3  # reaches the first output
  # Cross-attention alone would do that: the encoder's own first output shows it is bidirectional.
  assert np.abs(encoded_late[0, 0] - encoded[0, 0]).max() > 1e-3
  other = encoder_tokens.copy()
  other[0, 6:] = _tokens(8, 12)[0, 6:]  # example 2's encoder tokens
  logits_other, encoded_other = run(other, tokens)
  np.testing.assert_array_equal(encoded_other[0, :6], encoded[0, :6])
  np.testing.assert_array_equal(logits_other[0, :4], logits[0, :4])
  np.testing.assert_array_equal(logits_other[0, 7], logits[0, 7])  # padding: no encoder token
  assert np.abs(logits_other[0, 4:7] - logits[0, 4:7]).max() > 1e-3
  other = tokens.copy()
  other[0, 4:7] = _tokens(9, 8)[0, 4:7]  # example 2's decoder tokens
  np.testing.assert_array_equal(run(encoder_tokens, other)[0][0, :4], logits[0, :4])
  later = tokens.copy()
  later[0, 2] = (later[0, 2] + 7) % 64  # a later decoder token never changes earlier logits
  logits_later, _ = run(encoder_tokens, later)
  np.testing.assert_array_equal(logits_later[0, :2], logits[0, :2])
  assert np.abs(logits_later[0, 2] - logits[0, 2]).max() > 1e-3


def _logits(model, variables, batch):
  return model.apply(variables, batch)


def _seen(config, batch, token_ids, output=_logits):
  """[T, N] bool: whether output t has a nonzero gradient w.r.t. token n's input embedding.

  `output` gives [1, T, X] (by default the logits); `token_ids` lists every input token of the
  one-row batch, encoder first. They are distinct and the output layer untied, so the gradient
  w.r.t. embedding row token_ids[n] is the gradient w.r.t. token n's input embedding, through the
  model's own lookup.
  """
  assert len(set(token_ids)) == len(token_ids) and not config.tie_embeddings
  params = _init(config, batch)
  model = transformer.make_model(config)

  def mixed_T(embedding_VD):
    out_TX = output(model, {'params': {**params, 'embedding': embedding_VD}}, batch)[0]
    return out_TX @ jax.random.normal(jax.random.key(1), out_TX.shape[-1:])  # a generic readout

  grads_TVD = jax.jit(jax.jacrev(mixed_T))(params['embedding'])
  return np.asarray(jnp.abs(grads_TVD[:, np.asarray(token_ids)]).max(-1) > 0)


def test_gradients_reach_exactly_what_each_decoder_position_may_see():
  config = dataclasses.replace(ENC_DEC, tie_embeddings=False)
  ids = np.random.default_rng(10).permutation(np.arange(1, 64))[:20].astype(np.int32)
  encoder_tokens, tokens = ids[None, :12], ids[None, 12:]
  batch = _enc_dec_batch(encoder_tokens, ENCODER_SEGMENTS, tokens, DECODER_SEGMENTS)
  seen_LN = _seen(config, batch, ids)
  enc, dec = ENCODER_SEGMENTS[0], DECODER_SEGMENTS[0]
  # Every encoder token of the own example (bidirectional encoder, cross-attention within the
  # example), decoder tokens of the own example up to t; padding sees padding only.
  sees_encoder_LE = dec[:, None] == enc[None, :]
  sees_decoder_LL = (dec[:, None] == dec[None, :]) & np.tri(8, dtype=bool)
  np.testing.assert_array_equal(seen_LN, np.concatenate([sees_encoder_LE, sees_decoder_LL], 1))
  # The encoder's own outputs: every token of the own example, in both directions, no decoder token.
  encoder_seen_EN = _seen(config, batch, ids, _encoder_output)
  sees_encoder_EE = enc[:, None] == enc[None, :]
  np.testing.assert_array_equal(encoder_seen_EN, np.pad(sees_encoder_EE, ((0, 0), (0, 8))))


def test_prefix_lm_gradients_reach_exactly_the_prefix_and_the_causal_past():
  config = dataclasses.replace(CONFIG, tie_embeddings=False)
  segments = np.array([[1] * 7 + [2] * 5], np.int32)
  prefix = np.array([[True] * 3 + [False] * 4 + [True] * 2 + [False] * 3])  # P = 3 and 2
  tokens = np.random.default_rng(11).permutation(np.arange(1, 64))[None, :12].astype(np.int32)
  batch = {'inputs': jnp.asarray(tokens), 'segment_ids': jnp.asarray(segments),
           'positions': jnp.asarray(_positions(segments)), 'prefix': jnp.asarray(prefix)}
  seen_LL = _seen(config, batch, tokens[0])
  expected = np.zeros((12, 12), bool)
  expected[0:3, 0:3] = True  # the prefix of example 1 sees all of itself
  for t in range(3, 7):
    expected[t, :t + 1] = True  # later positions: the prefix and what precedes
  expected[7:9, 7:9] = True  # example 2's prefix
  for t in range(9, 12):
    expected[t, 7:t + 1] = True
  np.testing.assert_array_equal(seen_LL, expected)


def test_encoder_decoder_learns_to_copy():
  """Packed one-token examples, each copied from the encoder (ln 32 is the best loss without it)."""
  train_config = base.get_config().train
  tx = train.make_optimizer(train_config, lambda step: 1e-2)
  model = transformer.make_model(ENC_DEC)
  init = train.make_init_fn(model, tx, transformer.dummy_batch(ENC_DEC, 1, 8, 8))
  state = jax.jit(lambda rng: nn.meta.unbox(init(rng)))(jax.random.key(0))
  step = jax.jit(train.make_train_step(model, tx, train_config, dropout=False))
  rng = np.random.default_rng(12)
  segments = np.tile(np.arange(1, 9, dtype=np.int32), (8, 1))  # 8 one-token examples per row
  zeros = np.zeros((8, 8), np.int32)
  losses = []
  for i in range(30):
    tokens = rng.integers(2, 34, (8, 8)).astype(np.int32)
    batch = {'encoder_inputs': tokens, 'encoder_segment_ids': segments, 'encoder_positions': zeros,
             'inputs': zeros + 1, 'targets': tokens, 'segment_ids': segments, 'positions': zeros,
             'weights': np.ones((8, 8), np.float32)}
    state, metrics = step(state, batch, jax.random.key(i))
    losses.append(float(metrics['loss']))
  assert losses[0] > 0.9 * np.log(64)  # starts near uniform over the vocabulary
  assert losses[-1] < 0.7 * losses[0] and losses[-1] < 0.5 * np.log(32)


def test_trainer_builds_and_steps_an_encoder_decoder_on_a_mesh():
  config = base.get_config()
  config.model.architecture, config.model.num_encoder_layers = 'encoder_decoder', 1
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 2, 64
  config.model.num_heads, config.model.head_dim = 2, 16
  config.data.seq_len, config.objective.target_len = 16, 8
  config.train.batch_size, config.schedule.warmup_steps = 4, 1
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2
  trainer = train.Trainer(config)
  rng = np.random.default_rng(13)
  rows = lambda length: np.ones((4, length), np.int32)
  batch = {'encoder_inputs': rng.integers(1, 384, (4, 16)).astype(np.int32),
           'encoder_segment_ids': rows(16), 'encoder_positions': np.cumsum(rows(16), 1) - 1,
           'inputs': rng.integers(1, 384, (4, 8)).astype(np.int32),
           'targets': rng.integers(1, 384, (4, 8)).astype(np.int32), 'segment_ids': rows(8),
           'positions': np.cumsum(rows(8), 1) - 1, 'weights': rows(8).astype(np.float32)}
  state = trainer.init_state()
  assert state.params['encoder_layers']['mlp']['gate'].shape == (1, 32, 64)
  cross_query = state.params['decoder_layers']['cross_attention']['query']  # [layers, D, H, K]
  assert cross_query.shape == (2, 32, 2, 16)
  assert cross_query.sharding.spec == jax.sharding.PartitionSpec(None, 'fsdp', 'tensor', None)
  placed = trainer.place(batch)
  new_state, metrics = trainer.step(state, placed, train.step_rng(0, 0))
  assert int(new_state.step) == 1 and float(metrics['tokens']) == 32
  assert np.isfinite(float(metrics['loss'])) and float(metrics['grad_norm']) > 0
  sums = trainer.eval_step(new_state.params,
                           trainer.place({**batch, 'text_weights': batch['weights']}))
  assert float(sums['weight_sum']) == float(sums['text_weight_sum']) == 32
  assert np.isfinite(float(sums['cross_entropy_sum']))


def test_encoder_decoder_flops_per_token():
  config = dataclasses.replace(ENC_DEC, num_encoder_layers=1)
  attention, mlp, output = 4 * 32 * 32, 3 * 32 * 64, 64 * 32
  encoder_layer, decoder_layer = attention + mlp, 2 * attention + mlp  # with cross-attention
  assert transformer.matmul_params(config) == 1 * encoder_layer + 2 * decoder_layer + output
  # Per decoder token of a row of E = 128 encoder and L = 32 decoder tokens.
  encoder = 6 * (attention + mlp + 2 * 2 * 32 * 32) * 128 + 12 * 1 * 128 * 32 * 128
  decoder = (6 * (2 * (attention + mlp) + 2 * 2 * 32 * 32 + output) * 32
             + 12 * 2 * 32 * 32 / 2 * 32 + 12 * 2 * 128 * 32 * 32)
  assert transformer.flops_per_token(config, 128, target_len=32) == (encoder + decoder) / 32


@pytest.mark.parametrize('architecture', transformer.ARCHITECTURES)
def test_flops_per_token_matches_xla_count_of_the_forward_pass(architecture):
  """Without the causal halving (XLA computes the whole score matrix), forward = training / 3."""
  config = transformer.ModelConfig(architecture=architecture, vocab_size=256, d_model=128,
                                   num_layers=2, num_encoder_layers=1, num_heads=2, head_dim=64,
                                   mlp_dim=512, scan_layers=False)  # XLA counts a loop body once
  model = transformer.make_model(config)
  batch = transformer.dummy_batch(config, 1, 128, 64)
  params = nn.meta.unbox(jax.eval_shape(model.init, {'params': jax.random.key(0)}, batch)['params'])
  counted = jax.jit(model.apply).lower({'params': params}, batch).cost_analysis()['flops']
  outputs = batch['inputs'].shape[1]
  formula = transformer.flops_per_token(config, 128, causal=False, target_len=64) / 3 * outputs
  assert formula <= counted < 1.03 * formula  # the rest is norms, softmax, rotary


def test_encoder_decoder_unscanned_rematerialised_and_dropout():
  encoder_tokens, tokens = _tokens(14, 12), _tokens(15, 8)
  batch = _enc_dec_batch(encoder_tokens, ENCODER_SEGMENTS, tokens, DECODER_SEGMENTS)
  params = _init(ENC_DEC, batch)
  logits = transformer.EncoderDecoder(ENC_DEC).apply({'params': params}, batch)
  unstacked = {k: v for k, v in params.items() if not k.endswith('_layers')}
  for stack, count in (('encoder_layers', 3), ('decoder_layers', 2)):
    for i in range(count):
      unstacked[f'{stack}_{i}'] = jax.tree.map(lambda x: x[i], params[stack])
  config = dataclasses.replace(ENC_DEC, scan_layers=False, remat='full', dropout_rate=0.5)
  model = transformer.EncoderDecoder(config)
  apply = jax.jit(model.apply, static_argnames='deterministic')
  np.testing.assert_allclose(apply({'params': unstacked}, batch), logits, rtol=1e-5, atol=1e-5)
  dropped = apply({'params': unstacked}, batch, deterministic=False,
                  rngs={'dropout': jax.random.key(2)})
  assert np.abs(dropped - logits).max() > 1e-2


# Every architecture switch away from its default (GPT-NeoX-like and more), on the tiny model.
SWITCHED = dataclasses.replace(CONFIG, num_heads=4, num_kv_heads=2, head_dim=8, mlp='gelu',
                               norm='layernorm', attention_bias=True, mlp_bias=True,
                               parallel_residual=True, rotary_fraction=0.5, tie_embeddings=False)


def test_switched_parameters_have_logical_axis_names_and_shapes():
  batch = transformer.dummy_batch(SWITCHED, 1, 8, 8)
  boxed = transformer.Decoder(SWITCHED).init({'params': jax.random.key(0)}, batch)['params']
  leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.Partitioned))
  assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
  assert all(len(v.names) == v.value.ndim for v in leaves)
  layer = boxed['layers']
  assert layer['attention']['key'].names == ('layers', 'embed', 'kv_heads', 'kv')
  assert layer['attention']['key'].value.shape == (2, 32, 2, 8)
  assert layer['attention']['query'].value.shape == (2, 32, 4, 8)
  assert layer['attention']['value_bias'].names == ('layers', 'kv_heads', 'kv')
  assert layer['attention']['out_bias'].names == ('layers', 'embed')
  assert layer['attention_norm']['bias'].names == ('layers', 'embed')
  assert set(layer['mlp']) == {'up', 'up_bias', 'down', 'down_bias'}  # no gate
  assert layer['mlp']['up_bias'].names == ('layers', 'mlp')
  assert set(boxed['final_norm']) == {'scale', 'bias'}
  # Without GQA the key and value heads shard like the query heads, as before the switch existed.
  plain = transformer.Decoder(CONFIG).init({'params': jax.random.key(0)}, batch)['params']
  assert plain['layers']['attention']['key'].names == ('layers', 'embed', 'heads', 'kv')


def test_grouped_query_attention_is_attention_with_shared_key_value_heads():
  """GQA with G heads = multi-head attention whose query heads g*R .. g*R+R-1 share head g's
  key and value projections (Hugging Face's repeat_kv)."""
  gqa = dataclasses.replace(CONFIG, num_heads=4, num_kv_heads=2, head_dim=8)
  tokens, segments = _tokens(16), np.array([[1] * 7 + [2] * 5], np.int32)
  logits, params = _apply(gqa, tokens, segments)
  attention = params['layers']['attention']
  repeated = {**attention, 'key': jnp.repeat(attention['key'], 2, axis=2),
              'value': jnp.repeat(attention['value'], 2, axis=2)}
  mha_params = {**params, 'layers': {**params['layers'], 'attention': repeated}}
  logits_mha, _ = _apply(dataclasses.replace(gqa, num_kv_heads=0), tokens, segments,
                         params=mha_params)
  np.testing.assert_allclose(logits, logits_mha, rtol=1e-5, atol=1e-5)


def test_partial_rotary_rotates_the_leading_dimensions_only():
  x = jax.random.normal(jax.random.key(0), (1, 3, 2, 16))
  sin, cos = layers.rotary_tables(jnp.array([[0, 4, 9]]), 8, 10000.0)  # 8 of 16 dimensions
  out = layers.apply_rotary(x, sin, cos)
  np.testing.assert_array_equal(out[..., 8:], x[..., 8:])
  np.testing.assert_array_equal(out[..., :8], layers.apply_rotary(x[..., :8], sin, cos))
  assert np.abs(out[0, 1, :, :8] - x[0, 1, :, :8]).max() > 1e-2
  assert transformer.ModelConfig(head_dim=64, rotary_fraction=0.25).rotary_dim == 16


def test_switched_model_scanned_unscanned_and_rematerialised_agree():
  tokens, segments = _tokens(17), np.array([[1] * 7 + [2] * 5], np.int32)
  logits, params = _apply(SWITCHED, tokens, segments)
  assert np.all(np.isfinite(logits))
  logits_remat, _ = _apply(dataclasses.replace(SWITCHED, remat='full'), tokens, segments,
                           params=params)
  np.testing.assert_allclose(logits, logits_remat, rtol=1e-6, atol=1e-6)
  logits_loop, _ = _apply(dataclasses.replace(SWITCHED, scan_layers=False), tokens, segments,
                          params=transformer.unscan_params(params, SWITCHED))
  np.testing.assert_allclose(logits, logits_loop, rtol=1e-5, atol=1e-5)


def test_parallel_residual_feeds_both_sublayers_the_layer_input():
  """With the MLP's weights zeroed the MLP adds its bias alone; the attention output then reaches
  the logits only through the residual, the same in both layouts, so the two agree; with the MLP
  live they differ (sequential feeds it x + attention)."""
  config = dataclasses.replace(SWITCHED, num_layers=1)
  tokens, segments = _tokens(18), np.ones((1, 12), np.int32)
  logits, params = _apply(config, tokens, segments)
  sequential = dataclasses.replace(config, parallel_residual=False)
  assert np.abs(_apply(sequential, tokens, segments, params=params)[0] - logits).max() > 1e-4
  mlp = params['layers']['mlp']
  dead = {**params, 'layers': {**params['layers'], 'mlp': {
      **mlp, 'up': jnp.zeros_like(mlp['up']), 'up_bias': jnp.zeros_like(mlp['up_bias'])}}}
  np.testing.assert_allclose(_apply(config, tokens, segments, params=dead)[0],
                             _apply(sequential, tokens, segments, params=dead)[0], atol=1e-6)


@pytest.mark.parametrize('key, value', [('norm', 'batchnorm'), ('mlp', 'relu'),
                                        ('num_kv_heads', 3), ('rotary_fraction', 0.2),
                                        ('rotary_fraction', 1.5)])
def test_bad_switch_values_name_their_key(key, value):
  with pytest.raises(errors.UserError, match=f'model.{key}'):
    dataclasses.replace(CONFIG, **{key: value})


def test_flops_per_token_with_grouped_query_attention_and_gelu_mlp():
  # Per layer: query and output 2*32*4*8, key and value 2*32*2*8, GELU MLP 2*32*64 (no gate).
  layer = 2 * 32 * 4 * 8 + 2 * 32 * 2 * 8 + 2 * 32 * 64
  assert transformer.matmul_params(SWITCHED) == 2 * layer + 64 * 32
  # The attention term counts every query head: 12 * layers * L * H*K, halved when causal.
  assert transformer.flops_per_token(SWITCHED, 128) == (6 * (2 * layer + 64 * 32)
                                                        + 12 * 2 * 128 * 32 / 2)


@pytest.mark.parametrize('architecture', transformer.ARCHITECTURES)
def test_switched_flops_per_token_matches_xla_count_of_the_forward_pass(architecture):
  config = transformer.ModelConfig(architecture=architecture, vocab_size=256, d_model=128,
                                   num_layers=2, num_encoder_layers=1, num_heads=4, num_kv_heads=1,
                                   head_dim=32, mlp_dim=512, mlp='gelu_tanh', scan_layers=False)
  # (XLA counts exact GELU's erf polynomial as some 75 FLOPs an element: the tanh form keeps the
  # elementwise rest small; the matmuls are the same.)
  model = transformer.make_model(config)
  batch = transformer.dummy_batch(config, 1, 128, 64)
  params = nn.meta.unbox(jax.eval_shape(model.init, {'params': jax.random.key(0)}, batch)['params'])
  counted = jax.jit(model.apply).lower({'params': params}, batch).cost_analysis()['flops']
  outputs = batch['inputs'].shape[1]
  formula = transformer.flops_per_token(config, 128, causal=False, target_len=64) / 3 * outputs
  assert formula <= counted < 1.03 * formula  # the rest is norms, softmax, rotary, GELU


def test_model_config_defaults_are_the_schemas():
  """ModelConfig's defaults are research/defaults.py's model.* values, field for field (the schema
  is the one source of truth; a ModelConfig built in code runs as an experiment file would)."""
  schema = defaults.get_config().model.to_dict()
  fields = {f.name: f.default for f in dataclasses.fields(transformer.ModelConfig)}
  assert fields == schema


def test_int8_fake_quant_is_a_127_step_grid_per_row_with_straight_through_gradients():
  x = jax.random.normal(jax.random.key(0), (4, 64)) * jnp.array([[0.1], [1.0], [10.0], [0.0]])
  q = layers.fake_quant(x, 'int8', axis=1)
  for row, q_row in zip(np.asarray(x), np.asarray(q)):
    scale = np.abs(row).max() / 127 if np.abs(row).max() else 1.0
    np.testing.assert_allclose(q_row / scale, np.round(q_row / scale), atol=1e-3)  # on the grid
    assert np.abs(q_row - row).max() <= scale / 2 + 1e-6  # rounded to the nearest step
  np.testing.assert_array_equal(q[3], 0.0)  # an all-zero row stays zero
  cotangent = jax.random.normal(jax.random.key(1), x.shape)
  grad = jax.grad(lambda y: jnp.sum(layers.fake_quant(y, 'int8', axis=1) * cotangent))(x)
  np.testing.assert_array_equal(grad, cotangent)  # straight through


def test_fp8_fake_quant_keeps_e4m3s_three_mantissa_bits():
  x = jax.random.normal(jax.random.key(2), (3, 256))
  q = np.asarray(layers.fake_quant(x, 'fp8', axis=1))
  relative = np.abs(q - np.asarray(x)) / np.abs(np.asarray(x))
  assert relative.max() <= 2.0**-4 + 1e-6  # half an ulp of a 3-bit mantissa (normal range)
  assert 2.0**-7 < relative.mean() < 2.0**-4
  np.testing.assert_allclose(np.abs(q).max(axis=1), np.abs(np.asarray(x)).max(axis=1), rtol=1e-6)


@pytest.mark.parametrize('quant, atol', [('int8', 0.02), ('fp8', 0.05)])
def test_quantised_model_computes_nearly_the_float_function_and_trains(quant, atol):
  config = dataclasses.replace(CONFIG, quant=quant)
  tokens, segments = _tokens(6), np.ones((1, 12), np.int32)
  logits, params = _apply(config, tokens, segments)
  logits32, _ = _apply(CONFIG, tokens, segments, params=params)
  difference = np.abs(np.asarray(logits) - np.asarray(logits32)).max()
  assert 0 < difference < atol  # quantised (not the same numbers), yet close
  batch = {'inputs': jnp.asarray(tokens), 'segment_ids': jnp.asarray(segments),
           'positions': jnp.asarray(_positions(segments))}

  @jax.jit
  @jax.value_and_grad
  def loss(p):
    out = transformer.Decoder(config).apply({'params': p}, batch)
    return -jnp.mean(jax.nn.log_softmax(out)[0, :-1][jnp.arange(11), tokens[0, 1:]])

  value, grads = loss(params)
  assert all(np.isfinite(g).all() and np.abs(g).max() > 0 for g in jax.tree.leaves(grads))
  assert loss(jax.tree.map(lambda p, g: p - 0.5 * g, params, grads))[0] < value


def test_a_bad_quantisation_names_the_key():
  with pytest.raises(errors.UserError, match=r"model.quant='int4' is not a quantisation"):
    dataclasses.replace(CONFIG, quant='int4')
