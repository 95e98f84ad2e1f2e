"""The optimizers of train.optimizer (research/optimizers.py): GaLore (Zhao et al. 2024, arXiv
2403.03507) is Adam on low-rank projections of the attention and MLP gradients, AdamW's numbers
where nothing is projected."""

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


def test_galore_at_full_rank_is_adamw_step_for_step():
  """Every matrix's smaller side is <= the rank: none is projected, and the updates (after clipping,
  with decoupled weight decay) are AdamW's. The default optimizer's state is AdamW's, as before."""
  schedule = lambda step: 1e-2
  galore = optimizers.make_optimizer(_train_config(optimizer='galore', galore={'rank': 8}),
                                     schedule)
  adamw = optimizers.make_optimizer(_train_config(), schedule)
  for (got, _), (want, _) in zip(_run(galore, 5), _run(adamw, 5)):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9), got, want)
  reference = optax.chain(optax.clip_by_global_norm(1.0),
                          optax.adamw(schedule, mask=optimizers.decay_mask))
  assert jax.tree.structure(adamw.init(PARAMS)) == jax.tree.structure(reference.init(PARAMS))


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
    ('optimizer', 'adam', r"'train.optimizer' must be one of \['adamw', 'galore'\], got 'adam'"),
    ('galore.rank', 0, r"'train.galore.rank' must be >= 1, got 0; the rank"),
    ('galore.update_proj_gap', 0, r"'train.galore.update_proj_gap' must be >= 1, got 0; the steps"),
    ('galore.scale', 0.0, r"'train.galore.scale' must be > 0, got 0.0; GaLore's update scale"),
    ('galore.scale', -0.5, r"'train.galore.scale' must be > 0, got -0.5"),
])
def test_bad_optimizer_values_name_the_key(key, value, message):
  config = tiny_config('unused', data=1)
  group, _, name = key.rpartition('.')
  (config.train[group] if group else config.train)[name] = value
  with pytest.raises(errors.UserError, match=message):
    config_lib.validate(config, '/tmp/unused', jax.devices()[:1])
