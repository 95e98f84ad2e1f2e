"""DELT's Learnability-Quality Score: how much a document's gradient, along a short training run,
moves the model towards a target set.

"Data Efficacy for Language Model Training" (DELT, arXiv 2506.21545) scores data by LQS before
ordering it (Folding, research/data/orderings.py); the scoring follows the optimal-control view of
data selection (PDS, "Data Selection via Optimal Control for Language Models", Gu et al. 2024):

1. From a proxy checkpoint theta_0, T steps of plain gradient descent with learning rate eta on
   batches of proxy data: theta_{t+1} = theta_t - eta * grad L_proxy(theta_t; batch_t).
2. The co-state, backwards from lambda_T = grad L_target(theta_T):
   lambda_t = lambda_{t+1} + grad L_target(theta_t) - eta * H_t lambda_{t+1},
   H_t the Hessian of the proxy loss at theta_t on batch_t (a Hessian-vector product).
3. Each document x scores c_t(x) = eta * |lambda| * cos(g_t(x), lambda) * |g_t(x)| / |g_0(x)|,
   g_t(x) the gradient of x's mean token loss at theta_t, lambda = lambda_{t+1} (the co-state of
   the state the step makes, as PDS): the cosine is the quality (the gradient agrees with the
   target's) and the norm ratio the learnability (how much x still teaches along the run). The
   product is eta * <g_t(x), lambda_{t+1}> / |g_0(x)|.
4. LQS(x) = sum_t c_t(x), z-normalised over the scored documents and clipped to [-3, 3].

DELT then distils the scores into a small classifier to score a whole corpus; here every scored
document is scored directly (research/analysis/scores.py batches a document's windows as GraNd
does). The trajectory holds T + 1 copies of the parameters: a small proxy model, as the paper's.
"""

from collections.abc import Callable, Sequence

import jax
import numpy as np

CLIP = 3.0  # z-scores are clipped to [-CLIP, CLIP]


def trajectory(loss_fn: Callable, params, batches: Sequence, lr: float) -> list:
  """[theta_0, ..., theta_T]: T steps of gradient descent on `loss_fn(params, batch)` over
  `batches` from `params`."""
  step = jax.jit(lambda p, b: jax.tree.map(lambda w, g: w - lr * g, p, jax.grad(loss_fn)(p, b)))
  states = [params]
  for batch in batches:
    states.append(step(states[-1], batch))
  return states


def costates(loss_fn: Callable, target_grad: Callable, states: Sequence, batches: Sequence,
             lr: float) -> list:
  """[lambda_0, ..., lambda_T] of the trajectory `states` made on `batches` (`trajectory`):
  lambda_T = target_grad(theta_T), then lambda_t = lambda_{t+1} + target_grad(theta_t)
  - lr * H_t lambda_{t+1}, H_t the Hessian of `loss_fn` at theta_t on batch t."""

  @jax.jit
  def back(params, batch, later):
    hessian_later = jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (later,))[1]
    return jax.tree.map(lambda l, g, h: l + g - lr * h, later, target_grad(params), hessian_later)

  lambdas = [target_grad(states[-1])]
  for params, batch in zip(reversed(states[:-1]), reversed(list(batches))):
    lambdas.append(back(params, batch, lambdas[-1]))
  return lambdas[::-1]


def scores(dots_TD: np.ndarray, norms_D: np.ndarray, lr: float) -> np.ndarray:
  """[D] float64 LQS from dots_TD[t, x] = <g_t(x), lambda_{t+1}> and norms_D[x] = |g_0(x)|:
  eta * sum_t dots / norm, z-normalised over the documents and clipped to [-CLIP, CLIP] (0 for
  all when every raw score is equal)."""
  raw_D = lr * np.sum(np.asarray(dots_TD, np.float64), axis=0) / np.maximum(
      np.asarray(norms_D, np.float64), 1e-12)
  spread = raw_D.std()
  z_D = (raw_D - raw_D.mean()) / spread if spread > 0 else np.zeros_like(raw_D)
  return np.clip(z_D, -CLIP, CLIP)
