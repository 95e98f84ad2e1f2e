"""Expert pathways (research/pathways.py): edit distance, consistency, what the MoE layer sows."""

import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import config as config_lib, errors, pathways, train
from research.model import transformer
from tests import test_moe
from tests.test_train import read_metrics, tiny_config


def _levenshtein(a, b):
  """The textbook dynamic programme, one cell at a time."""
  previous = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    current = [i]
    for j, y in enumerate(b, 1):
      current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
    previous = current
  return previous[-1]


def test_edit_distances_match_plain_levenshtein_and_ignore_what_lies_past_each_length():
  rng = np.random.default_rng(0)
  lengths_N = np.array([0, 1, 5, 9, 12, 12, 3, 7])
  sequences_NT = rng.integers(0, 4, (8, 12))  # symbols past a length are junk, not padding marks
  distance_P = pathways.edit_distances(sequences_NT, lengths_N)
  expected = [_levenshtein(sequences_NT[i, :lengths_N[i]].tolist(),
                           sequences_NT[j, :lengths_N[j]].tolist())
              for i, j in itertools.combinations(range(8), 2)]
  np.testing.assert_array_equal(distance_P, expected)
  assert _levenshtein('kitten', 'sitting') == 3
  assert pathways.edit_distances(np.array([[1, 2, 3, 4], [2, 3, 4, 9]]), np.array([4, 3]))[0] == 1


def test_pathway_distance_reads_the_valid_tokens_layer_by_layer_then_position_then_choice():
  rng = np.random.default_rng(1)
  choices_NMLK = rng.integers(0, 6, (5, 3, 10, 2))
  valid_NL = rng.random((5, 10)) < 0.7  # padding anywhere, also between valid tokens
  valid_NL[0] = False  # a sample without tokens is left out
  valid_NL[1:, 0] = True
  sequences = [[int(choices_NMLK[n, m, t, k]) for m in range(3) for t in range(10)
                if valid_NL[n, t] for k in range(2)] for n in range(1, 5)]
  expected = np.mean([_levenshtein(a, b) / max(len(a), len(b))
                      for a, b in itertools.combinations(sequences, 2)])
  assert pathways.pathway_distances(choices_NMLK, valid_NL) == pytest.approx(expected)
  assert pathways.pathway_distances(choices_NMLK[:2], valid_NL[:2]) is None  # one sample left


def test_identical_pathways_are_at_distance_0_and_disjoint_expert_sets_at_1():
  choices_NMLK = np.tile(np.arange(16).reshape(1, 2, 4, 2) % 3, (4, 1, 1, 1))
  valid_NL = np.ones((4, 4), bool)
  assert pathways.pathway_distances(choices_NMLK, valid_NL) == 0.0
  disjoint_NMLK = np.stack([choices_NMLK[0] + 3 * n for n in range(4)])  # sample n: experts 3n..
  valid_NL[1, 3] = False  # different lengths: the longer one's length is the normaliser
  assert pathways.pathway_distances(disjoint_NMLK, valid_NL) == 1.0


def test_consistency_is_1_for_one_direction_across_layers_and_0_for_orthogonal_ones():
  rng = np.random.default_rng(2)
  direction_ND = rng.normal(size=(3, 8))
  scales_M = np.array([1.0, 2.5, 0.3])[:, None, None]
  assert pathways.pathway_consistency(scales_M * direction_ND) == pytest.approx(1.0)
  orthogonal_MND = np.eye(8)[:3, None, :].repeat(3, axis=1)  # layer m: basis vector m
  assert pathways.pathway_consistency(orthogonal_MND) == pytest.approx(0.0)
  # A zero embedding (a row of padding) is left out: the mean is over the other samples.
  mixed_MND = np.stack([np.eye(8)[[0, 0]], np.eye(8)[[0, 1]]]).astype(float)
  mixed_MND[:, 1] = 0.0
  assert pathways.pathway_consistency(mixed_MND) == pytest.approx(1.0)
  assert pathways.pathway_consistency(direction_ND[None]) is None  # one MoE layer


def _model(data_dir, init=True, **model):
  """A tiny MoE model (4 experts, top-2), its variables (None unless `init`) and a batch of 4 rows:
  row 1 padded from token 10, row 3 all padding."""
  config = tiny_config(data_dir)
  config.model.moe_experts, config.model.moe_top_k, config.model.moe_mlp_dim = 4, 2, 32
  for key, value in model.items():
    config.model[key] = value
  model_config = transformer.ModelConfig.from_config(config.model)
  batch = transformer.dummy_batch(model_config, 4, 24, 16)
  for prefix in ('', 'encoder_') if model_config.architecture == 'encoder_decoder' else ('',):
    shape = batch[f'{prefix}inputs'].shape
    batch[f'{prefix}inputs'] = jax.random.randint(jax.random.key(1), shape, 0, 384)
    batch[f'{prefix}segment_ids'] = batch[f'{prefix}segment_ids'].at[1, 10:].set(0).at[3].set(0)
  model = transformer.make_model(model_config)
  return model, jax.jit(model.init)(jax.random.key(0), batch) if init else None, batch


