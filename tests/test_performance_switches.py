"""The performance switches change speed and memory, not the training run: the same losses, to
float tolerance, over a few optimizer steps with each switch on and off."""

import jax
import numpy as np
import pytest

from launch import bench
from research import train
from tests.test_train import tiny_config

PRESET = bench.Preset('test', d_model=64, num_layers=2, num_heads=2, mlp_dim=128, seq_len=64,
                      batch_size=8, steps=1)


def _losses(config, steps=3):
  """Training losses of `steps` steps on one random batch, from the init."""
  trainer = train.Trainer(config, jax.devices()[:1])
  state = trainer.init_state()
  batch = trainer.place(bench.random_batch(PRESET))
  losses = []
  for step in range(steps):
    state, metrics = trainer.step(state, batch, train.step_rng(config.seed, step))
    losses.append(float(metrics['loss']))
  return losses


def _config(data_dir, **model):
  config = tiny_config(data_dir, data=1)
  config.model.vocab_size = PRESET.vocab_size
  config.model.update(model)
  return config


@pytest.mark.parametrize('remat', ['none', 'full', 'dots'])
def test_remat_policies_train_alike(data_dir, remat):
  reference = _losses(_config(data_dir, remat='dots_no_batch'))  # the default
  losses = _losses(_config(data_dir, remat=remat))
  assert reference[-1] < reference[0] - 0.1  # the steps train
  np.testing.assert_allclose(losses, reference, rtol=1e-5)


def test_unscanned_layers_train_alike(data_dir):
  """Unscanned layers (a module per layer) start from the scanned init, unstacked
  (train.make_init_fn), so flipping scan_layers keeps the run."""
  reference = _losses(_config(data_dir))
  losses = _losses(_config(data_dir, scan_layers=False))
  np.testing.assert_allclose(losses, reference, rtol=1e-5)


def test_a_chunked_loss_trains_alike(data_dir):
  """train.loss_chunk takes the output layer and cross-entropy 16 of the 64 positions at a time:
  the same losses over 3 steps, each after the updates before it (float32 rounding apart)."""
  reference = _losses(_config(data_dir))
  config = _config(data_dir)
  config.train.loss_chunk = 16
  np.testing.assert_allclose(_losses(config), reference, rtol=1e-5)
