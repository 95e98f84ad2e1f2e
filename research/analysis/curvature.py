"""The loss landscape of a checkpoint: Hessian trace and top eigenvalue, and the gradient noise
scale (the calibration of its answers: calibration.py).

Hessian trace (flatness). Hutchinson's estimator ("A Stochastic Estimator of the Trace of the
Influence Matrix for Laplacian Smoothing Splines", Hutchinson 1989): for probes v with independent
Rademacher (+-1) entries, E[v'Hv] = tr H, so the mean of v'Hv over n probes estimates the trace,
with standard error std(v'Hv) / sqrt(n). Each Hv is a Hessian-vector product, forward-over-reverse
(jax.jvp of jax.grad, Pearlmutter 1994, "Fast Exact Multiplication by the Hessian"), at the cost
of about two gradients and without forming H. Liu et al. 2022 ("Same Pre-training Loss, Better
Downstream: Implicit Bias Matters for Language Models", arXiv 2210.14199) use the trace of the
Hessian of the pretraining loss as the flatness that predicts downstream quality at equal loss.
PyHessian (Yao et al. 2020, arXiv 1912.07145) computes both statistics this way.

Sharpness. The top eigenvalue of H by power iteration on Hessian-vector products, v <- Hv / |Hv|
from a Rademacher start: it converges to the eigenvalue of largest magnitude (the largest positive
one near a minimum) at the rate |lambda_2 / lambda_1| per iteration; the estimate is the Rayleigh
quotient v'Hv of the last iterate, with its relative change from the iterate before. Gradient
descent at learning rate eta is stable only while it is below 2 / eta (Cohen et al. 2021,
"Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability", arXiv
2103.00065).

Gradient noise scale (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training", arXiv
1812.06162). The gradient G_B of a batch of B examples has E|G_B|^2 = |G|^2 + tr(Sigma) / B, Sigma
the covariance of one example's gradient; from the squared norms at two batch sizes b < B, its
Appendix A's unbiased estimates are
    |G|^2 = (B |G_B|^2 - b |G_b|^2) / (B - b),    tr(Sigma) = (|G_b|^2 - |G_B|^2) / (1/b - 1/B),
and the simple noise scale B_simple = tr(Sigma) / |G|^2, the critical batch size's estimate: a
batch much smaller than it wastes steps, one much larger wastes examples. Each big batch here is K
small batches of b rows, and its gradient is the mean of theirs (its loss the mean of theirs), so
one gradient per small batch gives both norms. Both estimates are averaged over the big batches
before their ratio is taken, as the paper does. The critical batch size grows as the loss falls
(Su et al. 2024, "Unraveling the Mystery of Scaling Laws: Part I", arXiv 2403.06563, fit it as a
function of the loss). The examples here are rows of data.seq_len tokens.

The checkpoint functions read rows of a task's documents cut into windows (research/analysis/
scores.py) and compute the causal-LM loss of research/finished.py `batch_loss` on the checkpoint's
mesh, with its logical sharding rules active.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from research import finished, sharding
from research.analysis import scores
from research.data import store as store_lib

_ROWS_STREAM = 0x637276  # seeded-stream tag of the documents the rows are cut from


# --- Hessian-vector products, Hutchinson's trace and power iteration ------------------------------


def hvp(loss_fn: Callable, params, vector):
  """H v, H the Hessian of the scalar `loss_fn` at `params`, `vector` a tree like them:
  forward-over-reverse, the jax.jvp of jax.grad (traceable)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (vector,))[1]


def hvp_step(loss_fn: Callable, params, vector) -> tuple:
  """(v'Hv, Hv / |Hv|) of one product Hv (`hvp`): Hutchinson's sample for a Rademacher v, and for
  a unit v power iteration's Rayleigh quotient and next vector (a tree like `params`). Traceable;
  v'Hv in float32."""
  product = hvp(loss_fn, params, vector)
  dot = lambda a, b: optax.tree.vdot(a, b).astype(jnp.float32)
  scale = 1 / jnp.sqrt(jnp.maximum(dot(product, product), jnp.finfo(jnp.float32).tiny))
  return dot(vector, product), jax.tree.map(lambda hv: (hv * scale).astype(hv.dtype), product)


