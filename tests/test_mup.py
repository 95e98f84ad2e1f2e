"""muP, the Maximal Update Parametrization (Yang et al. 2022, "Tensor Programs V: Tuning Large
Neural Networks via Zero-Shot Hyperparameter Transfer", arXiv 2203.03466): model.mup_base_width
(research/model/transformer.py) and its AdamW (research/optimizers.py). At the base width it is the
standard model and AdamW, exactly; wider by m, the hidden matrices start smaller by sqrt(m) and
move at the learning rate / m, and the paper's coordinate check holds: after a few Adam steps the
output logits' and a hidden activation's coordinates keep their size across widths, where the
standard parametrization's grow with the width."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import base
from research import config as config_lib
from research import errors, optimizers
from research.model import layers, transformer
from tests.test_train import tiny_config

BASE_WIDTH = 64
WIDTHS = (64, 128, 256)  # m = 1, 2, 4
HIDDEN = ('query', 'key', 'value', 'out', 'gate', 'up', 'down')


def _config(width: int, mup: bool = True) -> transformer.ModelConfig:
  """Depth 2, head_dim 16 (the heads grow with the width), mlp_dim 4 * width."""
  return transformer.ModelConfig(vocab_size=128, d_model=width, num_layers=2,
                                 num_heads=width // 16, head_dim=16, mlp_dim=4 * width,
                                 remat='none', mup_base_width=BASE_WIDTH if mup else 0)


# One fixed batch of random tokens, 8 rows of 16.
BATCH = {'inputs': jnp.asarray(np.random.default_rng(0).integers(0, 128, (8, 16)), jnp.int32),
         'segment_ids': jnp.ones((8, 16), jnp.int32),
         'positions': jnp.broadcast_to(jnp.arange(16, dtype=jnp.int32), (8, 16))}


@functools.cache
def _init(width: int) -> dict:
  """The muP model's init at `width`."""
  model = transformer.make_model(_config(width))
  return nn.meta.unbox(jax.jit(model.init)(jax.random.key(0), BATCH)['params'])


def _standard_init(width: int) -> dict:
  """The standard model's init at `width`, from the same draws: the muP init with the hidden
  matrices times sqrt(m) (saves compiling the standard model's init)."""
  root = np.sqrt(width / BASE_WIDTH)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x * root if path[-1].key in HIDDEN else x, _init(width))


def _train_config(**changes):
  config = base.get_config().train
  config.update(changes)
  return config


def _hidden_leaves(tree) -> dict:
  """{path: leaf} of the hidden matrices of a tree shaped like the parameters."""
  return {jax.tree_util.keystr(path): leaf
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree) if path[-1].key in HIDDEN}


def test_at_the_base_width_mup_is_the_standard_model_and_adamw():
  """d_model = mup_base_width: the same logits and AdamW's updates, bit for bit.
  At m = 2 the hidden matrices' updates are AdamW's at half the learning rate (decoupled weight
  decay included), the rest AdamW's at the learning rate, exactly (halving is exact)."""
  mup, standard = _config(BASE_WIDTH), _config(BASE_WIDTH, mup=False)
  assert mup.mup_multiplier == 1.0 and mup.attention_scale == standard.attention_scale
  params = _init(BASE_WIDTH)
  apply = lambda config: jax.jit(transformer.make_model(config).apply)({'params': params}, BATCH)
  np.testing.assert_array_equal(apply(mup), apply(standard))

  train_config, lr = _train_config(grad_clip=0.0), 1e-2
  rng = np.random.default_rng(1)
  grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
           for _ in range(3)]

  def updates(tx):
    update, state, out = jax.jit(tx.update), tx.init(params), []
    for g in grads:
      u, state = update(g, state, params)
      out.append(u)
    return out
  adamw = lambda rate: optax.adamw(rate, b1=train_config.b1, b2=train_config.b2,
                                   eps=train_config.eps, weight_decay=train_config.weight_decay,
                                   mask=optimizers.decay_mask)
  full, halved = updates(adamw(lr)), updates(adamw(lr / 2))
  for got, want in zip(updates(optimizers.make_optimizer(train_config, lambda step: lr, 1.0)),
                       full):
    jax.tree.map(np.testing.assert_array_equal, got, want)

  multipliers = optimizers.mup_lr_multipliers(params, 2.0)
  assert set(_hidden_leaves(multipliers).values()) == {0.5}
  assert multipliers['embedding'] == multipliers['final_norm']['scale'] == 1.0
  assert sum(k == 0.5 for k in jax.tree.leaves(multipliers)) == len(HIDDEN)  # scanned: 1 each
  mup = updates(optimizers.make_optimizer(train_config, lambda step: lr, 2.0))
  for got, at_lr, at_half in zip(mup, full, halved):
    jax.tree.map(lambda u, k, a, b: np.testing.assert_array_equal(u, b if k < 1 else a),
                 got, multipliers, at_lr, at_half)


