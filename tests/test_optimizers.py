"""The optimizers of train.optimizer (research/optimizers.py): GaLore (Zhao et al. 2024, arXiv
2403.03507) is Adam on low-rank projections of the attention and MLP gradients, AdamW's numbers
where nothing is projected; Fira (Chen et al. 2024, arXiv 2410.01623) adds the gradient's scaled,
norm-limited residual outside the projection; momentum reset (Glentis et al. 2025, arXiv
2505.22922) restarts the low-rank moments at each refresh."""

import functools

import jax
import numpy as np
import optax
import pytest

from experiments import base
from launch import bench
from research import config as config_lib
from research import errors, optimizers, train
from tests.test_train import tiny_config

# A scanned stack of 2 layers as research/model/transformer.py lays it out: a leading layer axis;
# attention kernels [D, H, K] and [H, K, D], MLP kernels [D, F] and [F, D].
SHAPES = {'embedding': (16, 8),
          'layers': {'attention': {'query': (2, 8, 2, 3), 'out': (2, 2, 3, 8)},
                     'mlp': {'gate': (2, 5, 12), 'down': (2, 12, 5)},
                     'mlp_norm': {'scale': (2, 8)}}}


def _tree(rng):
  shapes, treedef = jax.tree.flatten(SHAPES, is_leaf=lambda x: isinstance(x, tuple))
  return treedef.unflatten([rng.normal(size=shape).astype(np.float32) for shape in shapes])


PARAMS = _tree(np.random.default_rng(0))
GRADIENTS = [_tree(np.random.default_rng(1 + step)) for step in range(7)]


def _run(tx, steps):
  """The (updates, state) of `tx` after each of the first `steps` GRADIENTS, under jit."""
  update = jax.jit(tx.update)
  state, results = tx.init(PARAMS), []
  for grads in GRADIENTS[:steps]:
    updates, state = update(grads, state, PARAMS)
    results.append((updates, state))
  return results


# Rank 3, a refresh every 3 steps, over 7 steps: run once, read by two tests.
GALORE = optimizers.scale_by_galore(rank=3, update_proj_gap=3, scale=0.25)
galore_steps = functools.cache(lambda: _run(GALORE, 7))


def _train_config(**changes):
  config = base.get_config().train
  config.update(changes)
  return config


@pytest.mark.parametrize('optimizer, momentum_reset', [('galore', False), ('fira', True)])
def test_galore_and_fira_at_full_rank_are_adamw_step_for_step(optimizer, momentum_reset):
  """Every matrix's smaller side is <= the rank: none is projected, and the updates (after clipping,
  with decoupled weight decay) are AdamW's, Fira's and a momentum reset's included. The default
  optimizer's state is AdamW's, as before. A square projection (rank = the smaller side, which
  GaLore leaves to Adam) leaves Fira no residual."""
  schedule = lambda step: 1e-2
  galore = optimizers.make_optimizer(
      _train_config(optimizer=optimizer, galore={'rank': 8, 'momentum_reset': momentum_reset}),
      schedule)
  adamw = optimizers.make_optimizer(_train_config(), schedule)
  for (got, _), (want, _) in zip(_run(galore, 5), _run(adamw, 5)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), got, want)
  reference = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, mask=optimizers.decay_mask))
  assert jax.tree.structure(adamw.init(PARAMS)) == jax.tree.structure(reference.init(PARAMS))
  plan = optimizers._Plan(lead=(2,), rows=(5,), cols=(12,), rank=5)
  g = GRADIENTS[0]['layers']['mlp']['gate']
  projection = plan.top_singular(g)
  low_g = plan.project(g, projection)
  residual, norm = plan.fira_residual(g, low_g, low_g, projection, np.zeros(2), 1.01)
  assert np.abs(residual).max() < 1e-5 * np.abs(g).max() and np.all(norm < 1e-5)


def _matrices(x, rows):
  """A kernel [L, *rows dims, *cols dims] as its L matrices [L, m, n], m = `rows` flattened."""
  return np.asarray(x).reshape(x.shape[0], rows, -1)


