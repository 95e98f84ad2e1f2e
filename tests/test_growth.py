"""Model growth (init.grow, research/model/growth.py): bert2BERT's function-preserving growth of a
smaller decoder's checkpoint into a deeper, wider one (arXiv 2110.07143; Net2Net, 1511.05641)."""

import dataclasses
import functools

import flax.linen as nn
import jax
import numpy as np
import pytest

from experiments import base
from research import config as config_lib, errors, train
from research.model import growth, placed, transformer
from tests.test_init_from import _config, _devices, _first_state
from tests.test_train import read_metrics

SMALL = transformer.ModelConfig(vocab_size=128, d_model=32, num_layers=2, num_heads=2, head_dim=8,
                                mlp_dim=48, remat='none')


def _shapes(config):
  """What checkpoint.saved_shapes reads of a checkpoint of `config`'s model."""
  init = placed.make_params_init(transformer.make_model(config),
                                 transformer.dummy_batch(config, 1, 16, 16))
  return jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)),
                      nn.meta.unbox(jax.eval_shape(init, jax.random.key(0))))


@functools.lru_cache
def _params(config):
  """Parameters of `config`'s model from N(0, 0.2^2), norms and biases too (nothing to compile)."""
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda leaf: 0.2 * rng.standard_normal(leaf[0], np.float32),
                      _shapes(config), is_leaf=lambda x: isinstance(x, tuple))


@functools.lru_cache
def _apply(config):
  return jax.jit(transformer.make_model(config).apply)


def _logits(config, params):
  tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, config.vocab_size)
  return _apply(config)({'params': params},
                        {**transformer.dummy_batch(config, 2, 16, 16), 'inputs': tokens})


GROWTHS = {
    'depth': dict(num_layers=5),
    'mlp_width': dict(mlp_dim=112),
    'heads': dict(num_heads=5),
    'all_three': dict(num_layers=4, num_heads=3, mlp_dim=100),
}
# Each growth of the default (LLaMA-like) decoder, and all three at once of other small models:
# unscanned layers; grouped-query attention (2 key and value heads: query heads grow within each
# group); a GELU MLP with biases, attention biases, LayerNorm, qk-layernorm and a parallel residual
# (GPT-NeoX).
CASES = {**{name: ({}, sizes) for name, sizes in GROWTHS.items()},
         'unscanned': (dict(scan_layers=False), GROWTHS['all_three']),
         'gqa': (dict(num_heads=4, num_kv_heads=2), dict(num_layers=3, num_heads=6, mlp_dim=100)),
         'neox': (dict(mlp='gelu', mlp_bias=True, attention_bias=True, norm='layernorm',
                       qk_norm=True, parallel_residual=True, tie_embeddings=False),
                  GROWTHS['all_three'])}


@pytest.mark.parametrize('case', CASES)
def test_a_grown_model_computes_the_small_models_logits(case):
  variant, sizes = CASES[case]
  small = dataclasses.replace(SMALL, **variant)
  big = dataclasses.replace(small, **sizes)
  params = _params(small)
  grown = growth.grow(params, small, big, seed=0)
  assert jax.tree.map(lambda x: (x.shape, str(x.dtype)), grown) == _shapes(big)
  np.testing.assert_allclose(_logits(big, grown), _logits(small, params), atol=1e-5, rtol=0)


def test_new_layers_are_zero_output_copies_and_new_units_split_their_outputs():
  big = dataclasses.replace(SMALL, num_layers=5, mlp_dim=96)
  small_layers, grown = _params(SMALL)['layers'], growth.grow(_params(SMALL), SMALL, big, 0)
  layers = grown['layers']
  # Layers 0, 1, 2 are old layer 0 and its copies; 3, 4 old layer 1 and its copy.
  np.testing.assert_array_equal(growth.layer_copies(2, 5)[0], [0, 0, 0, 1, 1])
  for new, old in ((1, 0), (2, 0), (4, 1)):
    np.testing.assert_array_equal(layers['attention']['query'][new],
                                  small_layers['attention']['query'][old])
    assert not np.any(layers['attention']['out'][new]) and not np.any(layers['mlp']['down'][new])
  np.testing.assert_array_equal(layers['mlp']['gate'][3, :, :48], small_layers['mlp']['gate'][1])
  np.testing.assert_allclose(layers['mlp']['down'][3, :48], small_layers['mlp']['down'][1] / 2)
  # A fresh draw from the same seed copies the same units; another seed others.
  assert growth.copies(48, 100, np.random.default_rng(3)).tolist() == growth.copies(
      48, 100, np.random.default_rng(3)).tolist()
  assert np.bincount(growth.copies(48, 100, np.random.default_rng(3))).tolist().count(2) == 44


def test_grow_noise_perturbs_only_the_copies_incoming_weights():
  big = dataclasses.replace(SMALL, mlp_dim=96, num_heads=4)
  exact = growth.grow(_params(SMALL), SMALL, big, seed=0)
  noisy = growth.grow(_params(SMALL), SMALL, big, seed=0, noise=0.01)
  gate, exact_gate = noisy['layers']['mlp']['gate'], exact['layers']['mlp']['gate']
  np.testing.assert_array_equal(gate[..., :48], exact_gate[..., :48])  # the original units
  perturbation = np.asarray(gate[..., 48:] - exact_gate[..., 48:])
  # N(0, (0.01 std)^2) with the parameters' std 0.2: 0.002 per entry, over 2 x 32 x 48 entries.
  assert abs(perturbation.std() / 0.002 - 1) < 0.05 and abs(perturbation.mean()) < 1e-4
  query = np.asarray(noisy['layers']['attention']['query'] - exact['layers']['attention']['query'])
  assert not query[:, :, :2].any() and query[:, :, 2:].std() > 0.001  # copied heads 2, 3 only
  for path in (('mlp', 'down'), ('attention', 'out'), ('attention', 'key')):  # not incoming
    np.testing.assert_array_equal(noisy['layers'][path[0]][path[1]],
                                  exact['layers'][path[0]][path[1]])
  # The function moves a little: the copies now differ from their sources.
  difference = np.abs(np.asarray(_logits(big, noisy) - _logits(SMALL, _params(SMALL)))).max()
  assert 1e-5 < difference < 0.05


