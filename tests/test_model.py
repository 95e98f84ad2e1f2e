import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.model import layers, transformer

CONFIG = transformer.ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=2, head_dim=16,
                                 mlp_dim=64)


def _apply(config, tokens, segments, prefix=None, params=None):
  model = transformer.Decoder(config)
  positions = np.zeros_like(tokens)
  for row in range(tokens.shape[0]):  # positions restart in each segment
    for t in range(1, tokens.shape[1]):
      positions[row, t] = positions[row, t - 1] + 1 if segments[row, t] == segments[row, t - 1] else 0
  args = (jnp.asarray(tokens), jnp.asarray(segments), jnp.asarray(positions),
          None if prefix is None else jnp.asarray(prefix))
  if params is None:
    params = nn.meta.unbox(jax.jit(model.init)({'params': jax.random.key(0)}, *args)['params'])
  return jax.jit(model.apply)({'params': params}, *args), params


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
  x = jnp.zeros((1, 8), jnp.int32)
  boxed = transformer.Decoder(config).init({'params': jax.random.key(0)}, x, x + 1, x)['params']
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
  unstacked = {k: v for k, v in params.items() if k != 'layers'}
  for i in range(CONFIG.num_layers):
    unstacked[f'layers_{i}'] = jax.tree.map(lambda x: x[i], params['layers'])
  logits_loop, _ = _apply(dataclasses.replace(CONFIG, scan_layers=False), tokens, segments,
                          params=unstacked)
  np.testing.assert_allclose(logits, logits_loop, rtol=1e-5, atol=1e-5)


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
