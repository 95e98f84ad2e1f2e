"""The optimizers `train.optimizer` selects, as optax GradientTransformations.

'adamw': AdamW (Loshchilov & Hutter 2017, "Decoupled Weight Decay Regularization",
arXiv 1711.05101).
'galore': Adam on low-rank projections of the attention and MLP gradients (Zhao et al. 2024,
"GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", arXiv 2403.03507), with
AdamW's decoupled weight decay and learning rate.
'fira': GaLore plus the gradient's residual outside the projection, scaled to the size of Adam's
low-rank update (Chen et al. 2024, "Fira: Can We Achieve Full-rank Training of LLMs Under
Low-rank Constraint?", arXiv 2410.01623).
GaLore and Fira can reset their low-rank moments at each refresh of the projection (Glentis et
al. 2025, "Scalable Parameter and Memory Efficient Pretraining for LLM: Recent Algorithmic Advances
and Benchmarking", arXiv 2505.22922).

All take the learning rate from the run's schedule, after global-norm clipping if configured.
Under muP (model.mup_base_width > 0; Yang et al. 2022, "Tensor Programs V: Tuning Large Neural
Networks via Zero-Shot Hyperparameter Transfer", arXiv 2203.03466) AdamW moves the hidden
matrices at the learning rate over the width multiplier (`mup_adamw`).
"""

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from research import errors

OPTIMIZERS = ('adamw', 'galore', 'fira')

# The matrices GaLore projects: the attention and MLP weights, as the paper does (it trains the
# embeddings, the output layer, norms and biases with plain Adam; so does the MoE router here).
# They are also muP's hidden ("matrix-like") weights (`mup_lr_multipliers`).
# Parameter name -> (input dims, output dims): the kernel's trailing dims, flattened into the
# matrix's rows and columns; dims before them (a scanned stack's `layers` axis, the MoE `expert`
# axis) index separate matrices, each with its own projection.
MATRICES = {'query': (1, 2), 'key': (1, 2), 'value': (1, 2), 'out': (2, 1),
            'gate': (1, 1), 'up': (1, 1), 'down': (1, 1)}


def decay_mask(params):
  """Weight decay on matrices only, not on norm scales and biases (Loshchilov & Hutter 2017,
  arXiv 1711.05101)."""
  def decayed(path, _):
    names = [str(getattr(k, 'key', '')) for k in path]
    return not any(name == 'scale' or name == 'bias' or name.endswith('_bias') for name in names)
  return jax.tree_util.tree_map_with_path(decayed, params)


def _param_name(path) -> str | None:
  """The name of the parameter at `path`: its last dict key."""
  return next((k.key for k in reversed(path) if isinstance(k, jax.tree_util.DictKey)), None)


def mup_lr_multipliers(params, width_multiplier: float):
  """muP's learning-rate multiplier of each parameter for Adam (Yang et al. 2022, "Tensor Programs
  V", arXiv 2203.03466, Table 3): 1 / `width_multiplier` for the hidden matrices (MATRICES: the
  attention and MLP projections, the MoE experts), 1 for the vector-like rest (embeddings, the
  output layer, norms, biases, the MoE router). A pytree of floats shaped like `params`."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: 1 / width_multiplier if _param_name(path) in MATRICES else 1.0, params)


def scale_by_mup(width_multiplier: float) -> optax.GradientTransformation:
  """Multiplies each parameter's update by its `mup_lr_multipliers`."""
  def scale(updates, params=None):
    del params
    return jax.tree.map(lambda u, k: u * k, updates, mup_lr_multipliers(updates, width_multiplier))
  return optax.stateless(scale)


