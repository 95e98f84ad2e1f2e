"""The instability monitors of train.monitor_logits (Wortsman et al. 2023, arXiv 2309.14322): the
step's values against a direct computation from the parameters, with and without a scanned stack,
over micro-batches and with a chunked loss, and an unchanged step when they are off; and the
instability experiment's sweep."""


import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from experiments import base
from research import train
from research.model import transformer

MODEL = dict(vocab_size=128, d_model=32, num_layers=2, num_heads=2, head_dim=16, mlp_dim=64,
             init_std=0.3)  # a large init: logits far from 0, so the numbers say something


def _config(**train_overrides):
  config = base.get_config()
  config.model.update(MODEL)
  config.train.update(train_overrides)
  return config


def _batch():
  """Two rows of 16: two documents and padding, so masks and weights matter."""
  rng = np.random.default_rng(0)
  segments = np.array([[1] * 6 + [2] * 7 + [0] * 3, [1] * 16], np.int32)
  positions = np.array([list(range(6)) + list(range(7)) + [0] * 3, list(range(16))], np.int32)
  return {'inputs': rng.integers(1, 128, (2, 16)).astype(np.int32),
          'targets': rng.integers(1, 128, (2, 16)).astype(np.int32),
          'segment_ids': segments, 'positions': positions,
          'weights': (segments > 0).astype(np.float32)}


def _step(config, state=None):
  """(the initial state, the jitted train step) of `config`, with SGD (quick to compile); given a
  `state`, that one."""
  model_config = transformer.ModelConfig.from_config(config.model)
  model = transformer.make_model(model_config)
  tx = optax.sgd(1e-2)
  if state is None:
    init = train.make_init_fn(model, tx, transformer.dummy_batch(model_config, 2, 16, 16))
    state = jax.jit(lambda rng: nn.meta.unbox(init(rng)))(jax.random.key(0))
  return state, jax.jit(train.make_train_step(model, tx, config.train, dropout=False))


def _reference(params, batch):
  """(largest attention logit, mean output logit, largest |output logit|) of the unscanned model
  `params`, in numpy from each layer's attention input (its attention_norm's output); and the
  largest attention logit that model sows into `monitors`."""
  config = _config()
  config.model.scan_layers = False
  model = transformer.make_model(transformer.ModelConfig.from_config(config.model))
  logits_BLV, state = model.apply({'params': params}, batch, mutable=['intermediates', 'monitors'],
                                  capture_intermediates=lambda m, _: m.name == 'attention_norm')
  segments, positions = batch['segment_ids'], batch['positions']
  length, head_dim = segments.shape[1], MODEL['head_dim']
  mask_BLS = ((np.arange(length)[:, None] >= np.arange(length)[None, :])[None]
              & (segments[:, :, None] == segments[:, None, :]))
  angles_BLk = positions[..., None] * 10000.0 ** -(np.arange(0, head_dim, 2) / head_dim)

  def rotate(x_BLHK):
    x1, x2 = np.split(x_BLHK, 2, axis=-1)
    sin, cos = np.sin(angles_BLk)[:, :, None], np.cos(angles_BLk)[:, :, None]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

  largest = -np.inf
  for i in range(MODEL['num_layers']):
    layer = params[f'layers_{i}']['attention']
    h_BLD = np.asarray(state['intermediates'][f'layers_{i}']['attention_norm']['__call__'][0],
                       np.float64)
    q_BLHK = rotate(np.einsum('bld,dhk->blhk', h_BLD, np.asarray(layer['query'], np.float64)))
    k_BLHK = rotate(np.einsum('bld,dhk->blhk', h_BLD, np.asarray(layer['key'], np.float64)))
    logits_BHLS = np.einsum('blhk,bshk->bhls', q_BLHK, k_BLHK) / np.sqrt(head_dim)
    largest = max(largest, logits_BHLS[np.broadcast_to(mask_BLS[:, None], logits_BHLS.shape)].max())
  logits_BLV = np.asarray(logits_BLV, np.float64)
  weights_BL = batch['weights']
  mean = np.sum(logits_BLV.mean(-1) * weights_BL) / weights_BL.sum()
  return (largest, mean, np.abs(logits_BLV)[weights_BL > 0].max(),
          train.attention_logit_max(state['monitors']))


