import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.objectives import losses


def test_cross_entropy_z_loss_and_accuracy_by_hand():
  # Two tokens over a vocabulary of 3. Token 0: logits (0, ln 2, 0) -> Z = 4, target 1.
  # Token 1: logits (0, 0, 0) -> Z = 3, target 2, weight 0.5. Token 2 has weight 0.
  logits = jnp.array([[[0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]])
  targets = jnp.array([[1, 2, 1]])
  weights = jnp.array([[1.0, 0.5, 0.0]])
  sums = losses.token_cross_entropy(logits, targets, weights, z_loss=1e-2)
  ce0, ce1 = math.log(4.0) - math.log(2.0), math.log(3.0)
  np.testing.assert_allclose(sums['cross_entropy_sum'], ce0 + 0.5 * ce1, rtol=1e-6)
  np.testing.assert_allclose(sums['z_loss_sum'], 1e-2 * (math.log(4.0) ** 2 + 0.5 * math.log(3.0) ** 2),
                             rtol=1e-6)
  np.testing.assert_allclose(sums['loss_sum'], sums['cross_entropy_sum'] + sums['z_loss_sum'])
  # Token 0's argmax is the target (1); token 1's argmax is 0, not 2.
  np.testing.assert_allclose(sums['correct_sum'], 1.0)
  np.testing.assert_allclose(sums['weight_sum'], 1.5)
  means = losses.mean_metrics(sums)
  np.testing.assert_allclose(means['loss'], (ce0 + 0.5 * ce1) / 1.5, rtol=1e-6)
  np.testing.assert_allclose(means['accuracy'], 1 / 1.5, rtol=1e-6)
  np.testing.assert_allclose(means['tokens'], 1.5)


def test_zero_z_loss_coefficient_gives_plain_cross_entropy():
  logits = jnp.array([[[1.0, 2.0, 3.0]]])
  sums = losses.token_cross_entropy(logits, jnp.array([[0]]), jnp.array([[1.0]]))
  assert float(sums['z_loss_sum']) == 0.0
  np.testing.assert_allclose(sums['loss_sum'], math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 1,
                             rtol=1e-6)


def _output_loss(chunk, x_BLD, unembed_VD, targets_BL, weights_BL, z_loss=1e-2):
  def logits_fn(x_BCD):
    return jnp.einsum('bcd,vd->bcv', x_BCD, unembed_VD)
  if chunk:
    return losses.chunked_token_cross_entropy(logits_fn, x_BLD, targets_BL, weights_BL, z_loss,
                                              chunk)
  return losses.token_cross_entropy(logits_fn(x_BLD), targets_BL, weights_BL, z_loss)


def _output_inputs(batch, length, dim, vocab, seed=0):
  rng = np.random.default_rng(seed)
  weights = (rng.random((batch, length)) < 0.8).astype(np.float32)  # some tokens weigh nothing
  return (jnp.asarray(rng.normal(size=(batch, length, dim)), jnp.float32),
          jnp.asarray(rng.normal(size=(vocab, dim)) * 0.3, jnp.float32),
          jnp.asarray(rng.integers(0, vocab, (batch, length))), jnp.asarray(weights))


def test_chunked_cross_entropy_equals_the_whole_in_value_and_gradient():
  inputs = _output_inputs(3, 32, 8, 50)
  whole = _output_loss(0, *inputs)
  loss = lambda chunk, x, w: _output_loss(chunk, x, w, *inputs[2:])['loss_sum']
  grads = jax.grad(loss, argnums=(1, 2))(0, *inputs[:2])
  for chunk in (1, 8, 32):
    sums = _output_loss(chunk, *inputs)
    assert sums.keys() == whole.keys()
    for key, value in whole.items():
      np.testing.assert_allclose(sums[key], value, rtol=1e-5, err_msg=key)
    for got, want in zip(jax.grad(loss, argnums=(1, 2))(chunk, *inputs[:2]), grads):
      np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match='chunk=5 must divide the length 32'):
    _output_loss(5, *inputs)


def test_chunked_cross_entropy_keeps_one_chunk_of_logits():
  """XLA's temporary memory for the gradient holds the whole [B, L, V] float32 logits and their
  gradient, or one chunk's. Measured: 64.0 MB whole, 2.5 MB in chunks of 32 of the 1024 positions
  (the logits alone are 32 MB)."""
  inputs = _output_inputs(2, 1024, 16, 4096)

  def temp_bytes(chunk):
    grad = jax.jit(jax.grad(lambda x, w: _output_loss(chunk, x, w, *inputs[2:])['loss_sum'],
                            argnums=(0, 1)))
    return grad.lower(*inputs[:2]).compile().memory_analysis().temp_size_in_bytes

  whole, chunked = temp_bytes(0), temp_bytes(32)
  logits_bytes = 2 * 1024 * 4096 * 4
  assert whole >= logits_bytes
  assert chunked < logits_bytes / 8