def mup_adamw(learning_rate, width_multiplier: float, b1: float, b2: float, eps: float,
              weight_decay: float, mask=None) -> optax.GradientTransformation:
  """AdamW under muP (Yang et al. 2022, arXiv 2203.03466, Table 3; the mup library's MuAdamW):
  optax.adamw's chain with `scale_by_mup` before the learning rate, so the hidden matrices move
  at the learning rate / `width_multiplier`, and so does their decoupled weight decay, which
  AdamW multiplies by the learning rate (as MuAdamW's per-group learning rate does). At
  `width_multiplier` 1 the updates are AdamW's, exactly."""
  return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps),
                     optax.add_decayed_weights(weight_decay, mask),
                     scale_by_mup(width_multiplier),
                     optax.scale_by_learning_rate(learning_rate))


def make_optimizer(train_config: ml_collections.ConfigDict, schedule,
                   mup_multiplier: float | None = None) -> optax.GradientTransformation:
  """The optimizer of `train_config.optimizer` with the learning rate from `schedule`, after
  global-norm clipping if configured; under muP, given the model's width multiplier
  `mup_multiplier` (transformer.ModelConfig.mup_multiplier), AdamW as `mup_adamw`."""
  adam = dict(b1=train_config.b1, b2=train_config.b2, eps=train_config.eps,
              weight_decay=train_config.weight_decay, mask=decay_mask)
  if train_config.optimizer in ('galore', 'fira'):
    if mup_multiplier is not None:
      raise errors.UserError(
          f'train.optimizer={train_config.optimizer!r} does not compose with muP '
          "(model.mup_base_width > 0): its learning-rate rule is for Adam's entrywise-normalised "
          "updates, not low-rank projected ones; set train.optimizer='adamw' or "
          'model.mup_base_width=0.')
    low_rank = train_config.galore
    limiter = train_config.fira.limiter if train_config.optimizer == 'fira' else None
    tx = galore(schedule, low_rank.rank, low_rank.update_proj_gap, low_rank.scale, **adam,
                momentum_reset=low_rank.momentum_reset, fira_limiter=limiter)
  elif mup_multiplier is not None:
    tx = mup_adamw(schedule, mup_multiplier, **adam)
  else:
    tx = optax.adamw(schedule, **adam)
  if train_config.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(train_config.grad_clip), tx)
  return tx


def galore(learning_rate, rank: int, update_proj_gap: int, scale: float, b1: float, b2: float,
           eps: float, weight_decay: float, mask=None, momentum_reset: bool = False,
           fira_limiter: float | None = None) -> optax.GradientTransformation:
  """GaLore-AdamW (Zhao et al. 2024, arXiv 2403.03507), or Fira-AdamW given `fira_limiter`
  (Chen et al. 2024, arXiv 2410.01623): `scale_by_galore`, then the decoupled weight decay (on the
  full weights, under `mask`) and the learning rate, as optax.adamw chains them after Adam."""
  return optax.chain(scale_by_galore(rank, update_proj_gap, scale, b1, b2, eps, momentum_reset,
                                     fira_limiter),
                     optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))


class ScaleByGaLoreState(NamedTuple):
  count: jnp.ndarray  # updates so far; the projections are refreshed where count % gap == 0
  projection: Any  # per projected kernel its U_r (left) or V_r^T (right); None elsewhere
  # The moments, of the projected shape where projected; its count is the projected moments' Adam
  # steps (since their last reset under momentum reset; the other moments' are `count`).
  adam: optax.ScaleByAdamState
  # Fira: per projected kernel the norm of each matrix's last residual term (the lead dims' shape);
  # None elsewhere and under GaLore.
  residual_norm: Any