def _outside(update_LMN, grad_LMN, rank, left):
  """The share of `update_LMN`'s norm outside the span of the top-`rank` left (or right)
  singular vectors of `grad_LMN`, per matrix."""
  u, _, vt = np.linalg.svd(grad_LMN, full_matrices=False)
  if left:
    basis = u[..., :rank]
    inside = basis @ (basis.swapaxes(-1, -2) @ update_LMN)
  else:
    basis = vt[..., :rank, :]
    inside = (update_LMN @ basis.swapaxes(-1, -2)) @ basis
  return np.linalg.norm(update_LMN - inside, axis=(1, 2)) / np.linalg.norm(update_LMN, axis=(1, 2))


def test_low_rank_moments_and_updates_in_the_span_of_the_last_refresh():
  """Rank 3: Adam's moments have 3 in place of the projected side (the rows of [5, 12] gate and
  [6, 8] out, the columns of [8, 6] query and [12, 5] down); each update lies in the span of the
  top-3 singular vectors of the gradient of the last refresh, and not in that of the step's own
  gradient between refreshes. Parameters GaLore does not project get Adam's update."""
  steps = galore_steps()
  adam = steps[-1][1].adam
  kernels = {'gate': ('mlp', 5, True, (2, 3, 12)), 'down': ('mlp', 12, False, (2, 12, 3)),
             'out': ('attention', 6, True, (2, 3, 8)), 'query': ('attention', 8, False, (2, 8, 3))}
  for name, (group, _, _, shape) in kernels.items():
    assert adam.mu['layers'][group][name].shape == adam.nu['layers'][group][name].shape == shape
  assert adam.mu['embedding'].shape == (16, 8)
  assert adam.mu['layers']['mlp_norm']['scale'].shape == (2, 8)
  for step, (updates, _) in enumerate(steps):
    refresh = step - step % 3
    for name, (group, rows, left, _) in kernels.items():
      update = _matrices(updates['layers'][group][name], rows)
      last = _matrices(GRADIENTS[refresh]['layers'][group][name], rows)
      assert _outside(update, last, 3, left).max() < 1e-5
      if step != refresh:
        own = _matrices(GRADIENTS[step]['layers'][group][name], rows)
        assert _outside(update, own, 3, left).min() > 0.1
  plain = _run(optax.scale_by_adam(), 7)
  np.testing.assert_allclose(steps[-1][0]['embedding'], plain[-1][0]['embedding'], rtol=1e-6)


def _fira_by_hand(grads_LMN, projection, left, scale=0.25, limiter=1.01, b1=0.9, b2=0.999,
                  eps=1e-8):
  """Fira's (updates, residual terms, residual-term norms) per step for gradients [L, m, n] of one
  kernel and a fixed projection (U_r [L, m, r] if `left`, else V_r^T [L, r, n]), in numpy: Adam on
  the projection, N; phi = ||N|| / ||P^T G|| per matrix; the residual term phi (G - P P^T G), its
  norm held to at most `limiter` times the last step's."""
  p = np.asarray(projection, np.float64)
  p_T = p.swapaxes(-1, -2)
  mu = nu = 0
  last, results = None, []
  for count, g in enumerate(np.asarray(grads_LMN, np.float64), 1):
    low = p_T @ g if left else g @ p_T
    mu, nu = b1 * mu + (1 - b1) * low, b2 * nu + (1 - b2) * low ** 2
    n = (mu / (1 - b1 ** count)) / (np.sqrt(nu / (1 - b2 ** count)) + eps)
    phi = np.linalg.norm(n, axis=(1, 2)) / np.linalg.norm(low, axis=(1, 2))
    term = phi[:, None, None] * (g - (p @ low if left else low @ p))
    norm = np.linalg.norm(term, axis=(1, 2))
    if last is not None:
      cap = np.minimum(1, limiter * last / norm)
      term, norm = term * cap[:, None, None], norm * cap
    last = norm
    results.append(((scale * (p @ n if left else n @ p)) + term, term, norm))
  return results


# The two projected kernels the Fira tests read: (group, name, rows m, left).
FIRA_KERNELS = (('mlp', 'gate', 5, True), ('attention', 'query', 8, False))


def _outside_projection(update_LMN, projection, left):
  """The component of `update_LMN` outside the span of the projection (U_r or V_r^T)."""
  p = np.asarray(projection)
  p_T = p.swapaxes(-1, -2)
  return update_LMN - (p @ (p_T @ update_LMN) if left else (update_LMN @ p_T) @ p)


