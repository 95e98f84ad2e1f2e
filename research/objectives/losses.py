"""Loss functions on device: token cross-entropy with per-token weights and the output z-loss,
and the pass@N coverage loss that limits confidence.

Losses are returned as weighted *sums* with the total weight beside them, so that gradient
accumulation and data-parallel shards combine exactly: the mean is taken once, over the whole batch.
"""

import jax
import jax.numpy as jnp

LOSSES = ('cross_entropy', 'coverage')  # objective.loss
_MIN_NLL = 1e-6  # a segment's summed nll is clamped here: the coverage gradient is 0 at nll 0
_TAIL_NLL = 30.0  # above, a segment's coverage loss is its nll - log N (p < 1e-13)


def token_cross_entropy(logits_BLV, targets_BL, weights_BL, z_loss: float = 0.0,
                        segment_ids_BL=None, coverage_n: int = 0):
  """Weighted sums of cross-entropy, z-loss and correct predictions, and the total weight; with
  `coverage_n` N > 0, the loss is the pass@N coverage loss of each segment of `segment_ids_BL`
  (`coverage_sum`, also returned as `coverage_sum`) instead of cross-entropy.

  The output z-loss z_loss * log(Z)^2 per token keeps the log-partition near 0 and the output
  logits from drifting (PaLM, Chowdhery et al. 2022, arXiv 2204.02311; Wortsman et al. 2023,
  arXiv 2309.14322, with coefficient 1e-4). Logits are taken in float32.

  Returns a dict of scalars: `loss_sum` (cross-entropy + z-loss, what is differentiated),
  `cross_entropy_sum`, `z_loss_sum`, `correct_sum`, `weight_sum`.
  """
  logits_BLV = logits_BLV.astype(jnp.float32)
  weights_BL = weights_BL.astype(jnp.float32)
  log_z_BL = jax.nn.logsumexp(logits_BLV, axis=-1)
  target_logit_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  cross_entropy_BL = log_z_BL - target_logit_BL
  z_loss_BL = z_loss * jnp.square(log_z_BL)
  correct_BL = (jnp.argmax(logits_BLV, axis=-1) == targets_BL).astype(jnp.float32)
  cross_entropy_sum = jnp.sum(cross_entropy_BL * weights_BL)
  z_loss_sum = jnp.sum(z_loss_BL * weights_BL)
  sums = {
      'loss_sum': cross_entropy_sum + z_loss_sum,
      'cross_entropy_sum': cross_entropy_sum,
      'z_loss_sum': z_loss_sum,
      'correct_sum': jnp.sum(correct_BL * weights_BL),
      'weight_sum': jnp.sum(weights_BL),
  }
  if coverage_n:
    sums['coverage_sum'] = coverage_sum(cross_entropy_BL, weights_BL, segment_ids_BL, coverage_n)
    sums['loss_sum'] = sums['coverage_sum'] + z_loss_sum
  return sums


def coverage_sum(cross_entropy_BL, weights_BL, segment_ids_BL, n: int):
  """The pass@N coverage loss summed over the packed segments, -log(1 - (1 - p)^N) each, p the
  probability of the segment's weighted tokens, exp(-their summed cross-entropy).

  Chen et al. 2025, "Rethinking Fine-Tuning when Scaling Test-Time Compute: Limiting Confidence
  Improves Mathematical Reasoning", arXiv 2502.07154: the loss of the chance that one of N
  independent samples of a segment's answer is right. Its gradient is cross-entropy's times
  N p (1 - p)^(N - 1) / (1 - (1 - p)^N), which is 1 at N = 1 and falls to 0 as p nears 1 for N > 1:
  a segment the model already gets right with high probability stops pushing its confidence up.
  With the answer tokens weighted (an arithmetic task's answer-only weights), p is the answer's
  probability, as in the paper; over a whole document p is tiny and the loss is cross-entropy's
  minus log N. Divided by the token weight like cross-entropy, it equals cross-entropy at N = 1.
  """
  batch, length = segment_ids_BL.shape
  flat_ids = (jnp.arange(batch)[:, None] * (length + 1) + segment_ids_BL).reshape(-1)
  num_segments = batch * (length + 1)
  weighted_BL = (cross_entropy_BL * weights_BL).reshape(-1)
  nll_S = jax.ops.segment_sum(weighted_BL, flat_ids, num_segments)
  present_S = jax.ops.segment_sum(weights_BL.reshape(-1), flat_ids, num_segments) > 0
  nll_S = jnp.maximum(jnp.where(present_S, nll_S, 1.0), _MIN_NLL)
  # log(1 - (1 - p)^N) = log(-expm1(N log1p(-p))), p = exp(-nll), stable for p near 1; below
  # exp(-_TAIL_NLL) it is log(N p) to relative error N p (where exp(-nll) would underflow). Each
  # branch reads an nll clipped to its range, so the other's gradient stays finite.
  exact_S = -jnp.log(-jnp.expm1(n * jnp.log1p(-jnp.exp(-jnp.minimum(nll_S, _TAIL_NLL)))))
  tail_S = jnp.maximum(nll_S, _TAIL_NLL) - jnp.log(n)
  loss_S = jnp.where(nll_S < _TAIL_NLL, exact_S, tail_S)
  return jnp.sum(jnp.where(present_S, loss_S, 0.0))