@dataclasses.dataclass(frozen=True)
class _Plan:
  """How a kernel is projected: `lead` dims index matrices of `rows` x `cols` dims; the smaller
  side (the rows where there are fewer, else the columns) is projected to `rank`."""
  lead: tuple[int, ...]
  rows: tuple[int, ...]
  cols: tuple[int, ...]
  rank: int

  @property
  def left(self) -> bool:
    """Whether the rows are projected (by the top left singular vectors), as the paper does
    where m < n; else the columns (by the top right singular vectors)."""
    return math.prod(self.rows) < math.prod(self.cols)

  def matrices(self, x):
    """x [*lead, *rows, *cols] -> [B, m, n]."""
    return x.reshape(math.prod(self.lead), math.prod(self.rows), math.prod(self.cols))

  def layouts(self, kernel: tuple, rank_entry) -> tuple[tuple, tuple, tuple]:
    """The (projection, projected gradient, one scalar a matrix) layouts from the kernel's, one
    entry a dim: its shape (`rank_entry` the rank) or its logical axis names (`rank_entry` None).
    The projected gradient's is also its Adam moments'."""
    split = len(kernel) - len(self.cols)
    lead, rows, cols = kernel[:len(self.lead)], kernel[len(self.lead):split], kernel[split:]
    if self.left:
      return (*lead, *rows, rank_entry), (*lead, rank_entry, *cols), lead
    return (*lead, rank_entry, *cols), (*lead, *rows, rank_entry), lead

  def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """The (projection, projected gradient, one scalar a matrix) shapes."""
    return self.layouts((*self.lead, *self.rows, *self.cols), self.rank)

  def top_singular(self, g):
    """The projection of gradient `g`: its top-`rank` left (U_r) or right (V_r^T) singular
    vectors, per matrix."""
    u_BMK, _, vt_BKN = jnp.linalg.svd(self.matrices(g.astype(jnp.float32)), full_matrices=False)
    top = u_BMK[..., :self.rank] if self.left else vt_BKN[..., :self.rank, :]
    return top.reshape(self.shapes()[0])

  def _projection_matrices(self, projection):
    """The projection as [B, m, rank] (left) or [B, rank, n] (right)."""
    batch = math.prod(self.lead)
    return projection.reshape((batch, -1, self.rank) if self.left else (batch, self.rank, -1))

  def project(self, g, projection):
    """U_r^T G (left) or G V_r (right), per matrix, in the projected shape."""
    g_BMN, p = self.matrices(g), self._projection_matrices(projection)
    p_T = p.swapaxes(-1, -2)
    low = jnp.matmul(p_T, g_BMN) if self.left else jnp.matmul(g_BMN, p_T)
    return low.reshape(self.shapes()[1]).astype(g.dtype)

  def project_back(self, low, projection):
    """U_r N (left) or N V_r^T (right) of the projected update N, in the kernel's shape."""
    p = self._projection_matrices(projection)
    full = (jnp.matmul(p, low.reshape(p.shape[0], self.rank, -1)) if self.left
            else jnp.matmul(low.reshape(p.shape[0], -1, self.rank), p))
    return full.reshape(*self.lead, *self.rows, *self.cols)

  def norms(self, x):
    """The Frobenius norm of each matrix of `x` (the kernel's or the projected layout), in the
    lead dims' shape."""
    return jnp.linalg.norm(x.reshape(*self.lead, -1).astype(jnp.float32), axis=-1)

  def fira_residual(self, g, low_g, low_update, projection, last_norm, limiter: float):
    """Fira's residual term (Chen et al. 2024, arXiv 2410.01623) for gradient `g`, its
    projection `low_g` (U_r^T G or G V_r) and Adam's update of it N, and its norm, per matrix:
    phi S with S = G - U_r U_r^T G (or G - G V_r V_r^T), the part of G outside the projection's
    span, and phi = ||N|| / ||U_r^T G|| (the paper's norm-based scaling; 0 where U_r^T G is 0).
    The norm-growth
    limiter: where ||phi S|| exceeds `limiter` times `last_norm` (the last step's, > 0), the term
    is scaled down to that."""
    residual = g.astype(jnp.float32) - self.project_back(low_g, projection)
    low_norm, residual_norm = self.norms(low_g), self.norms(residual)
    phi = jnp.where(low_norm > 0, self.norms(low_update) / low_norm, 0)
    norm = phi * residual_norm
    capped = (last_norm > 0) & (norm > limiter * last_norm)
    new_norm = jnp.where(capped, limiter * last_norm, norm)
    coefficient = jnp.where(capped, new_norm / residual_norm, phi)
    per_matrix = coefficient.reshape(*self.lead, *(1,) * (residual.ndim - len(self.lead)))
    return residual * per_matrix, new_norm


