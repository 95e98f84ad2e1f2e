"""The optimizers `train.optimizer` selects, as optax GradientTransformations.

'adamw': AdamW (Loshchilov & Hutter 2017, "Decoupled Weight Decay Regularization",
arXiv 1711.05101).
'galore': Adam on low-rank projections of the attention and MLP gradients (Zhao et al. 2024,
"GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", arXiv 2403.03507), with
AdamW's decoupled weight decay and learning rate.

Both take the learning rate from the run's schedule, after global-norm clipping if configured.
"""

import dataclasses
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

OPTIMIZERS = ('adamw', 'galore')

# The matrices GaLore projects: the attention and MLP weights, as the paper does (it trains the
# embeddings, the output layer, norms and biases with plain Adam; so does the MoE router here).
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


def make_optimizer(train_config: ml_collections.ConfigDict,
                   schedule) -> optax.GradientTransformation:
  """The optimizer of `train_config.optimizer` with the learning rate from `schedule`, after
  global-norm clipping if configured."""
  adam = dict(b1=train_config.b1, b2=train_config.b2, eps=train_config.eps,
              weight_decay=train_config.weight_decay, mask=decay_mask)
  if train_config.optimizer == 'galore':
    tx = galore(schedule, train_config.galore.rank, train_config.galore.update_proj_gap,
                train_config.galore.scale, **adam)
  else:
    tx = optax.adamw(schedule, **adam)
  if train_config.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(train_config.grad_clip), tx)
  return tx


def galore(learning_rate, rank: int, update_proj_gap: int, scale: float, b1: float, b2: float,
           eps: float, weight_decay: float, mask=None) -> optax.GradientTransformation:
  """GaLore-AdamW (Zhao et al. 2024, arXiv 2403.03507): `scale_by_galore`, then the decoupled
  weight decay (on the full weights, under `mask`) and the learning rate, as optax.adamw chains
  them after Adam."""
  return optax.chain(scale_by_galore(rank, update_proj_gap, scale, b1, b2, eps),
                     optax.add_decayed_weights(weight_decay, mask),
                     optax.scale_by_learning_rate(learning_rate))


class ScaleByGaLoreState(NamedTuple):
  count: jnp.ndarray  # updates so far; the projections are refreshed where count % gap == 0
  projection: Any  # per projected kernel its U_r (left) or V_r^T (right); None elsewhere
  adam: optax.ScaleByAdamState  # the moments, of the projected shape where projected


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

  def layouts(self, kernel: tuple, rank_entry) -> tuple[tuple, tuple]:
    """The (projection, projected gradient) layouts from the kernel's, one entry a dim: its shape
    (`rank_entry` the rank) or its logical axis names (`rank_entry` None). The projected
    gradient's is also its Adam moments'."""
    split = len(kernel) - len(self.cols)
    lead, rows, cols = kernel[:len(self.lead)], kernel[len(self.lead):split], kernel[split:]
    if self.left:
      return (*lead, *rows, rank_entry), (*lead, rank_entry, *cols)
    return (*lead, rank_entry, *cols), (*lead, *rows, rank_entry)

  def shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The (projection, projected gradient) shapes."""
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


def _plan(path, shape: tuple[int, ...], rank: int) -> _Plan | None:
  """The plan of the parameter at `path` (its name the last dict key) with `shape`, or None for
  plain Adam: a parameter not in MATRICES, or a matrix whose smaller side is at most `rank`
  (full rank: projecting it would only rotate the gradient, which Adam is not invariant to, so it
  is not projected, and the update is Adam's)."""
  name = next((k.key for k in reversed(path) if isinstance(k, jax.tree_util.DictKey)), None)
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
                    b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
  """Adam on gradients projected to rank `rank` (Zhao et al. 2024, "GaLore: Memory-Efficient LLM
  Training by Gradient Low-Rank Projection", arXiv 2403.03507, Algorithm 1).

  Each m x n matrix of a MATRICES kernel with min(m, n) > `rank`: its gradient G is projected onto
  the top-`rank` singular vectors of the smaller side, R = U_r^T G if m < n else G V_r; Adam's
  moments are those of R (rank x n or m x rank: the memory GaLore saves), and the update is the
  normalised R projected back, U_r N or N V_r^T, times `scale` (the paper's alpha). The projection
  is the SVD of the current gradient at the updates whose count is a multiple of
  `update_proj_gap` (the first included), under a lax.cond: the other steps compute no SVD. The
  moments carry over a refresh, as in the paper's code. Every other parameter gets Adam's update
  (optax.scale_by_adam, the same numbers).

  Under jit with sharded parameters the state is placed by logical axis names: given boxed
  (logically named) parameters, `init` names each projection and moment after the kernel's axes,
  None on the rank dim.
  """
  adam = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)

  def init(params):
    def zeros(which: int):
      """Zeros of the projections (`which` 0) or of the projected gradients (1) where a kernel is
      projected, boxed with logical names where the parameter is; elsewhere None (0) or the
      parameter, which Adam's moments take the shape of (1)."""
      def leaf(path, x):
        value = x.value if _is_box(x) else x
        plan = _plan(path, value.shape, rank)
        if plan is None:
          return x if which else None
        zero = jnp.zeros(plan.shapes()[which], value.dtype if which else jnp.float32)
        if not _is_box(x):
          return zero
        return x.replace(value=zero, names=plan.layouts(x.names, None)[which])
      return jax.tree_util.tree_map_with_path(leaf, params, is_leaf=_is_box)
    return ScaleByGaLoreState(count=jnp.zeros((), jnp.int32), projection=zeros(0),
                              adam=adam.init(zeros(1)))

  def update(grads, state, params=None):
    del params
    with_plans = lambda f, *trees: jax.tree_util.tree_map_with_path(
        lambda path, g, *rest: f(_plan(path, g.shape, rank), g, *rest), grads, *trees)

    def refreshed():
      return with_plans(lambda plan, g, p: None if p is None else plan.top_singular(g),
                        state.projection)
    projection = jax.lax.cond(state.count % update_proj_gap == 0, refreshed,
                              lambda: state.projection)
    low = with_plans(lambda plan, g, p: g if p is None else plan.project(g, p), projection)
    low_updates, adam_state = adam.update(low, state.adam)
    updates = with_plans(
        lambda plan, g, u, p: u if p is None
        else (scale * plan.project_back(u, p)).astype(g.dtype), low_updates, projection)
    return updates, ScaleByGaLoreState(count=optax.safe_increment(state.count),
                                       projection=projection, adam=adam_state)

  return optax.GradientTransformation(init, update)
