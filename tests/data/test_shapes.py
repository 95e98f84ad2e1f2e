"""Phases that change the batch's shape: `phases.NAME.seq_len` and `phases.NAME.batch_size`
(research/data/shapes.py; sequence-length warm-up, arXiv 2108.06084)."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from experiments import base
from research import config as config_lib, errors, train
from research.data import pipeline, shapes, vocabularies
from research.objectives import registry

VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=100)


def _config(data_dir='', seq_len=128, batch_size=4, **phases):
  """tests/objectives/test_phases.py's config (its stores, rows and compiled steps)."""
  config = base.get_config()
  config.data.store_dir, config.data.seq_len, config.data.extra_ids = data_dir, seq_len, 100
  config.train.steps, config.train.batch_size = 100, batch_size
  config.phases = ml_collections.ConfigDict(
      {name: ml_collections.ConfigDict(phase) for name, phase in phases.items()})
  return config


def _train_data(config):
  (_, objective), *phases = registry.objective_phases(config, VOCABULARY)
  return pipeline.TrainData(config.data, config.train.batch_size, config.seed, config.train.steps,
                            objective, phases=phases, shapes=shapes.shape_phases(config))


def test_a_length_phase_and_an_objective_phase_combine():
  """The objective of each step is the last objective phase's at the last shape phase's length."""
  config = _config(short={'at_step': 0, 'seq_len': 64}, prefix={'at_step': 10, 'objective': {
      'name': 'prefix_lm'}}, full={'at_fraction': 0.25, 'seq_len': 128, 'batch_size': 8})
  assert [(start, o.name, o.seq_len) for start, o in registry.objective_phases(config, VOCABULARY)
          ] == [(0, 'causal_lm', 128), (0, 'causal_lm', 64), (10, 'prefix_lm', 64),
                (25, 'prefix_lm', 128)]
  assert [(s.start, s.seq_len, s.batch_size) for s in shapes.shape_phases(config)] == [
      (0, 128, 4), (0, 64, 8), (25, 128, 8)]


def test_replay_keeps_its_share_of_a_phases_batch():
  config = _config(short={'at_step': 0, 'seq_len': 64}, full={'at_step': 5, 'seq_len': 128})
  config.data.replay.fraction = 0.25
  config.data.replay.mixture = ml_collections.ConfigDict({'stdlib_code': 1.0})
  plan = pipeline.mixture_plan(config.data, config.train.batch_size, config.train.steps)
  assert pipeline.stream_rows(config.data, plan, shapes.shape_phases(config)) == [
      [(0, 6), (5, 3)], [(0, 2), (5, 1)]]  # (first step, rows) of the main stream, of replay
  config.phases.full.batch_size = 2
  with pytest.raises(errors.UserError, match=r'phases.full.batch_size=2: data.replay.fraction='
                                             r'0.25 must .* give at least one row'):
    pipeline.stream_rows(config.data, plan, shapes.shape_phases(config))


def _one_task(config):
  config.data.mixture = {'stdlib_prose': 1.0}
  return config


