"""Loss functions on device: token cross-entropy with per-token weights and the output z-loss.

Losses are returned as weighted *sums* with the total weight beside them, so that gradient
accumulation and data-parallel shards combine exactly: the mean is taken once, over the whole batch.
"""

import jax
import jax.numpy as jnp


def token_cross_entropy(logits_BLV, targets_BL, weights_BL, z_loss: float = 0.0):
  """Weighted sums of cross-entropy, z-loss and correct predictions, and the total weight.

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
  return {
      'loss_sum': cross_entropy_sum + z_loss_sum,
      'cross_entropy_sum': cross_entropy_sum,
      'z_loss_sum': z_loss_sum,
      'correct_sum': jnp.sum(correct_BL * weights_BL),
      'weight_sum': jnp.sum(weights_BL),
  }


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
  token count."""
  weight = jnp.maximum(sums['weight_sum'], 1.0)
  means = {
      'loss': sums['cross_entropy_sum'] / weight,
      'z_loss': sums['z_loss_sum'] / weight,
      'accuracy': sums['correct_sum'] / weight,
      'tokens': sums['weight_sum'],
  }
  if 'distill_sum' in sums:  # knowledge distillation (research/objectives/distillation.py)
    means['distill'] = sums['distill_sum'] / weight
  return means


def token_statistics(logits_BLV, targets_BL) -> dict:
  """Each token's `log_prob` of its target and `el2n`, ||softmax(logits) - onehot(target)||_2,
  both [B, L] float32 (logits taken in float32)."""
  logits_BLV = logits_BLV.astype(jnp.float32)
  log_probs_BLV = jax.nn.log_softmax(logits_BLV, axis=-1)
  log_prob_BL = jnp.take_along_axis(log_probs_BLV, targets_BL[..., None], axis=-1)[..., 0]
  error_BLV = jnp.exp(log_probs_BLV) - jax.nn.one_hot(targets_BL, logits_BLV.shape[-1])
  return {'log_prob': log_prob_BL, 'el2n': jnp.sqrt(jnp.sum(jnp.square(error_BLV), axis=-1))}