def chunked_token_cross_entropy(logits_fn, x_BLD, targets_BL, weights_BL, z_loss: float,
                                chunk: int):
  """`token_cross_entropy(logits_fn(x_BLD), ...)`, computed `chunk` positions at a time.

  Only one chunk's logits [B, chunk, V] exist at once: a scan over the chunks sums the per-chunk
  sums, and each chunk is rematerialised (jax.checkpoint), so the backward pass recomputes its
  logits from x instead of keeping all [B, L, V] of them. With a large vocabulary those are the
  largest activations of a step (MaxText's vocabulary tiling does the same). `logits_fn` maps
  [B, C, D] to float32 logits [B, C, V]; `chunk` divides L. The arithmetic is the same, but sums
  in another order: results agree with the unchunked loss to float32 rounding.
  """
  batch, length = targets_BL.shape
  if length % chunk:
    raise ValueError(f'chunk={chunk} must divide the length {length}.')

  def chunks(a):  # [B, L, ...] -> [L / chunk, B, chunk, ...]
    return a.reshape(batch, length // chunk, chunk, *a.shape[2:]).swapaxes(0, 1)

  @jax.checkpoint
  def chunk_sums(x_BCD, targets_BC, weights_BC):
    return token_cross_entropy(logits_fn(x_BCD), targets_BC, weights_BC, z_loss)

  def add(totals, inputs):
    return jax.tree.map(jnp.add, totals, chunk_sums(*inputs)), None

  inputs = (chunks(x_BLD), chunks(targets_BL), chunks(weights_BL))
  first = jax.eval_shape(chunk_sums, *(a[0] for a in inputs))
  totals, _ = jax.lax.scan(add, jax.tree.map(jnp.zeros_like, first), inputs)
  return totals


def mean_metrics(sums: dict) -> dict:
  """Turns the sums of `token_cross_entropy` (and a `distill_sum`) into per-token means and the
  token count; `loss` is the cross-entropy whatever loss is trained."""
  weight = jnp.maximum(sums['weight_sum'], 1.0)
  means = {
      'loss': sums['cross_entropy_sum'] / weight,
      'z_loss': sums['z_loss_sum'] / weight,
      'accuracy': sums['correct_sum'] / weight,
      'tokens': sums['weight_sum'],
  }
  if 'distill_sum' in sums:  # knowledge distillation (research/objectives/distillation.py)
    means['distill'] = sums['distill_sum'] / weight
  if 'distill_hidden_sum' in sums:  # its hidden-state matching
    means['distill_hidden'] = sums['distill_hidden_sum'] / weight
  if 'coverage_sum' in sums:  # objective.loss='coverage'
    means['coverage'] = sums['coverage_sum'] / weight
  return means


def token_statistics(logits_BLV, targets_BL) -> dict:
  """Each token's `log_prob` of its target and `el2n`, ||softmax(logits) - onehot(target)||_2,
  both [B, L] float32 (logits taken in float32)."""
  logits_BLV = logits_BLV.astype(jnp.float32)
  log_probs_BLV = jax.nn.log_softmax(logits_BLV, axis=-1)
  log_prob_BL = jnp.take_along_axis(log_probs_BLV, targets_BL[..., None], axis=-1)[..., 0]
  error_BLV = jnp.exp(log_probs_BLV) - jax.nn.one_hot(targets_BL, logits_BLV.shape[-1])
  return {'log_prob': log_prob_BL, 'el2n': jnp.sqrt(jnp.sum(jnp.square(error_BLV), axis=-1))}