def test_a_length_phase_trains_on_the_documents_packed_shorter_at_equal_tokens(data_dir):
  """64 tokens a row for steps 0-4, twice the rows: the batches of a run at 64 throughout. From
  step 5 the rows are 128 long again and the run goes on from the tokens it read, so its batches
  are those of a run at 128 throughout (one task: every row is the next of its packing)."""
  config = _one_task(_config(data_dir, short={'at_step': 0, 'seq_len': 64},
                             full={'at_step': 5, 'seq_len': 128}))
  phased = _train_data(config)
  assert [(p.start, p.objective.seq_len, p.batch_size) for p in phased.phases] == [
      (0, 128, 4), (0, 64, 8), (5, 128, 4)]  # the run's, replaced at step 0 by the short phase's
  assert {recipe.row_len for _, recipe in pipeline.row_stores(config)} == {64, 128}
  short, full = (_train_data(_one_task(_config(data_dir, 64, 8))),
                 _train_data(_one_task(_config(data_dir))))
  for step, single, shape in ((0, short, (8, 64)), (4, short, (8, 64)), (5, full, (4, 128)),
                              (9, full, (4, 128))):
    batch = phased.batch(step)
    assert batch['targets'].shape == shape
    for key, value in single.batch(step).items():
      np.testing.assert_array_equal(batch[key], value, err_msg=f'{key} at step {step}')
  assert phased.epochs_before(9) == full.epochs_before(9)
  part = phased.batch(2, rows=np.array([1, 6]))  # a host's rows of a phase's batch
  np.testing.assert_array_equal(part['targets'], short.batch(2)['targets'][[1, 6]])


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return {line['step']: line for line in map(json.loads, f) if 'loss' in line}


def test_a_run_with_length_phases_trains_logs_their_tokens_and_resumes_exactly(data_dir,
                                                                               tmp_path):
  """Steps 0-1 on 8 rows of 64 tokens (half the run's tokens: a batch size of its own), 2-3 on
  the run's 8 rows of 128: the step compiles for each shape, the loss is finite, `tokens_seen`
  counts each phase's tokens, and a run stopped inside the short phase resumes to the losses of
  the uninterrupted run."""
  config = _config(data_dir, 128, 8, short={'at_step': 0, 'seq_len': 64, 'batch_size': 8},
                   full={'at_step': 2, 'seq_len': 128})
  config.model.update(d_model=32, num_layers=1, num_heads=2, head_dim=16, mlp_dim=64)
  config.train.update(steps=4, log_every=1)
  config.eval.update(every=1000, batches=1, batch_size=8)
  config.checkpoint.every = 1000
  devices = jax.devices()[:1]
  train.train(config, str(tmp_path / 'whole'), devices=devices)
  whole = _metrics(str(tmp_path / 'whole'))
  assert all(np.isfinite(line['loss']) for line in whole.values())
  assert [whole[step]['tokens_seen'] for step in (1, 2, 3, 4)] == [512, 1024, 2048, 3072]
  train.train(config, str(tmp_path / 'resumed'), stop_after=1, devices=devices)
  train.train(config, str(tmp_path / 'resumed'), devices=devices)
  resumed = _metrics(str(tmp_path / 'resumed'))
  assert {step: line['loss'] for step, line in resumed.items()} == {
      step: line['loss'] for step, line in whole.items()}
  assert resumed[4]['tokens_seen'] == 3072


@pytest.mark.parametrize('phase, mesh, message', [
    ({'seq_len': 256}, 1, r'phases.p.seq_len=256 is longer than data.seq_len=128, the model\'s '
                          r'longest row .* set it to at most 128'),
    ({'seq_len': 0}, 1, r'phases.p.seq_len=0 must be a positive integer'),
    ({'seq_len': 96}, 1, r'phases.p.seq_len=96 does not divide the 512 tokens of a step '
                         r'\(train.batch_size=4 x data.seq_len=128\) into whole rows; use a '
                         r'length that does \(e.g. 64\), or set phases.p.batch_size'),
    ({'seq_len': 16, 'batch_size': 6}, 4, r'phases.p.batch_size=6 must be divisible by '
                                          r'train.micro_batches \(1\) times the data-parallel '
                                          r'size \(4 .*use a multiple of 4'),
    ({'seq_len': 16, 'objective': {'name': 'prefix_lm'}}, 1,
     r'phases.p starts at step 0, outside the run \(steps 1 to 99'),
])
def test_a_bad_phase_shape_is_named(phase, mesh, message, tmp_path):
  config = _config(p={'at_step': 0, **phase})
  config.mesh.data = mesh
  with pytest.raises(errors.UserError, match=message):
    config_lib.validate(config, str(tmp_path), jax.devices()[:mesh])