def test_fira_adds_phi_times_the_residual_outside_the_projection():
  """Rank 3, one step: each matrix's update is GaLore's, 0.25 U_r N, plus phi (G - U_r U_r^T G)
  with phi = ||N|| / ||U_r^T G|| (G V_r where the columns are projected), as numpy computes it from
  the same gradient; its component outside the projection's span is that residual term, a large
  share of the update; the state keeps the term's norm per matrix (of the 2 layers)."""
  (updates, state), = _run(optimizers.scale_by_fira(rank=3, update_proj_gap=3, scale=0.25), 1)
  for group, name, rows, left in FIRA_KERNELS:
    projection = _matrices(state.projection['layers'][group][name], rows if left else 3)
    grad = _matrices(GRADIENTS[0]['layers'][group][name], rows)
    (want, term, norm), = _fira_by_hand([grad], projection, left)
    got = _matrices(updates['layers'][group][name], rows)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_outside_projection(got, projection, left), term, rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(state.residual_norm['layers'][group][name], norm, rtol=1e-5)
    assert np.all(norm > 0.3 * np.linalg.norm(want, axis=(1, 2)))
  assert state.residual_norm['embedding'] is None


def test_fira_limiter_caps_the_residual_norm_growth_at_gamma():
  """A planted jump: step 2's gate gradient is step 1's with its residual outside the projection
  times 100 (the projected part unchanged, so phi is too): its residual term would grow 100-fold
  and is held to 1.01 times step 1's norm, in step 1's direction, as numpy computes it. The query
  gradient repeats: its term's norm is the same, not capped."""
  fira = optimizers.scale_by_fira(rank=3, update_proj_gap=10, scale=0.25, limiter=1.01)
  update = jax.jit(fira.update)
  first, state = update(GRADIENTS[0], fira.init(PARAMS), PARAMS)
  gate, p_gate = GRADIENTS[0]['layers']['mlp']['gate'], state.projection['layers']['mlp']['gate']
  jumped = gate + 99 * _outside_projection(gate, p_gate, True)
  grads = jax.tree.map(lambda x: x, GRADIENTS[0])
  grads['layers']['mlp']['gate'] = jumped
  second, state2 = update(grads, state, PARAMS)
  ratio = lambda kernel: (state2.residual_norm['layers'][kernel[0]][kernel[1]]
                          / state.residual_norm['layers'][kernel[0]][kernel[1]])
  np.testing.assert_allclose(ratio(('mlp', 'gate')), 1.01, rtol=1e-5)
  np.testing.assert_allclose(ratio(('attention', 'query')), 1.0, rtol=1e-5)
  steps = _fira_by_hand([gate, jumped], p_gate, True)
  np.testing.assert_allclose(second['layers']['mlp']['gate'], steps[1][0], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(steps[1][1], 1.01 * steps[0][1], rtol=1e-4, atol=1e-6)
  outside = [_outside_projection(np.asarray(u['layers']['mlp']['gate']), p_gate, True)
             for u in (first, second)]
  np.testing.assert_allclose(outside[1], 1.01 * outside[0], rtol=1e-4, atol=1e-6)


def test_momentum_reset_restarts_the_low_rank_moments_at_each_refresh():
  """Rank 3, a refresh every 3 steps, momentum_reset: the projected moments and their count restart
  at the refreshes (counts 0, 3, 6): after steps 3 and 6 the moments are one step's on that step's
  gradient, and the projected updates are a fresh GaLore's first step on it; before the first
  reset the run is GaLore's. The unprojected parameters keep their moments: their updates are
  GaLore's at every step."""
  steps = _run(optimizers.scale_by_galore(rank=3, update_proj_gap=3, scale=0.25,
                                          momentum_reset=True), 7)
  plain = galore_steps()
  assert [int(state.adam.count) for _, state in steps] == [1, 2, 3, 1, 2, 3, 1]
  fresh = jax.jit(GALORE.update)
  projected = [('mlp', 'gate'), ('mlp', 'down'), ('attention', 'query'), ('attention', 'out')]
  close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  for step, ((updates, state), (plain_updates, plain_state)) in enumerate(zip(steps, plain)):
    close(updates['embedding'], plain_updates['embedding'])
    close(state.adam.nu['layers']['mlp_norm']['scale'],
          plain_state.adam.nu['layers']['mlp_norm']['scale'])
    if step < 3:
      jax.tree.map(close, updates, plain_updates)
    if step in (3, 6):
      first, first_state = fresh(GRADIENTS[step], GALORE.init(PARAMS), PARAMS)
      for group, name in projected:
        close(updates['layers'][group][name], first['layers'][group][name])
        close(state.adam.mu['layers'][group][name], first_state.adam.mu['layers'][group][name])
        close(state.adam.nu['layers'][group][name], first_state.adam.nu['layers'][group][name])
      assert not np.allclose(updates['layers']['mlp']['gate'],
                             plain_updates['layers']['mlp']['gate'], rtol=1e-2)


def test_the_projection_changes_exactly_every_update_proj_gap_steps():
  """Refreshed at the updates whose count before is 0, 3, 6 (update_proj_gap 3), kept between."""
  states = [GALORE.init(PARAMS)] + [state for _, state in galore_steps()]
  projections = [jax.tree.leaves(state.projection) for state in states]
  assert len(projections[0]) == 4  # query, out, gate, down
  changed = [count for count in range(7)
             if any(not np.array_equal(a, b)
                    for a, b in zip(projections[count], projections[count + 1]))]
  assert changed == [0, 3, 6]


# The smallest decoder with every parameter kind (one layer, stacked as the scan has it).
TINY = bench.Preset('galore', d_model=32, num_layers=1, num_heads=2, mlp_dim=64, seq_len=16,
                    batch_size=4, steps=1)


def test_a_galore_run_on_a_sharded_mesh_trains():
  """The real train step, jitted with the state's shardings on a 4-device mesh (fsdp 2, tensor 2),
  rank 8, a refresh every 2 steps: the loss is finite and falls, and the low-rank state is sharded
  like the kernel on its other axes."""
  config = tiny_config('unused', data=1, fsdp=2, tensor=2)
  config.model.update(d_model=TINY.d_model, num_layers=TINY.num_layers, num_heads=TINY.num_heads,
                      head_dim=TINY.d_model // TINY.num_heads, mlp_dim=TINY.mlp_dim,
                      vocab_size=TINY.vocab_size)
  config.data.seq_len, config.train.batch_size = TINY.seq_len, TINY.batch_size
  config.train.optimizer = 'galore'
  config.train.galore.update(rank=8, update_proj_gap=2)
  trainer = train.Trainer(config, jax.devices()[:4])
  state = trainer.init_state()
  batch = trainer.place(bench.random_batch(TINY))
  losses = []
  for step in range(4):
    state, metrics = trainer.step(state, batch, train.step_rng(config.seed, step))
    losses.append(float(metrics['loss']))
  assert np.all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.1
  galore_state = state.opt_state[1][0]  # after the clipping's
  gate_moment = galore_state.adam.mu['layers']['mlp']['gate']
  assert gate_moment.shape == (1, 8, 64)  # [layers, rank, mlp]: the embed rows projected
  assert gate_moment.sharding.spec[2] == 'tensor'
  assert galore_state.projection['layers']['mlp']['gate'].sharding.spec[1] == 'fsdp'


@pytest.mark.parametrize('key, value, message', [
    ('optimizer', 'adam',
     r"'train.optimizer' must be one of \['adamw', 'galore', 'fira'\], got 'adam'"),
    ('galore.rank', 0, r"'train.galore.rank' must be >= 1, got 0; the rank"),
    ('galore.update_proj_gap', 0, r"'train.galore.update_proj_gap' must be >= 1, got 0; the steps"),
    ('galore.scale', 0.0, r"'train.galore.scale' must be > 0, got 0.0; GaLore's update scale"),
    ('galore.scale', -0.5, r"'train.galore.scale' must be > 0, got -0.5"),
    ('fira.limiter', 0.5, r"'train.fira.limiter' must be >= 1, got 0.5; Fira's norm-growth limit"),
])
def test_bad_optimizer_values_name_the_key(key, value, message):
  config = tiny_config('unused', data=1)
  group, _, name = key.rpartition('.')
  (config.train[group] if group else config.train)[name] = value
  with pytest.raises(errors.UserError, match=message):
    config_lib.validate(config, '/tmp/unused', jax.devices()[:1])
