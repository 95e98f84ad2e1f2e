"""experiments/icl_diversity.py: every point of both sweeps is a valid run with the task parameters
its docstring states; research/analysis/icl.py tables runs against the two estimators."""

import json

import jax
import pytest

from experiments import icl_diversity as experiment
from research import config as config_lib
from research.analysis import icl, report, sweep
from research.data import tasks
from research.data.synthetic import icl_regression


def _runs(study):
  config = experiment.get_config(study)
  return config, [sweep.point_config(config, point)
                  for point in sweep.points(experiment.get_sweep(study), config)]


def test_every_regression_point_is_a_valid_run_with_its_pool(tmp_path):
  config, runs = _runs(experiment.REGRESSION)
  assert len(runs) == len(experiment.NUM_TASKS) * len(experiment.SEEDS) == 15
  pools = {}
  for run in runs:
    config_lib.validate(run, str(tmp_path / 'run'), jax.devices())
    spec = run.data.tasks[experiment.REGRESSION].to_dict()
    assert spec['seed'] == 0 and dict(run.data.mixture) == {experiment.REGRESSION: 1.0}
    assert run.data.tasks[experiment.REGRESSION_POOL].to_dict() == {**spec, 'validation': 'pool'}
    assert run.eval.tasks == (experiment.REGRESSION_POOL,)
    pool = icl_regression.task_pools(0, num_tasks=spec['num_tasks'])['pool']
    pools[spec['num_tasks']] = len(pool)
  assert pools == {1: 1, 4: 4, 16: 16, 64: 64, 0: 91}
  spec = tasks.spec_from_config('r', config.data.tasks[experiment.REGRESSION].to_dict())
  assert {d['task'] for d in spec.documents('validation')} <= {
      ','.join(f'{v:+d}' for v in w) for w in icl_regression.task_pools(0)['held_out'].tolist()}


def test_every_classification_point_is_a_valid_run(tmp_path):
  _, runs = _runs(experiment.CLASSIFICATION)
  assert len(runs) == 4 * len(experiment.SEEDS)
  arms = set()
  for run in runs:
    config_lib.validate(run, str(tmp_path / 'run'), jax.devices())
    spec = run.data.tasks[experiment.CLASSIFICATION]
    arms.add((spec.burstiness, spec.zipf))
    assert run.eval.tasks == (experiment.CLASS_WEIGHTS,)
    assert run.data.tasks[experiment.CLASS_WEIGHTS].validation == 'weights'
  assert arms == {(0.9, 0.0), (0.9, 1.0), (0.0, 0.0), (0.0, 1.0)}


def test_an_unknown_study_fails():
  with pytest.raises(ValueError, match='icl_diversity.py:ridge: choose one of'):
    experiment.get_config('ridge')


def test_the_regression_table_has_the_model_and_both_estimators():
  config = experiment.get_config().to_dict()
  runs = []
  for k, accuracy in ((1, 0.2), (1, 0.3), (0, 0.5)):
    config['data']['tasks']['regression']['num_tasks'] = k
    metrics = {'eval/regression/answer_accuracy': accuracy,
               'eval/regression/answer_accuracy/difficulty_8': accuracy,
               'eval/regression_pool/answer_accuracy': 1.0}
    runs.append(report.Run(f'k{k}', '', json.loads(json.dumps(config)), {10: metrics}))
  runs[1].config['seed'] = 1
  lines = icl.regression_table(runs).splitlines()
  assert len(lines) == 2 + 2 * 3 + 1
  assert '| model | 0.25 ± 0.05 |' in lines[2] and '| - |' in lines[2]
  assert '| model, pool tasks | 1 ± 0 |' in lines[3]
  assert 'Bayes, training prior' in lines[4] and lines[-1].startswith('| any | ridge |')
  assert icl.regression_table([report.Run('plain', '', {'data': {'tasks': {}}}, {})]) == ''
