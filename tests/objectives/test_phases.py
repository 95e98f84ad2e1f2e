"""Objective phases: `config.phases.NAME.objective` switches the objective mid-run."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from experiments import base
from research import errors, train
from research.data import pipeline, vocabularies
from research.objectives import registry

VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=100)


def _config(data_dir='', steps=100, **phases):
  config = base.get_config()
  config.data.store_dir, config.data.seq_len, config.data.extra_ids = data_dir, 128, 100
  config.train.steps = steps
  config.phases = ml_collections.ConfigDict(
      {name: ml_collections.ConfigDict(phase) for name, phase in phases.items()})
  return config


def test_each_phase_is_the_runs_objective_with_its_changes():
  config = _config(prefix={'at_fraction': 0.5, 'objective': {'name': 'prefix_lm'}},
                   rewarm={'at_step': 30, 'schedule': {'name': 'constant'}},  # schedule only
                   mlm={'at_step': 80, 'objective': {'name': 'mlm', 'mlm': {'rate': 0.3}}})
  phases = registry.objective_phases(config, VOCABULARY)
  assert [(start, objective.name) for start, objective in phases] == [
      (0, 'causal_lm'), (50, 'prefix_lm'), (80, 'mlm')]
  assert phases[1][1] == registry.make_objective(_prefix_lm(config), VOCABULARY)
  assert phases[2][1].mlm.rate == 0.3 and phases[2][1].mlm.mask == 0.8  # merged into objective.*
  assert config.objective.name == 'causal_lm' and config.objective.mlm.rate == 0.15  # untouched


def test_a_phase_gives_its_own_denoisers():
  denoisers = {'R': {'mean_span': 3.0, 'rate': 0.15, 'prefix': False, 'mode': '', 'weight': 1.0}}
  config = _config(span={'at_step': 10, 'objective': {'name': 'span_corruption',
                                                      'denoisers': denoisers}})
  (_, span), = registry.objective_phases(config, VOCABULARY)[1:]
  assert [(d.mean_span, d.rate) for d in span.denoisers] == [(3.0, 0.15)]


def _prefix_lm(config):
  single = _config(steps=config.train.steps)
  single.objective.name = 'prefix_lm'
  return single


@pytest.mark.parametrize('objective, message', [
    ({'distill': {'weight': 0.1}}, r"phases.p.objective sets \['distill'\], which hold for the "
                                   r'whole run'),
    ({'nmae': 'prefix_lm', 'mlm': {'rat': 0.3}},
     r"phases.p.objective sets \['objective.mlm.rat', 'objective.nmae'\], which are not "
     r'objective.\* keys'),
    ({'mode_tokens': 1}, r"phases.p.objective: Could not override field 'mode_tokens'"),
    ({'name': 'ul3'}, r"phases.p.objective: objective.name='ul3' is not an objective"),
    ({'name': 'mlm', 'mlm': {'rate': 1.5}}, r"phases.p.objective: .*objective.mlm.rate"),
])
def test_a_bad_phase_objective_is_named(objective, message):
  with pytest.raises(errors.UserError, match=message):
    registry.objective_phases(_config(p={'at_step': 10, 'objective': objective}), VOCABULARY)


def test_two_objective_phases_cannot_start_together():
  config = _config(a={'at_step': 50, 'objective': {'name': 'prefix_lm'}},
                   b={'at_fraction': 0.5, 'objective': {'name': 'span_corruption'}})
  with pytest.raises(errors.UserError, match='Two phases that change the objective start at the '
                                             r'same step \(\[50, 50\]\)'):
    registry.objective_phases(config, VOCABULARY)


def test_a_phased_batch_is_the_batch_of_a_run_with_that_phases_objective(data_dir):
  """The mixture sampler is the objective's alone to leave: before the switch the batch is the
  causal run's, from it on that of a run trained with prefix LM from the start (its rows packed
  for prefix LM)."""
  config = _config(data_dir, prefix={'at_step': 5, 'objective': {'name': 'prefix_lm'}})
  (_, objective), *phases = registry.objective_phases(config, VOCABULARY)
  phased = pipeline.TrainData(config.data, 8, 0, 100, objective, phases=phases)
  causal = pipeline.TrainData(config.data, 8, 0, 100, objective)
  prefix_lm = pipeline.TrainData(config.data, 8, 0, 100,
                                 registry.make_objective(_prefix_lm(config), VOCABULARY))
  for step, single in ((0, causal), (4, causal), (5, prefix_lm), (9, prefix_lm)):
    batch, expected = phased.batch(step), single.batch(step)
    assert sorted(batch) == sorted(expected)
    for key in batch:
      np.testing.assert_array_equal(batch[key], expected[key], err_msg=f'{key} at step {step}')
  assert 'prefix' not in phased.batch(4) and phased.batch(5)['prefix'].any()
  assert phased.phase_at(4).objective.name == 'causal_lm'
  assert phased.phase_at(99).objective.name == 'prefix_lm'


def _losses(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return {line['step']: line['loss'] for line in map(json.loads, f) if 'loss' in line}


def test_a_run_trains_causally_then_as_a_prefix_lm(data_dir, tmp_path):
  """Cross-adaptation in one run: its first steps are a causal run's, step for step; from the
  switch the loss is on the targets of prefix-LM examples, whose bidirectional prefix the
  causal model never read."""
  def run(name, **phases):
    config = _config(data_dir, steps=4, **phases)
    config.model.update(d_model=32, num_layers=1, num_heads=2, head_dim=16, mlp_dim=64)
    config.train.update(batch_size=8, log_every=1)
    config.eval.update(every=1000, batches=1, batch_size=8)
    config.checkpoint.every = 1000
    train.train(config, str(tmp_path / name), devices=jax.devices()[:1])
    return _losses(str(tmp_path / name))

  causal = run('causal')
  phased = run('phased', prefix={'at_step': 2, 'objective': {'name': 'prefix_lm'}})
  assert sorted(phased) == [1, 2, 3, 4]
  assert [phased[s] for s in (1, 2)] == [causal[s] for s in (1, 2)]
  assert all(abs(phased[s] - causal[s]) > 1e-3 for s in (3, 4))


def test_a_prompt_is_read_as_the_run_was_trained_at_its_last_step():
  config = _config()
  assert not registry.bidirectional_prompt(config)
  config.phases = ml_collections.ConfigDict(
      {'adapt': ml_collections.ConfigDict({'at_step': 90, 'objective': {'name': 'prefix_lm'}})})
  assert registry.bidirectional_prompt(config)  # causal, then adapted to a prefix LM
  config.objective.prefix_attention = False  # CodeGen2: denoising with causal attention
  assert not registry.bidirectional_prompt(config)
  config.phases.adapt.objective.prefix_attention = True
  assert registry.bidirectional_prompt(config)
  config.model.architecture = 'encoder_decoder'  # the encoder reads it, not the decoder
  assert not registry.bidirectional_prompt(config)


def test_eval_formats_are_read_as_the_last_phase_trains():
  """A causal model adapted to prefix LM is evaluated on prefix LM with a bidirectional prefix
  (and its [S2S] mode token); the causal baseline reads the same format causally."""
  causal = registry.make_objective(_config(), VOCABULARY)
  prefix_lm = registry.make_objective(_prefix_lm(_config()), VOCABULARY)
  adapted = registry.eval_objectives(causal, ('S_50',), VOCABULARY, prefix_lm)['S_50']
  baseline = registry.eval_objectives(causal, ('S_50',), VOCABULARY)['S_50']
  assert adapted.prefix_attention and adapted.mode_ids == prefix_lm.mode_ids
  assert not baseline.prefix_attention
  assert [d.name for d in adapted.denoisers] == [d.name for d in baseline.denoisers] == ['S_50']


def test_a_phase_back_to_an_earlier_objective_reads_its_rows(data_dir):
  """Causal, prefix LM, causal again: the third phase reuses the first's packed rows (packed once)
  and its batches are the causal run's."""
  config = _config(data_dir, prefix={'at_step': 3, 'objective': {'name': 'prefix_lm'}},
                   back={'at_step': 6, 'objective': {'name': 'causal_lm'}})
  (_, objective), *phases = registry.objective_phases(config, VOCABULARY)
  phased = pipeline.TrainData(config.data, 8, 0, 100, objective, phases=phases)
  causal = pipeline.TrainData(config.data, 8, 0, 100, objective)
  assert phased.phase_at(7).rows is phased.phase_at(0).rows
  assert phased.phase_at(4).rows is not phased.phase_at(0).rows
  for key, value in causal.batch(7).items():
    np.testing.assert_array_equal(phased.batch(7)[key], value)