def _plan(path, shape: tuple[int, ...], rank: int) -> _Plan | None:
  """The plan of the parameter at `path` (its name the last dict key) with `shape`, or None for
  plain Adam: a parameter not in MATRICES, or a matrix whose smaller side is at most `rank`
  (full rank: projecting it would only rotate the gradient, which Adam is not invariant to, so it
  is not projected, and the update is Adam's)."""
  name = _param_name(path)
  if name not in MATRICES or len(shape) < sum(MATRICES[name]):
    return None
  ins, outs = MATRICES[name]
  lead = len(shape) - ins - outs
  plan = _Plan(tuple(shape[:lead]), tuple(shape[lead:lead + ins]), tuple(shape[lead + ins:]),
               rank)
  if min(math.prod(plan.rows), math.prod(plan.cols)) <= rank:
    return None
  return plan


def _is_box(x) -> bool:
  return isinstance(x, nn.Partitioned)


def scale_by_galore(rank: int, update_proj_gap: int, scale: float, b1: float = 0.9,
                    b2: float = 0.999, eps: float = 1e-8, momentum_reset: bool = False,
                    fira_limiter: float | None = None) -> optax.GradientTransformation:
  """Adam on gradients projected to rank `rank` (Zhao et al. 2024, "GaLore: Memory-Efficient LLM
  Training by Gradient Low-Rank Projection", arXiv 2403.03507, Algorithm 1).

  Each m x n matrix of a MATRICES kernel with min(m, n) > `rank`: its gradient G is projected onto
  the top-`rank` singular vectors of the smaller side, R = U_r^T G if m < n else G V_r; Adam's
  moments are those of R (rank x n or m x rank: the memory GaLore saves), and the update is the
  normalised R projected back, U_r N or N V_r^T, times `scale` (the paper's alpha). The projection
  is the SVD of the current gradient at the updates whose count is a multiple of
  `update_proj_gap` (the first included), under a lax.cond: the other steps compute no SVD. The
  moments carry over a refresh, as in the paper's code, unless `momentum_reset`: then the
  projected moments and their bias-correction count restart from zero at each refresh, the old
  moments living in the old subspace (Glentis et al. 2025, "Scalable Parameter and Memory
  Efficient Pretraining for LLM: Recent Algorithmic Advances and Benchmarking", arXiv
  2505.22922), so that the step after a refresh is a fresh Adam step. Every other parameter gets
  Adam's update (optax.scale_by_adam, the same numbers).

  `fira_limiter` set (gamma): Fira (`scale_by_fira`), the update plus `_Plan.fira_residual`.

  Under jit with sharded parameters the state is placed by logical axis names: given boxed
  (logically named) parameters, `init` names each projection and moment after the kernel's axes,
  None on the rank dim.
  """
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

  def init(params):
    def zeros(which: int):
      """Zeros of the projections (`which` 0), of the projected gradients (1) or of Fira's
      residual norms (2, under Fira) where a kernel is projected, boxed with logical names where
      the parameter is; elsewhere None, or for 1 the parameter, which Adam's moments take the
      shape of."""
      def leaf(path, x):
        value = x.value if _is_box(x) else x
        plan = _plan(path, value.shape, rank)
        if plan is None or which == 2 and fira_limiter is None:
          return x if which == 1 else None
        zero = jnp.zeros(plan.shapes()[which], value.dtype if which == 1 else jnp.float32)
        if not _is_box(x):
          return zero
        return x.replace(value=zero, names=plan.layouts(x.names, None)[which])
      return jax.tree_util.tree_map_with_path(leaf, params, is_leaf=_is_box)
    return ScaleByGaLoreState(count=jnp.zeros((), jnp.int32), projection=zeros(0),
                              adam=adam.init(zeros(1)), residual_norm=zeros(2))

  def update(grads, state, params=None):
    del params
    with_plans = lambda f, *trees: jax.tree_util.tree_map_with_path(
        lambda path, g, *rest: f(_plan(path, g.shape, rank), g, *rest), grads, *trees)

    def refreshed():
      return with_plans(lambda plan, g, p: None if p is None else plan.top_singular(g),
                        state.projection)
    refresh = state.count % update_proj_gap == 0
    projection = jax.lax.cond(refresh, refreshed, lambda: state.projection)
    low = with_plans(lambda plan, g, p: g if p is None else plan.project(g, p), projection)
    moments = state.adam
    if momentum_reset:
      reset = lambda tree: jax.tree.map(
          lambda x, p: x if p is None else jnp.where(refresh, jnp.zeros_like(x), x), tree,
          projection)
      moments = optax.ScaleByAdamState(count=jnp.where(refresh, 0, moments.count),
                                       mu=reset(moments.mu), nu=reset(moments.nu))

    # Adam in two parts: the projected moments' bias correction counts from their last reset
    # (adam.count), the others' from the first update (count): their moments are never reset.
    def adam_on(projected: bool, count):
      """Adam's (updates, state) on the projected leaves (or the others; None elsewhere), its
      bias correction at `count`."""
      pick = lambda tree: jax.tree.map(
          lambda x, p: x if (p is not None) == projected else None, tree, projection)
      return adam.update(pick(low), optax.ScaleByAdamState(count, pick(moments.mu),
                                                           pick(moments.nu)))
    (low_updates, low_adam), (other_updates, other_adam) = (
        adam_on(True, moments.count), adam_on(False, state.count))
    merge = lambda a, b: jax.tree.map(lambda x, y: y if x is None else x, a, b,
                                      is_leaf=lambda x: x is None)

    def leaf(plan, g, low_g, u, p, last_norm):
      """(the update, Fira's residual norm) of one leaf."""
      if p is None:
        return u, None
      update = scale * plan.project_back(u, p)
      if fira_limiter is None:
        return update.astype(g.dtype), None
      residual, norm = plan.fira_residual(g, low_g, u, p, last_norm, fira_limiter)
      return (update + residual).astype(g.dtype), norm
    pairs = with_plans(leaf, low, merge(low_updates, other_updates), projection,
                       state.residual_norm)
    is_pair = lambda x: isinstance(x, tuple)
    updates, residual_norm = (jax.tree.map(lambda pair: pair[i], pairs, is_leaf=is_pair)
                              for i in (0, 1))
    adam_state = optax.ScaleByAdamState(count=low_adam.count, mu=merge(low_adam.mu, other_adam.mu),
                                        nu=merge(low_adam.nu, other_adam.nu))
    return updates, ScaleByGaLoreState(count=optax.safe_increment(state.count),
                                       projection=projection, adam=adam_state,
                                       residual_norm=residual_norm)

  return optax.GradientTransformation(init, update)


def scale_by_fira(rank: int, update_proj_gap: int, scale: float, limiter: float = 1.01,
                  b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                  momentum_reset: bool = False) -> optax.GradientTransformation:
  """Fira (Chen et al. 2024, "Fira: Can We Achieve Full-rank Training of LLMs Under Low-rank
  Constraint?", arXiv 2410.01623): GaLore's update (`scale_by_galore`, its low-rank moments)
  plus, per projected matrix, the gradient's residual outside the projection, S = G - P P^T G,
  times phi = ||N|| / ||P^T G|| (N Adam's update of the projected gradient P^T G: the paper's
  norm-based scaling, which gives S the size Adam would), its norm held to at most `limiter`
  (gamma) times the last step's (the norm-growth limiter; one scalar of state per matrix). As in
  the authors' code, `scale` multiplies the low-rank part only; unlike it, phi is one scalar a
  matrix (the code takes one a row or column) and S the exact residual (the code subtracts
  `scale` P P^T G)."""
  return scale_by_galore(rank, update_proj_gap, scale, b1, b2, eps, momentum_reset, limiter)