def _two_segments(seed):
  """Random logits over 7 words for 2 rows of 6 tokens: row 0 holds segments 1 (3 tokens) and
  2 (2 tokens) and padding, row 1 one segment with a token of weight 0."""
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(rng.normal(size=[2, 6, 7]) * 2.0, jnp.float32)
  targets = jnp.asarray(rng.integers(0, 7, [2, 6]))
  segments = jnp.array([[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 1, 1]])
  weights = jnp.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 1, 1, 1]], jnp.float32)
  return logits, targets, weights, segments


def test_the_coverage_loss_is_cross_entropy_at_n_1_and_pass_at_n_by_hand():
  logits, targets, weights, segments = _two_segments(0)
  plain = losses.token_cross_entropy(logits, targets, weights)
  at_1 = losses.token_cross_entropy(logits, targets, weights, 0.0, segments, coverage_n=1)
  np.testing.assert_allclose(at_1['loss_sum'], plain['loss_sum'], rtol=1e-5)
  nll = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(targets)[..., None],
                            -1)[..., 0] * np.asarray(weights)
  segment_nll = [nll[0, :3].sum(), nll[0, 3:5].sum(), nll[1].sum()]
  expected = sum(-math.log(1 - (1 - math.exp(-s)) ** 4) for s in segment_nll)
  at_4 = losses.token_cross_entropy(logits, targets, weights, 0.0, segments, coverage_n=4)
  np.testing.assert_allclose(at_4['coverage_sum'], expected, rtol=1e-5)
  np.testing.assert_allclose(at_4['loss_sum'], expected, rtol=1e-5)
  assert at_4['cross_entropy_sum'] == plain['cross_entropy_sum']  # still reported
  np.testing.assert_allclose(losses.mean_metrics(at_4)['coverage'], expected / 10, rtol=1e-5)


def test_the_coverage_gradient_is_cross_entropys_scaled_down_where_the_model_is_confident():
  """d(coverage)/d(logits) = d(CE)/d(logits) x N p (1 - p)^(N-1) / (1 - (1 - p)^N) per segment,
  p = exp(-the segment's nll): 1 at N = 1, near 0 for a segment the model is sure of."""
  logits, targets, weights, segments = _two_segments(1)
  sharp = logits.at[1].set(jax.nn.one_hot(targets[1], 7) * 12.0)  # row 1: p near 1
  for n in (1, 4):
    grad = lambda f, x: jax.grad(lambda l: f(l)['loss_sum'])(x)
    coverage = grad(lambda l: losses.token_cross_entropy(l, targets, weights, 0.0, segments, n),
                    sharp)
    plain = grad(lambda l: losses.token_cross_entropy(l, targets, weights), sharp)
    nll = -np.take_along_axis(np.asarray(jax.nn.log_softmax(sharp)),
                              np.asarray(targets)[..., None], -1)[..., 0] * np.asarray(weights)
    for row, span, s in ((0, slice(0, 3), nll[0, :3].sum()), (0, slice(3, 5), nll[0, 3:5].sum()),
                         (1, slice(0, 6), nll[1].sum())):
      p = math.exp(-s)
      factor = n * p * (1 - p) ** (n - 1) / (1 - (1 - p) ** n)
      np.testing.assert_allclose(coverage[row, span], plain[row, span] * factor, rtol=1e-3,
                                 atol=1e-7)
  assert float(jnp.abs(coverage[1]).max()) < 1e-3 * float(jnp.abs(plain[1]).max())


def test_the_coverage_loss_of_a_long_segment_is_its_nll_minus_log_n_with_finite_gradients():
  """A whole document's probability underflows float32; its coverage loss is then nll - log N."""
  rng = np.random.default_rng(2)
  logits = jnp.asarray(rng.normal(size=[1, 64, 7]), jnp.float32)
  targets, weights = jnp.asarray(rng.integers(0, 7, [1, 64])), jnp.ones([1, 64])
  segments = jnp.ones([1, 64], jnp.int32)
  loss = lambda l: losses.token_cross_entropy(l, targets, weights, 0.0, segments, 4)['loss_sum']
  plain = losses.token_cross_entropy(logits, targets, weights)['loss_sum']
  assert float(plain) > 100  # p = exp(-nll) is 0 in float32
  np.testing.assert_allclose(loss(logits), plain - math.log(4), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(loss)(logits), jax.grad(
      lambda l: losses.token_cross_entropy(l, targets, weights)['loss_sum'])(logits), atol=1e-6)
