"""Mixture-of-experts layers: routing, capacity, load-balancing scopes, and sharded = unsharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from research import config as config_lib, errors, train
from research.model import moe, transformer
from research.objectives import load_balance
from tests.test_train import read_metrics, tiny_config


def _stats(counts_MBE, probs_MBE, tokens_MB):
  """Router statistics of rows whose tokens all have the router distribution `probs`."""
  counts, probs, tokens = (jnp.asarray(x, jnp.float32) for x in (counts_MBE, probs_MBE, tokens_MB))
  return {'counts': counts, 'prob_sums': probs * tokens[..., None], 'tokens': tokens}


# Four rows of 10 tokens, top-1 over 2 experts: rows 0-1 all choose expert 0 with router
# probabilities (0.9, 0.1); rows 2-3 all choose expert 1 with (0.2, 0.8). Two data shards hold rows
# 0-1 and 2-3: each shard is all one "domain".
COUNTS = [[[10, 0], [10, 0], [0, 10], [0, 10]]]
PROBS = [[[0.9, 0.1], [0.9, 0.1], [0.2, 0.8], [0.2, 0.8]]]
TOKENS = [[10, 10, 10, 10]]


def test_global_batch_balance_counts_the_whole_batch_and_micro_batch_balance_each_shard():
  stats, buffer = _stats(COUNTS, PROBS, TOKENS), load_balance.empty_buffer(1, 2)
  # Global: f = (20, 20) / 40 = (0.5, 0.5), p = (0.55, 0.45): LBL = 2 * (0.275 + 0.225) = 1.
  value, new_buffer = load_balance.balance_loss(stats, 'global_batch', 2, 1, buffer)
  assert float(value) == pytest.approx(1.0)
  np.testing.assert_allclose(new_buffer['counts'], [[20, 20]])
  np.testing.assert_allclose(new_buffer['tokens'], [40])
  # Per shard of 2 rows: f = (1, 0), p = (0.9, 0.1) -> 1.8; f = (0, 1), p = (0.2, 0.8) -> 1.6.
  micro, _ = load_balance.balance_loss(stats, 'micro_batch', 2, 1, buffer)
  assert float(micro) == pytest.approx(1.7)
  sequence, _ = load_balance.balance_loss(stats, 'sequence', 2, 1, buffer)
  assert float(sequence) == pytest.approx(1.7)  # every row is pure here, so the same value
  # `none` logs the global value; aux_sums then adds only the z-loss to what is differentiated.
  assert float(load_balance.balance_loss(stats, 'none', 2, 1, buffer)[0]) == pytest.approx(1.0)


def test_global_batch_balance_carries_counts_across_micro_batches_and_p_stays_local():
  first = _stats([COUNTS[0][:2]], [PROBS[0][:2]], [TOKENS[0][:2]])
  second = _stats([COUNTS[0][2:]], [PROBS[0][2:]], [TOKENS[0][2:]])
  value, buffer = load_balance.balance_loss(first, 'global_batch', 2, 1,
                                            load_balance.empty_buffer(1, 2))
  assert float(value) == pytest.approx(1.8)  # only expert 0 counted so far: f = (1, 0)
  value, buffer = load_balance.balance_loss(second, 'global_batch', 2, 1, buffer)
  # f from both micro-batches (0.5, 0.5), p from the second alone (0.2, 0.8): 2 * 0.5 = 1.
  assert float(value) == pytest.approx(1.0)
  np.testing.assert_allclose(buffer['counts'], [[20, 20]])

  # The gradient flows through p only: d LBL / d prob_sums = N_E * f / T.
  earlier = {'counts': jnp.array([[20.0, 0.0]]), 'tokens': jnp.array([20.0])}

  def loss(prob_sums):
    stats = {**second, 'prob_sums': prob_sums}
    return load_balance.balance_loss(stats, 'global_batch', 2, 1, earlier)[0]
  grad = jax.grad(loss)(second['prob_sums'])
  np.testing.assert_allclose(grad, np.full((1, 2, 2), 2 * 0.5 / 20), rtol=1e-6)


def _routed_to_first_expert(capacity_factor, length=8):
  """A MoE layer of 2 experts whose router sends every token to expert 0 (top-1)."""
  layer = moe.MoE(num_experts=2, top_k=1, mlp_dim=16, capacity_factor=capacity_factor)
  x_BLD = jax.random.normal(jax.random.key(0), (2, length, 8))
  x_BLD = x_BLD.at[..., 0].set(1.0)
  params = layer.init(jax.random.key(1), x_BLD, jnp.ones((2, length), bool))['params']
  params['router'] = jnp.zeros((8, 2)).at[0, 0].set(50.0)
  return layer, params, x_BLD


def test_capacity_drops_the_assignments_past_it_and_counts_them():
  layer, params, x_BLD = _routed_to_first_expert(capacity_factor=1.0)
  valid_BL = jnp.ones((2, 8), bool).at[1, 6:].set(False)
  out_BLD, variables = layer.apply({'params': params}, x_BLD, valid_BL, mutable=['intermediates'])
  stats = load_balance.router_stats(variables['intermediates'])
  # C = ceil(1 * 8 * 1.0 / 2) = 4 slots: the first 4 tokens of a row fit, the rest are dropped.
  assert moe.capacity(2, 1, 8, 1.0) == 4
  np.testing.assert_allclose(stats['counts'][0], [[8, 0], [6, 0]])
  np.testing.assert_allclose(stats['tokens'][0], [8, 6])
  np.testing.assert_allclose(stats['dropped'][0], [4, 2])
  assert np.all(np.abs(np.asarray(out_BLD[:, :4])).sum(-1) > 0)
  np.testing.assert_array_equal(out_BLD[:, 4:], 0.0)  # dropped and padding: no expert output
  dropless, _ = layer.clone(capacity_factor=0.0).apply(
      {'params': params}, x_BLD, valid_BL, mutable=['intermediates'])
  np.testing.assert_allclose(dropless[:, :4], out_BLD[:, :4], rtol=1e-6, atol=1e-9)
  assert np.all(np.abs(np.asarray(dropless[0])).sum(-1) > 0)


def test_capacity_is_the_ceiling_of_k_l_cf_over_e_as_gshard_and_switch_compute_it():
  # k L cf = 1 * 11 * 1.5 = 16.5 over E = 8: ceil(2.0625) = 3 (flooring k L cf first gave 2).
  assert moe.capacity(8, 1, 11, 1.5) == 3
  assert moe.capacity(11, 1, 10, 1.1) == 1  # 1.1 * 10 = 11.000000000000002: no extra slot
  assert (moe.capacity(4, 2, 8, 0.1), moe.capacity(2, 2, 8, 4.0), moe.capacity(2, 1, 8, 0.0)) == (
      1, 8, 8)  # at least 1, at most L, and L when dropless
  # In the layer: 11 tokens to one of 2 experts, C = ceil(16.5 / 2) = 9 slots, 2 dropped (not 3).
  layer, params, x_BLD = _routed_to_first_expert(capacity_factor=1.5, length=11)
  _, variables = layer.apply({'params': params}, x_BLD, jnp.ones((2, 11), bool),
                             mutable=['intermediates'])
  np.testing.assert_allclose(load_balance.router_stats(variables['intermediates'])['dropped'][0],
                             [2, 2])


def test_one_expert_with_top1_and_room_for_every_token_is_the_dense_model():
  dense_config = transformer.ModelConfig(vocab_size=64, d_model=32, num_layers=2, num_heads=2,
                                         head_dim=16, mlp_dim=48)
  moe_config = transformer.ModelConfig(**{**dense_config.__dict__, 'moe_experts': 1,
                                          'moe_top_k': 1, 'moe_capacity_factor': 8.0})
  batch = transformer.dummy_batch(dense_config, 2, 16, 16)
  batch['inputs'] = jax.random.randint(jax.random.key(2), (2, 16), 0, 64)
  batch['segment_ids'] = batch['segment_ids'].at[1, 12:].set(0)  # padding is not routed
  moe_params = transformer.make_model(moe_config).init(jax.random.key(0), batch)['params']
  layers = dict(moe_params['layers'])
  experts = layers.pop('moe')
  layers['mlp'] = {name: jax.tree.map(lambda w: w[:, 0], experts[name])
                   for name in ('gate', 'up', 'down')}
  dense_params = {**moe_params, 'layers': layers}
  dense = transformer.make_model(dense_config).apply({'params': dense_params}, batch)
  routed = transformer.make_model(moe_config).apply({'params': moe_params}, batch)
  valid = np.asarray(batch['segment_ids'] > 0)
  np.testing.assert_allclose(np.asarray(routed)[valid], np.asarray(dense)[valid], rtol=1e-5,
                             atol=1e-5)


def test_every_nth_layer_is_moe_and_active_parameters_count_top_k_experts():
  config = transformer.ModelConfig(d_model=32, num_layers=4, num_heads=2, head_dim=16, mlp_dim=64,
                                   moe_experts=4, moe_top_k=2, moe_every=2, moe_mlp_dim=16,
                                   scan_layers=False)
  batch = transformer.dummy_batch(config, 1, 8, 8)
  params = transformer.make_model(config).init(jax.random.key(0), batch)['params']
  assert ['moe' in params[f'layers_{i}'] for i in range(4)] == [False, True, False, True]
  assert params['layers_1']['moe']['gate'].value.shape == (4, 32, 16)
  assert transformer.moe_layers(config) == 2
  dense = transformer.ModelConfig(**{**config.__dict__, 'moe_experts': 0})
  # Two dense MLPs become two routers (32 x 4) and two top-2 SwiGLU experts of width 16.
  assert (transformer.matmul_params(dense) - transformer.matmul_params(config)
          == 2 * 3 * 32 * 64 - 2 * (32 * 4 + 2 * 3 * 32 * 16))


def _moe_config(data_dir, **mesh):
  config = tiny_config(data_dir, **mesh)
  config.model.moe_experts, config.model.moe_top_k, config.model.moe_mlp_dim = 4, 2, 32
  config.model.moe_capacity_factor = 0.0  # dropless: no dropping that depends on the sharding
  config.train.steps, config.eval.every = 3, 3
  config.train.moe_lbl = 0.1
  return config


@pytest.mark.parametrize('micro_batches', [1, 2])
def test_expert_parallel_run_matches_one_device_with_the_same_global_balance(
    data_dir, tmp_path, micro_batches):
  one, sharded = str(tmp_path / 'one'), str(tmp_path / 'sharded')
  config = _moe_config(data_dir, data=1)
  config.train.micro_batches, config.train.batch_size = micro_batches, 8 * micro_batches
  train.train(config, one, devices=jax.devices()[:1])
  config = _moe_config(data_dir, data=4, expert=2)
  config.train.micro_batches, config.train.batch_size = micro_batches, 8 * micro_batches
  state = train.train(config, sharded)
  expected, got = read_metrics(one), read_metrics(sharded)
  for key in ('loss', 'moe/lbl', 'moe/router_z_loss', 'moe/layer_1/expert_3', 'grad_norm'):
    np.testing.assert_allclose([m[key] for m in got if key in m],
                               [m[key] for m in expected if key in m], rtol=2e-5, err_msg=key)
  final = [m for m in got if 'eval/stdlib_code/moe/load_entropy' in m][-1]
  loads = [final[f'eval/stdlib_code/moe/layer_0/expert_{e}'] for e in range(4)]
  assert sum(loads) == pytest.approx(1.0)
  assert 0 < final['eval/stdlib_code/moe/load_entropy'] <= np.log(4) + 1e-6
  assert final['eval/stdlib_code/moe/dropped_fraction'] == 0.0
  gate = state.params['layers']['moe']['gate']  # [layers, expert, embed, mlp]
  assert gate.sharding.spec == P(None, 'expert', 'fsdp', 'tensor')
  assert {s.data.shape for s in gate.addressable_shards} == {(2, 2, 64, 32)}


def test_micro_batch_balance_defaults_to_the_rows_of_one_data_shard(data_dir, tmp_path):
  """Megatron's per-device balance: 1 row per shard makes micro_batch on 8 devices per sequence."""
  sequence, micro = str(tmp_path / 'sequence'), str(tmp_path / 'micro')
  config = _moe_config(data_dir, data=1)
  config.train.steps, config.train.moe_balance = 2, 'sequence'
  train.train(config, sequence, devices=jax.devices()[:1])
  config = _moe_config(data_dir, data=8)
  config.train.steps, config.train.moe_balance = 2, 'micro_batch'
  train.train(config, micro)
  np.testing.assert_allclose([m['moe/lbl'] for m in read_metrics(micro) if 'moe/lbl' in m],
                             [m['moe/lbl'] for m in read_metrics(sequence) if 'moe/lbl' in m],
                             rtol=2e-5)


@pytest.mark.parametrize('key, value, mesh, match', [
    ('train.moe_balance', 'global', {}, "train.moe_balance='global' is not a balancing scope"),
    ('train.moe_balance_rows', 3, {}, 'train.moe_balance_rows=3 must divide the 8 rows'),
    ('model.moe_top_k', 5, {}, 'model.moe_top_k=5 must be between 1 and model.moe_experts=4'),
    ('model.moe_every', 3, {}, 'model.moe_every=3 must be >= 1 and divide'),
    ('model.moe_experts', 3, {'data': 4, 'expert': 2}, 'model.moe_experts=3 must be a positive '
     'multiple of it'),
])
def test_bad_moe_settings_fail_naming_the_key(data_dir, tmp_path, key, value, mesh, match):
  config = _moe_config(data_dir, **mesh)
  section, name = key.split('.')
  config[section][name] = value
  with pytest.raises(errors.UserError, match=match):
    config_lib.validate(config, str(tmp_path), jax.devices()[:8 if mesh else 1])