@pytest.fixture(scope='module')
def scanned():
  """The scanned model's state, and its step's state and metrics with the monitors off and on
  (over two micro-batches: the monitors combine them)."""
  batch = _batch()
  state, step = _step(_config(micro_batches=2))
  runs = {False: step(state, batch, jax.random.key(1))}
  step = _step(_config(micro_batches=2, monitor_logits=True), state)[1]
  runs[True] = step(state, batch, jax.random.key(1))
  return state, runs


def test_the_monitors_equal_a_direct_computation_with_and_without_scanned_layers(scanned):
  """The step's (scanned) and the unscanned model's, from the same parameters."""
  state, runs = scanned
  metrics = runs[True][1]
  params = transformer.unscan_params(jax.device_get(state.params),
                                     transformer.ModelConfig.from_config(_config().model))
  attention, mean, largest, unscanned_attention = _reference(params, _batch())
  assert attention > 1.0 and abs(mean) > 0.01  # numbers far from 0 and from each other
  np.testing.assert_allclose(metrics['monitor/attention_logit_max'], attention, rtol=1e-5)
  np.testing.assert_allclose(unscanned_attention, attention, rtol=1e-5)
  np.testing.assert_allclose(metrics['monitor/output_logit_mean'], mean, rtol=1e-5)
  np.testing.assert_allclose(metrics['monitor/output_logit_abs_max'], largest, rtol=1e-5)


def test_chunked_output_monitors_equal_the_whole_ones():
  rng = np.random.default_rng(3)
  x_BLD = rng.normal(size=(2, 16, 8)).astype(np.float32)
  unembed_VD = rng.normal(size=(12, 8)).astype(np.float32)
  weights_BL = _batch()['weights']
  logits_fn = lambda x_BCD: x_BCD @ unembed_VD.T
  whole = train.logit_monitors(logits_fn(x_BLD), weights_BL)
  chunked = train.chunked_logit_monitors(logits_fn, x_BLD, weights_BL, 4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), chunked, whole)
  logits_BLV = np.asarray(logits_fn(x_BLD))
  np.testing.assert_allclose(whole[0]['output_logit_sum'],
                             np.sum(logits_BLV.mean(-1) * weights_BL), rtol=1e-5)
  np.testing.assert_allclose(whole[1]['output_logit_abs_max'],
                             np.abs(logits_BLV[weights_BL > 0]).max(), rtol=1e-6)


def test_the_monitors_off_log_nothing_and_leave_the_step_unchanged(scanned):
  (off_state, off), (on_state, on) = scanned[1][False], scanned[1][True]
  assert not any(key.startswith('monitor/') for key in off)
  assert {key for key in on if key.startswith('monitor/')} == {
      'monitor/attention_logit_max', 'monitor/output_logit_mean', 'monitor/output_logit_abs_max'}
  for key in off:
    np.testing.assert_array_equal(on[key], off[key])
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(on_state.params),
               jax.device_get(off_state.params))


def test_the_instability_sweep_has_every_variant_at_every_rate():
  from experiments import instability
  config = instability.get_config()
  points = instability.get_sweep()
  arms = {}
  for point in points:
    key = (point['schedule.peak_lr'], point['model.qk_norm'], point['train.z_loss'])
    arms.setdefault(key, set()).add(point['seed'])
  variants = {(qk_norm, z_loss) for _, qk_norm, z_loss in arms}
  assert variants == {(False, 0.0), (True, 0.0), (False, 1e-4), (True, 1e-4)}
  assert sorted({lr for lr, _, _ in arms}) == list(instability.LEARNING_RATES)
  assert len(arms) == len(variants) * len(instability.LEARNING_RATES)
  for (lr, _, _), seeds in arms.items():
    assert seeds == set(instability.SEEDS if lr in instability.SEEDED_RATES else
                        instability.SEEDS[:1])
  assert len(instability.SEEDS) >= 3 and config.train.monitor_logits
