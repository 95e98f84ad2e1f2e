"""Masked LM (BERT): the selection rate, the 80/10/10 rule, the bidirectional layout, training."""

import json
import os

import jax
import numpy as np
import pytest

from experiments import base
from research import errors, train
from research.data import pipeline, vocabularies
from research.objectives import masked_lm, registry

VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=8)
MASK_ID = vocabularies.control_token_id(VOCABULARY, '[MASK]')


@pytest.mark.parametrize('rate', [0.15, 0.3])
def test_the_stated_share_is_selected_and_replaced_by_the_80_10_10_rule(rate):
  rng = np.random.default_rng(0)
  targets = rng.integers(3, 259, 200_000)
  real = np.ones(len(targets), bool)
  real[:1000] = False  # padding is never selected
  random_ids = np.arange(3, 259)
  inputs, selected = masked_lm.corrupt(targets, real, np.random.default_rng(1), rate, 0.8, 0.1,
                                       MASK_ID, random_ids)
  assert not selected[:1000].any()
  np.testing.assert_allclose(selected[1000:].mean(), rate, atol=0.004)
  assert np.array_equal(inputs[~selected], targets[~selected])  # unselected tokens untouched
  chosen_inputs, chosen_targets = inputs[selected], targets[selected]
  masked = chosen_inputs == MASK_ID
  changed = ~masked & (chosen_inputs != chosen_targets)
  np.testing.assert_allclose(masked.mean(), 0.8, atol=0.01)
  # A random replacement draws the original token 1 time in 256.
  np.testing.assert_allclose(changed.mean(), 0.1 * 255 / 256, atol=0.006)
  assert set(np.unique(chosen_inputs[changed])) <= set(random_ids.tolist())


def _config(data_dir, **mlm):
  config = base.get_config()
  config.objective.name = 'mlm'
  config.objective.mlm.update(mlm)
  config.data.store_dir, config.data.seq_len, config.data.extra_ids = data_dir, 64, 8
  config.model.update(d_model=64, num_layers=1, num_heads=2, head_dim=32, mlp_dim=128)
  config.train.update(steps=30, batch_size=8, log_every=10)
  config.schedule.update(peak_lr=3e-3, warmup_steps=3)
  config.eval.update(every=30, batches=1, batch_size=8)
  config.checkpoint.every = 30
  return config


def test_examples_read_each_segment_bidirectionally_and_weigh_the_selected_tokens(data_dir):
  config = _config(data_dir, rate=0.3)
  objective = registry.make_objective(config, VOCABULARY)
  assert set(objective.mlm.random_ids) == set(range(3, 259))  # the 256 bytes, no special id
  data = pipeline.TrainData(config.data, 8, 0, 30, objective)
  batch = data.batch(0)
  real = batch['segment_ids'] > 0
  assert np.array_equal(batch['prefix'], real)
  selected = batch['weights'] > 0
  assert np.all(real[selected]) and 0.25 < selected.sum() / real.sum() < 0.35
  # Position t predicts its own token: where not selected, the input is the target itself.
  assert np.array_equal(batch['inputs'][~selected & real], batch['targets'][~selected & real])
  assert (batch['inputs'][selected] == MASK_ID).mean() > 0.6
  # A row's draws follow its example id, whichever batch it is in and wherever.
  rows = {'targets': batch['targets'], 'segment_ids': batch['segment_ids'],
          'positions': batch['positions']}
  ids = np.arange(100, 108)
  forward = objective.examples(rows, ids, seed=5)
  backward = objective.examples({k: v[::-1] for k, v in rows.items()}, ids[::-1], seed=5)
  for key in ('inputs', 'weights', 'prefix'):
    assert np.array_equal(forward[key], backward[key][::-1])
  assert not np.array_equal(forward['inputs'], objective.examples(rows, ids, seed=6)['inputs'])


def test_an_encoder_only_model_trains_on_masked_tokens(data_dir, tmp_path):
  train.train(_config(data_dir, rate=0.3), str(tmp_path), devices=jax.devices()[:1])
  with open(os.path.join(tmp_path, 'metrics.jsonl')) as f:
    metrics = {}
    for line in f:
      record = json.loads(line)
      metrics.setdefault(record['step'], {}).update(record)
  assert metrics[30]['loss'] < 0.8 * metrics[10]['loss']
  assert metrics[30]['eval/stdlib_prose/loss'] < 4.5  # ln(267) = 5.6 at initialisation


@pytest.mark.parametrize('overrides, fragment', [
    ({'objective.mlm.rate': 0.0}, r'objective\.mlm\.rate=0\.0 must be in \(0, 1\]'),
    ({'objective.mlm.mask': 0.8, 'objective.mlm.random': 0.3},
     r'objective\.mlm\.mask=0\.8 and random=0\.3 must be >= 0 with a sum <= 1'),
    ({'model.architecture': 'encoder_decoder'},
     r"objective\.name='mlm' trains an encoder-only model"),
    ({'data.extra_ids': 2}, r'data\.extra_ids=2 is too few for the control token \[MASK\]'),
])
def test_bad_settings_are_named(data_dir, overrides, fragment):
  config = _config(data_dir)
  for key, value in overrides.items():
    section, *middle, field = key.split('.')
    node = config[section]
    for part in middle:
      node = node[part]
    node[field] = value
  vocabulary = vocabularies.make_vocabulary('byte', config.data.extra_ids)
  with pytest.raises(errors.UserError, match=fragment):
    registry.make_objective(config, vocabulary)