def test_hidden_init_std_scales_as_one_over_sqrt_of_the_width_multiplier():
  """The hidden matrices' std is init_std / sqrt(m) at m = 1, 2, 4 (variance ~ 1 / fan_in); the
  embedding's stays init_std."""
  for width in WIDTHS:
    config, params = _config(width), _init(width)
    for where, leaf in _hidden_leaves(params).items():
      np.testing.assert_allclose(np.std(leaf) * np.sqrt(config.mup_multiplier), 0.02, rtol=0.05,
                                 err_msg=f'{where} at width {width}')
    np.testing.assert_allclose(np.std(params['embedding']), 0.02, rtol=0.05)


def _coordinates(width: int, mup: bool, lr: float, steps: int = 5):
  """The mean |coordinate| of the output logits and of the last layer's MLP output after `steps`
  Adam steps at learning rate `lr` (no clipping, no weight decay) on BATCH, next-token loss, of the
  muP or the standard model at `width`."""
  config = _config(width, mup)
  model = transformer.make_model(config)
  tx = optimizers.make_optimizer(_train_config(grad_clip=0.0, weight_decay=0.0),
                                 lambda step: lr, config.mup_multiplier)

  def loss(params):
    logits_BLV = model.apply({'params': params}, BATCH)[:, :-1]
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits_BLV),
                                         BATCH['inputs'][:, 1:, None], axis=-1))

  @jax.jit
  def train(params):
    def step(carry, _):
      params, state = carry
      updates, state = tx.update(jax.grad(loss)(params), state, params)
      return (optax.apply_updates(params, updates), state), None
    params = jax.lax.scan(step, (params, tx.init(params)), length=steps)[0][0]
    logits, captured = model.apply({'params': params}, BATCH, capture_intermediates=lambda m, _:
                                   isinstance(m, layers.SwiGLU), mutable=['intermediates'])
    mlp_out = captured['intermediates']['layers']['mlp']['__call__'][0][-1]
    return jnp.mean(jnp.abs(logits)), jnp.mean(jnp.abs(mlp_out))
  return tuple(float(x) for x in train(_init(width) if mup else _standard_init(width)))


def test_coordinate_check_mup_keeps_coordinate_sizes_across_widths_where_standard_grows():
  """The coordinate check of Yang et al. 2022 (arXiv 2203.03466): widths 64, 128, 256
  after 5 Adam steps at one learning rate, 1e-2. Under muP the logits' and the MLP output's mean
  |coordinate| at every width is within [0.5, 2] times width 64's (measured: 0.94 and 0.99 at
  256); under the standard parametrization both grow with the width, at 256 by more than 2x muP's
  ratio for the logits and 10x for the MLP output (measured: 3.7x and 53x width 64's)."""
  lr = 1e-2
  mup = {width: _coordinates(width, True, lr) for width in WIDTHS}
  standard = {width: _coordinates(width, False, lr) for width in WIDTHS[1:]}
  standard[BASE_WIDTH] = mup[BASE_WIDTH]  # the same model and optimizer (the first test)
  ratios = lambda sizes, i: [sizes[width][i] / sizes[BASE_WIDTH][i] for width in WIDTHS]
  for i, margin in ((0, 2), (1, 10)):
    assert all(0.5 <= r <= 2 for r in ratios(mup, i)), ratios(mup, i)
    grows = ratios(standard, i)
    assert grows == sorted(grows) and grows[-1] > margin * ratios(mup, i)[-1], grows


@pytest.mark.parametrize('changes, message', [
    ({'mup_base_width': 65}, r'model.mup_base_width=65 must be 0 \(muP off\) or the base width'),
    ({'mup_base_width': -1}, r'model.mup_base_width=-1 must be 0'),
    ({'mup_base_head_dim': 8}, r'model.mup_base_head_dim=8 must be .* with muP on'),
    ({'mup_base_width': 32, 'mup_base_head_dim': 32},
     r'model.mup_base_head_dim=32 must be 0 \(= model.head_dim\) or in \[1, model.head_dim=16\]'),
])
def test_bad_mup_values_name_the_key(changes, message):
  with pytest.raises(errors.UserError, match=message):
    dataclasses.replace(_config(BASE_WIDTH, mup=False), **changes)


@pytest.mark.parametrize('optimizer', ['galore', 'fira'])
def test_mup_with_a_low_rank_optimizer_names_both_keys(optimizer):
  config = tiny_config('unused', data=1)
  config.model.mup_base_width, config.train.optimizer = 32, optimizer
  with pytest.raises(errors.UserError, match=rf"train.optimizer='{optimizer}' does not compose "
                     r'with muP \(model.mup_base_width > 0\)'):
    config_lib.validate(config, '/tmp/unused', jax.devices()[:1])