def test_a_scanned_checkpoint_grows_into_an_unscanned_model():
  big = dataclasses.replace(SMALL, num_layers=3, scan_layers=False)
  source = growth.source_config(_shapes(SMALL), big, 'init.path=small')
  assert source == SMALL
  grown = growth.grow(_params(SMALL), source, big, seed=0)
  np.testing.assert_allclose(_logits(big, grown), _logits(SMALL, _params(SMALL)), atol=1e-5)


@pytest.mark.parametrize('change, message', [
    (dict(d_model=64), r'model.d_model is 32 in the checkpoint but 64 in the config; init.grow '
     r'grows model.num_layers, model.num_heads, model.mlp_dim only \(every norm averages over '
     r'd_model'),
    (dict(vocab_size=256), r'model.vocab_size is 128 in the checkpoint but 256 in the config'),
    (dict(head_dim=16), r'model.head_dim is 8 in the checkpoint but 16 in the config'),
    (dict(num_layers=1), r'model.num_layers is 2 in the checkpoint but 1 in the config; init.grow '
     r'grows a model, it does not shrink one'),
    (dict(num_heads=4, num_kv_heads=1), r'the checkpoint has 2 key and value heads for 2 query '
     r'heads, the config 1 for 4 \(model.num_kv_heads=1\)'),
])
def test_what_cannot_grow_is_refused_naming_the_key(change, message):
  with pytest.raises(errors.UserError, match=r'init.path=small: ' + message):
    growth.source_config(_shapes(SMALL), dataclasses.replace(SMALL, **change), 'init.path=small')


def test_an_encoder_decoder_checkpoint_is_refused():
  encoder_decoder = dataclasses.replace(SMALL, architecture='encoder_decoder')
  with pytest.raises(errors.UserError, match=r"init.path=small holds no decoder \(no layers\); "
                     r"init.grow grows a decoder \(model.architecture='decoder'\)"):
    growth.source_config(_shapes(encoder_decoder), SMALL, 'init.path=small')


@pytest.mark.parametrize('init, model, message', [
    (dict(grow=True), {}, r"init.grow=True grows the checkpoint in init.path, which is ''"),
    (dict(grow=True, path='/a/run', optimizer=True), {},
     r'init.grow=True starts a fresh optimizer state .* set init.optimizer=False'),
    (dict(grow=True, path='/a/run'), dict(moe_experts=4),
     r"init.grow=True grows a dense decoder, not model.architecture='decoder' with "
     r'model.moe_experts=4'),
])
def test_grow_settings_are_checked_before_compile(tmp_path, init, model, message):
  config = base.get_config()
  config.init.update(init)
  config.model.update(model)
  with pytest.raises(errors.UserError, match=message):
    config_lib.validate(config, str(tmp_path / 'run'), jax.devices())


@pytest.fixture(scope='module')
def small_run(data_dir, tmp_path_factory):
  """A 2-step run of test_init_from's tiny decoder (2 layers, 2 heads, mlp_dim 128) on rows of 16
  tokens, evaluated at its end."""
  workdir = str(tmp_path_factory.mktemp('small'))
  config = _config(data_dir)
  config.data.seq_len, config.train.steps = 16, 2
  train.train(config, workdir, devices=_devices())
  return workdir, config


def test_a_grown_run_starts_at_the_small_models_loss_and_trains(small_run, tmp_path):
  workdir, small = small_run
  config = small.copy_and_resolve_references()
  config.init.update(path=workdir, grow=True)
  config.model.update(num_layers=3, num_heads=3, mlp_dim=192)
  state = train.train(config, str(tmp_path), devices=_devices())
  grown = read_metrics(str(tmp_path))
  evals = [m for m in grown if 'eval/stdlib_prose/loss' in m]
  assert [m['step'] for m in evals] == [0, 2]
  small_eval = [m for m in read_metrics(workdir) if 'eval/stdlib_prose/loss' in m][-1]
  np.testing.assert_allclose(evals[0]['eval/stdlib_prose/loss'],
                             small_eval['eval/stdlib_prose/loss'], rtol=1e-5)
  assert evals[1]['eval/stdlib_prose/loss'] < evals[0]['eval/stdlib_prose/loss'] - 0.1
  assert len([m['loss'] for m in grown if 'loss' in m]) == 2
  # The new layer (layer 1, old layer 0's copy) left zero output projections at its first step.
  assert np.abs(state.params['layers']['mlp']['down'][1]).max() > 0
  assert np.abs(state.params['layers']['attention']['out'][1]).max() > 0


def test_a_grown_run_refuses_another_d_model(small_run):
  workdir, small = small_run
  config = small.copy_and_resolve_references()
  config.init.update(path=workdir, grow=True)
  config.model.d_model = 128
  with pytest.raises(errors.UserError, match=r'init.path=.* \(checkpoint 2\): model.d_model is 64 '
                     r'in the checkpoint but 128 in the config'):
    _first_state(config)
