"""The performance switches change speed and memory, not the training run: the same losses, to
float tolerance, over a few optimizer steps with each switch on and off."""

import jax
import numpy as np
import pytest
from flax import linen as nn

from launch import bench
from research import train
from tests.test_model import _unscanned
from tests.test_train import tiny_config

PRESET = bench.Preset('test', d_model=64, num_layers=2, num_heads=2, mlp_dim=128, seq_len=64,
                      batch_size=8, steps=1)


def _losses(config, steps=3, params=None):
  """Training losses of `steps` steps on one random batch, from `params` (default the init)."""
  trainer = train.Trainer(config, jax.devices()[:1])
  state = trainer.init_state()
  if params is not None:
    state = state.replace(params=params, opt_state=trainer.fresh_opt_state(params))
  batch = trainer.place(bench.random_batch(PRESET))
  losses = []
  for step in range(steps):
    state, metrics = trainer.step(state, batch, train.step_rng(config.seed, step))
    losses.append(float(metrics['loss']))
  return losses, state


def _config(data_dir, **model):
  config = tiny_config(data_dir, data=1)
  config.model.vocab_size = PRESET.vocab_size
  config.model.update(model)
  return config


@pytest.mark.parametrize('remat', ['none', 'full', 'dots'])
def test_remat_policies_train_alike(data_dir, remat):
  reference, _ = _losses(_config(data_dir, remat='dots_no_batch'))  # the default
  losses, _ = _losses(_config(data_dir, remat=remat))
  assert reference[-1] < reference[0] - 0.1  # the steps train
  np.testing.assert_allclose(losses, reference, rtol=1e-5)


def test_unscanned_layers_train_alike_from_the_same_weights(data_dir):
  """Scanned layers keep one stacked parameter per weight, unscanned ones a module per layer; the
  two draw their random init differently, so the unscanned run starts from the scanned weights."""
  reference, state = _losses(_config(data_dir), steps=0)
  reference, _ = _losses(_config(data_dir))
  unscanned = _unscanned(nn.meta.unbox(state.params), 2)
  losses, _ = _losses(_config(data_dir, scan_layers=False), params=unscanned)
  np.testing.assert_allclose(losses, reference, rtol=1e-5)