def test_sown_choices_are_the_routers_top_k_and_the_training_outputs_are_unchanged(data_dir):
  model, variables, batch = _model(data_dir, moe_normalize_gates=True)
  assert set(variables) == {'params'}  # initialisation sows no pathways
  logits, inter = model.apply(variables, batch, mutable=['intermediates'])
  assert set(inter) == {'intermediates'}
  both, sown = model.apply(variables, batch, mutable=['intermediates', 'pathways'],
                           capture_intermediates=lambda module, _: module.name == 'mlp_norm')
  np.testing.assert_array_equal(logits, both)
  for a, b in zip(jax.tree.leaves(inter['intermediates']['layers']['moe']),
                  jax.tree.leaves(sown['intermediates']['layers']['moe'])):
    np.testing.assert_array_equal(a, b)

  # By hand for every layer: softmax(mlp_norm output @ router), top-2, gates renormalised.
  outputs = pathways.collect(sown['pathways'])
  h_MBLD = sown['intermediates']['layers']['mlp_norm']['__call__'][0]
  router_MDE = variables['params']['layers']['moe']['router'].value
  probs_MBLE = jax.nn.softmax(jnp.einsum('mbld,mde->mble', h_MBLD, router_MDE), axis=-1)
  order_MBLE = np.argsort(-np.asarray(probs_MBLE), axis=-1)
  np.testing.assert_array_equal(outputs['choices'], order_MBLE[..., :2])
  gates_MBLK = np.take_along_axis(np.asarray(probs_MBLE), order_MBLE[..., :2], axis=-1)
  gates_MBLK /= gates_MBLK.sum(-1, keepdims=True)
  valid_BL = np.asarray(batch['segment_ids'] > 0)
  expected_MBD = np.stack([
      np.einsum('blk,bdlk->bd', gates_MBLK[m] * valid_BL[..., None],
                np.asarray(router_MDE[m])[:, order_MBLE[m, ..., :2]].transpose(1, 0, 2, 3))
      for m in range(2)])
  np.testing.assert_allclose(outputs['embedding'], expected_MBD, rtol=1e-5, atol=1e-6)
  assert not np.any(outputs['embedding'][:, 3])  # the row of padding


def test_scanned_and_unscanned_layers_give_the_same_pathways(data_dir):
  model, variables, batch = _model(data_dir)
  params = nn.meta.unbox(variables['params'])
  scanned = pathways.make_pathway_step(model)(params, batch)
  unscanned_model, _, _ = _model(data_dir, init=False, scan_layers=False)
  unscanned = pathways.make_pathway_step(unscanned_model)(
      transformer.unscan_params(params, unscanned_model.config), batch)
  np.testing.assert_array_equal(scanned['choices'], unscanned['choices'])
  np.testing.assert_allclose(scanned['embedding'], unscanned['embedding'], rtol=1e-5, atol=1e-6)
  metrics = pathways.pathway_metrics([scanned], 'monitor/task/')
  assert metrics == pytest.approx(pathways.pathway_metrics([unscanned], 'monitor/task/'))
  assert set(metrics) == {'monitor/task/pathway_distance', 'monitor/task/pathway_consistency'}
  assert 0 < metrics['monitor/task/pathway_distance'] < 1
  assert -1 <= metrics['monitor/task/pathway_consistency'] <= 1
  assert scanned['choices'].shape == (2, 4, 24, 2) and scanned['embedding'].shape == (2, 4, 64)


@pytest.mark.parametrize('model', [
    {'moe_every': 2}, {'num_layers': 4, 'moe_every': 2, 'scan_layers': False},
    {'architecture': 'encoder_decoder'}])
def test_other_layouts_give_the_decoders_pathways(data_dir, model):
  model, variables, batch = _model(data_dir, **model)
  outputs = pathways.make_pathway_step(model)(variables['params'], batch)
  moe_layers = model.config.moe_layers_of(model.config.num_layers)
  assert outputs['choices'].shape == (moe_layers, 4, batch['inputs'].shape[1], 2)
  np.testing.assert_array_equal(outputs['valid'], batch['segment_ids'] > 0)
  metrics = pathways.pathway_metrics([outputs])
  assert 0 < metrics['pathway_distance'] < 1
  assert ('pathway_consistency' in metrics) == (moe_layers >= 2)


def test_a_dense_model_has_no_pathways(data_dir):
  model, _, _ = _model(data_dir, init=False, moe_experts=0)
  with pytest.raises(ValueError, match='moe_experts'):
    pathways.make_pathway_step(model)


def test_the_training_loop_logs_the_monitor_of_every_task_at_each_evaluation(data_dir, tmp_path):
  config = test_moe._moe_config(data_dir, data=2)
  config.train.steps, config.eval.every, config.eval.pathway_rows = 4, 2, 6
  train.train(config, str(tmp_path), devices=jax.devices()[:2])
  logged = [m for m in read_metrics(str(tmp_path)) if 'monitor/stdlib_code/pathway_distance' in m]
  assert [m['step'] for m in logged] == [2, 4]
  for line in logged:
    for task in ('stdlib_code', 'stdlib_prose'):
      assert 0 < line[f'monitor/{task}/pathway_distance'] < 1
      assert -1 <= line[f'monitor/{task}/pathway_consistency'] <= 1  # 2 MoE layers


@pytest.mark.parametrize('rows, experts', [(1, 4), (4, 0)])
def test_the_monitor_needs_two_rows_of_a_moe_model(data_dir, rows, experts):
  config = test_moe._moe_config(data_dir, data=1)
  config.eval.pathway_rows, config.model.moe_experts = rows, experts
  with pytest.raises(errors.UserError, match=f'eval.pathway_rows={rows}: the pathway monitor'):
    config_lib.validate(config, '/tmp/unused', jax.devices()[:1])