def rademacher(key, tree):
  """A tree like `tree` (its leaves' shapes and dtypes) of independent +-1 entries (traceable)."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = jax.random.split(key, len(leaves))
  return treedef.unflatten([jax.random.rademacher(k, x.shape, x.dtype)
                            for k, x in zip(keys, leaves)])


def _probes(params):
  """A jitted (key, params) -> `rademacher` tree like `params`, sharded as they are."""
  return jax.jit(rademacher, out_shardings=jax.tree.map(lambda x: x.sharding, params))


def hutchinson_trace(step_fn: Callable, params, key, num_probes: int) -> dict[str, float]:
  """{'trace', 'trace_stderr'}: the mean of v'Hv over `num_probes` (at least 2) Rademacher probes
  v like `params`, drawn from `key` (Hutchinson 1989), and its standard error. `step_fn` maps a
  tree like `params` to its `hvp_step` (jitted), called once a probe, each waited for (one probe
  and its product in memory at a time)."""
  probe = _probes(params)
  samples = np.array([float(step_fn(probe(jax.random.fold_in(key, i), params))[0])
                      for i in range(num_probes)])
  return {'trace': float(np.mean(samples)),
          'trace_stderr': float(np.std(samples, ddof=1) / np.sqrt(num_probes))}


def top_eigenvalue(step_fn: Callable, params, key, num_iterations: int) -> dict[str, float]:
  """{'eigenvalue', 'eigenvalue_change'}: power iteration v <- Hv / |Hv| from a Rademacher start
  like `params` drawn from `key`, `num_iterations` (at least 2) products of `step_fn` (as
  `hutchinson_trace`'s): the Rayleigh quotient v'Hv / v'v of the last iterate (the eigenvalue of
  largest magnitude) and its relative change from the iterate before (PyHessian's convergence
  test: near 0 once converged)."""
  vector, quotients = _probes(params)(jax.random.fold_in(key, 0), params), []
  for _ in range(num_iterations):
    quotient, vector = step_fn(vector)
    quotients.append(quotient)
  quotients = np.array(jax.device_get(quotients), np.float64)
  quotients[0] /= sum(x.size for x in jax.tree.leaves(params))  # v'v of the +-1 start
  return {'eigenvalue': float(quotients[-1]),
          'eigenvalue_change': float(abs(quotients[-1] - quotients[-2]) / abs(quotients[-1]))}


# --- gradient noise scale -------------------------------------------------------------------------


def gradient_sums(loss_fn: Callable, params, batch, total) -> tuple:
  """(loss, |g|^2, total + g, |total + g|^2) of g the gradient of `loss_fn(params, batch)`, `total`
  a float32 tree like `params`: a step of `gradient_square_norms` (traceable)."""
  loss, gradient = jax.value_and_grad(loss_fn)(params, batch)
  total = jax.tree.map(lambda t, g: t + g.astype(jnp.float32), total, gradient)
  square_norm = lambda tree: optax.tree.norm(tree, squared=True).astype(jnp.float32)
  return loss, square_norm(gradient), total, square_norm(total)


def gradient_square_norms(step_fn: Callable, batches: Sequence, zeros
                          ) -> tuple[np.ndarray, np.ndarray, float]:
  """(loss [K], |g_k|^2 [K], |G|^2) of the K small `batches` that make up one big batch: g_k the
  gradient of batch k's loss and G = mean_k g_k, the gradient of the big batch's loss (the mean of
  theirs). `step_fn(batch, total)` is a jitted `gradient_sums` at fixed parameters and `zeros` its
  first total: one gradient at a time besides their sum."""
  total, losses_K, small_K = zeros, [], []
  for batch in batches:
    loss, square_norm, total, total_square_norm = step_fn(batch, total)
    losses_K.append(loss)
    small_K.append(square_norm)
  losses_K, small_K = (np.array(jax.device_get(x), np.float64) for x in (losses_K, small_K))
  return losses_K, small_K, float(total_square_norm) / len(batches) ** 2


def _stderr(values_N: np.ndarray) -> float | None:
  """The standard error of the mean of `values_N`; None for fewer than two values."""
  return float(np.std(values_N, ddof=1) / np.sqrt(len(values_N))) if len(values_N) > 1 else None


def noise_scale(small_NK, big_N, small: int, big: int) -> dict:
  """McCandlish et al.'s simple noise scale from N big batches of `big` examples, each K = big /
  small batches of `small`: `small_NK` the squared gradient norms of the small batches, `big_N`
  those of the big ones. Each big batch gives the unbiased estimates of Appendix A,
  |G|^2 = (big |G_big|^2 - small |G_small|^2) / (big - small) and
  tr(Sigma) = (|G_small|^2 - |G_big|^2) / (1/small - 1/big), |G_small|^2 the mean over its small
  batches; returns their means `gradient_sq_norm` and `trace_sigma` (float64), the standard errors
  of those over the big batches (None for one) and `b_simple` = trace_sigma / gradient_sq_norm.
  With few batches |G|^2 can come out at or below 0 (the noise swamps the gradient): B_simple is
  then None, and more or bigger batches are needed."""
  small_N = np.mean(np.asarray(small_NK, np.float64), axis=1)
  big_N = np.asarray(big_N, np.float64)
  gradient_N = (big * big_N - small * small_N) / (big - small)
  trace_N = (small_N - big_N) / (1 / small - 1 / big)
  gradient, trace = float(np.mean(gradient_N)), float(np.mean(trace_N))
  return {'gradient_sq_norm': gradient, 'gradient_sq_norm_stderr': _stderr(gradient_N),
          'trace_sigma': trace, 'trace_sigma_stderr': _stderr(trace_N),
          'b_simple': trace / gradient if gradient > 0 else None}


# --- a checkpoint ---------------------------------------------------------------------------------


def window_rows(loaded: finished.LoadedCheckpoint, store: store_lib.DocumentStore, num_rows: int,
                seed: int) -> dict[str, np.ndarray]:
  """`num_rows` rows of data.seq_len tokens: the windows of `store`'s documents in a permutation
  of seed `seed`, packed as the scores pack them (cycled when the documents fill fewer)."""
  order_D = np.random.default_rng([_ROWS_STREAM, seed]).permutation(store.num_documents)
  return scores.window_rows(store.tokens, store.offsets, order_D, loaded, num_rows)


def hessian_statistics(loaded: finished.LoadedCheckpoint, rows: dict[str, np.ndarray], seed: int,
                       num_probes: int, num_iterations: int) -> dict[str, float]:
  """Hutchinson's `trace` and `trace_stderr` (`num_probes`) and the power iteration's `eigenvalue`
  and `eigenvalue_change` (`num_iterations`) of the Hessian of the checkpoint's mean token loss on
  `rows` (a multiple of the data-parallel size), probes drawn from `seed`: one jitted `hvp_step`,
  its vectors sharded as the parameters."""
  placed = loaded.placed
  step = jax.jit(
      lambda params, batch, vector: hvp_step(lambda p: loaded.batch_loss(p, batch), params, vector),
      out_shardings=(sharding.replicated(placed.mesh), placed.param_shardings))
  # XLA's RngBitGenerator draws the probes (compiled in half threefry's time on CPU); the same seed
  # need not give the same probes on another mesh.
  trace_key, power_key = jax.random.split(jax.random.key(seed, impl='rbg'))
  with sharding.activate(placed.mesh, placed.rules):
    step_fn = functools.partial(step, loaded.params, placed.place(rows))
    return {**hutchinson_trace(step_fn, loaded.params, trace_key, num_probes),
            **top_eigenvalue(step_fn, loaded.params, power_key, num_iterations)}


def noise_scale_statistics(loaded: finished.LoadedCheckpoint, rows: dict[str, np.ndarray],
                           small: int, big: int) -> dict[str, float | None]:
  """`noise_scale` of the checkpoint's mean token loss from `rows` cut into big batches of `big`
  rows (a multiple of `small`, itself a multiple of the data-parallel size), each big / small
  small batches of `small` (`gradient_square_norms`); also their mean `loss` and `b_simple_tokens`,
  B_simple in tokens."""
  placed = loaded.placed
  replicated = sharding.replicated(placed.mesh)
  step = jax.jit(functools.partial(gradient_sums, loaded.batch_loss), donate_argnums=2,
                 out_shardings=(replicated, replicated, placed.param_shardings, replicated))
  zeros = jax.jit(lambda params: jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params),
                  out_shardings=placed.param_shardings)
  losses, small_NK, big_N = [], [], []
  with sharding.activate(placed.mesh, placed.rules):
    for start in range(0, len(rows['targets']) - big + 1, big):
      batches = [placed.place({k: v[i:i + small] for k, v in rows.items()})
                 for i in range(start, start + big, small)]
      loss_K, small_K, big_square_norm = gradient_square_norms(
          functools.partial(step, loaded.params), batches, zeros(loaded.params))
      losses.append(loss_K)
      small_NK.append(small_K)
      big_N.append(big_square_norm)
  result = noise_scale(np.stack(small_NK), np.array(big_N), small, big)
  b_simple = result['b_simple']
  return {'loss': float(np.mean(losses)), **result,
          'b_simple_tokens': None if b_simple is None else b_simple * loaded.seq_len}
