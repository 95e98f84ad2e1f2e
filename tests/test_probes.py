"""Knowledge-injection probes: config checks, which batches hold the probe, the tracked gap, and
the power-law forgetting fit."""

import jax
import ml_collections
import numpy as np
import pytest

from research import errors, train

from research.analysis import forgetting, report
from research.data import pipeline
from tests.test_train import read_metrics, tiny_config

# The probe and its control are both training documents, so the holdout of validation problems
# plays no part; without it these are the documents the thresholds below were set on.
PROBE_TASK = {'source': 'arithmetic', 'seed': 5, 'num_documents': 200, 'holdout': 0.0}


def probe_config(data_dir, **probe):
  config = tiny_config(data_dir, data=1)
  config.data.tasks = ml_collections.ConfigDict({'arith_probe': PROBE_TASK})
  config.data.probes = ml_collections.ConfigDict(
      {'facts': {'task': 'arith_probe', 'documents': 16, **probe}})
  return config


def test_the_probe_takes_the_first_rows_of_the_batches_of_its_exposures(data_dir):
  config = probe_config(data_dir, at_step=2, times=2, every=2)
  data = pipeline.TrainData(config.data, config.train.batch_size, config.seed, config.train.steps)
  probe, = data.probes
  assert probe.spec.steps == (2, 4)
  rows = len(probe.rows['targets'])
  assert 1 <= rows < config.train.batch_size
  for step in range(config.train.steps):
    batch = data.batch(step)
    holds = np.array_equal(batch['targets'][:rows], probe.rows['targets'])
    assert holds == (step in (2, 4)), step
  # The control is the next 16 documents: disjoint from the probe's.
  probe_docs = set(np.unique(probe.rows['documents'])) - {-1}
  control_docs = set(np.unique(probe.control_rows['documents'])) - {-1}
  assert len(probe_docs) == len(control_docs) == 16


@pytest.mark.parametrize('probe, message', [
    ({'at_step': 2, 'times': 3, 'every': 2}, 'last exposure, step 6'),
    ({'at_step': 2, 'times': 0}, 'data.probes.facts.times=0'),
    ({'at_step': 2, 'documents': 150}, 'fewer than the 300'),
    ({'times': 2}, 'exactly one of at_step or at_fraction'),
])
def test_bad_probes_are_named(data_dir, probe, message):
  config = probe_config(data_dir, **probe)
  with pytest.raises(errors.UserError, match=message):
    pipeline.TrainData(config.data, config.train.batch_size, config.seed, config.train.steps)


def test_a_probe_task_in_the_mixture_is_refused(data_dir):
  config = probe_config(data_dir, at_step=2)
  config.data.mixture = ml_collections.ConfigDict({'stdlib_prose': 0.5, 'arith_probe': 0.5})
  with pytest.raises(errors.UserError, match="data.probes.facts.task='arith_probe' is in the"):
    pipeline.mixture_plan(config.data, config.train.batch_size, config.train.steps)


def test_the_gap_opens_at_the_exposures(data_dir, tmp_path):
  config = probe_config(data_dir, at_step=3, times=4, every=1)
  config.train.steps, config.eval.every, config.schedule.peak_lr = 9, 1, 3e-3
  train.train(config, str(tmp_path), devices=jax.devices()[:1])
  gaps = {m['step']: m['eval/probe/facts/gap'] for m in read_metrics(str(tmp_path))
          if 'eval/probe/facts/gap' in m}
  assert sorted(gaps) == list(range(1, 10))
  # After the exposures of steps 3 to 6, which the evaluations after them log as steps 4 to 7:
  assert gaps[7] > max(3 * gaps[3], gaps[3] + 0.03)


def test_the_forgetting_fit_recovers_a_power_law_above_the_baseline():
  rng = np.random.default_rng(0)
  steps = np.arange(0, 1001, 10)
  t = np.maximum(steps - 200, 1)
  # The probe documents start 0.05 nats harder than the control; the exposures at steps 100 and
  # 200 add 0.4 t^-0.35.
  gaps = -0.05 + np.where(steps > 200, 0.4 * t ** -0.35 * np.exp(rng.normal(0, 0.05, len(t))),
                          np.where(steps > 100, 0.3, 0.0))
  fit = forgetting.forgetting_fit(steps, gaps, exposures=(100, 200))
  assert fit['baseline'] == pytest.approx(-0.05)  # steps 60 to 100
  assert fit['points'] == 80  # the evaluations after step 200
  assert fit['b'] == pytest.approx(0.35, abs=0.03)
  assert fit['a'] == pytest.approx(0.4, rel=0.15)
  assert fit['r2'] > 0.9 and fit['r2_exponential'] < fit['r2'] - 0.1  # a power law
  assert fit['after'] == pytest.approx(0.4 * 10 ** -0.35, rel=0.1)  # t = 10 at step 210
  assert fit['final'] == pytest.approx(0.4 * 800 ** -0.35, rel=0.15)
  short = forgetting.forgetting_fit(steps[:22], gaps[:22], exposures=(100, 200))
  assert short['points'] == 1 and short['b'] is None  # one evaluation after: no fit
  exponential = -0.05 + np.where(steps > 200, 0.4 * np.exp(-t / 150),
                                 np.where(steps > 100, 0.3, 0.0))
  fit = forgetting.forgetting_fit(steps, exponential, exposures=(100, 200))
  assert fit['tau'] == pytest.approx(150) and fit['r2_exponential'] == pytest.approx(1.0)
  assert fit['r2'] < 0.9
  assert forgetting.forgetting_fit(steps[:21], gaps[:21], exposures=(100, 200)) is None


def test_the_report_tabulates_each_probe_and_its_forgetting_fit():
  config = {'train': {'steps': 100}, 'data': {'probes': {'facts': {
      'task': 'arith_probe', 'documents': 4, 'at_step': 20, 'times': 2, 'every': 10}}}}
  # Exposures at steps 20 and 30 over a baseline of -0.1; the added gap is 0.8 / t, t the steps
  # since step 30.
  added = {s: 0.8 / (s - 30) for s in (31, 32, 34, 38, 46, 100)}
  gaps = {10: -0.1, 20: -0.1, 30: 0.4, **{s: g - 0.1 for s, g in added.items()}}
  run = report.Run('r', 'r', config, {s: {'eval/probe/facts/gap': g} for s, g in gaps.items()})
  table = report.forgetting_table([run, report.Run('none', 'none', {}, {})])
  header, _, row = [[c.strip() for c in line.strip('|').split('|')] for line in table.split('\n')]
  assert header[:5] == ['arm', 'n', 'probe', 'exposures', 'last exposure']
  assert row[:11] == ['r', '1', 'facts', '2', '30', '-0.1', '0.8', '0.01143', '0.01429', '1', '1']
  assert float(row[11]) < 0.9  # 1/t is no exponential
  # A second seed whose added gap is twice as large: one row, mean ± standard error over the two.
  twice = {s: {'eval/probe/facts/gap': 2 * g + 0.1 if s > 30 else g} for s, g in gaps.items()}
  seeded = [report.Run(f'seed={seed}', f'seed={seed}', {**config, 'seed': seed}, metrics)
            for seed, metrics in ((0, run.metrics), (1, twice))]
  header, _, row = [[c.strip() for c in line.strip('|').split('|')]
                    for line in report.forgetting_table(seeded).split('\n')]
  assert row[1:6] == ['2', 'facts', '2', '30', '-0.1 ± 0']
  assert row[6] == '1.2 ± 0.4'  # added after: 0.8 and 1.6
  assert row[8].startswith('0.01429 ± ')  # retained: the same share in both seeds
