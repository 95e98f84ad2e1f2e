"""Learning-curve extrapolation and early stopping (research/analysis/learning_curve.py) and the
launch.learning_curve command."""

import json
import math

import numpy as np
import pytest

from launch import learning_curve as command
from research import errors
from research.analysis import learning_curve
from tests import commands

E, A, GAMMA, HORIZON = 1.5, 4.0, 0.5, 1000
STEPS = np.arange(10, 301, 10)


def _curve(steps):
  return E + A / np.asarray(steps, np.float64)**GAMMA


def test_each_refit_recovers_a_planted_curve_and_predicts_the_horizon():
  found = learning_curve.extrapolations(STEPS, _curve(STEPS), HORIZON)
  assert [e.points for e in found] == list(range(4, len(STEPS) + 1))
  assert [e.step for e in found] == STEPS[3:].tolist()
  for e in found:  # from the first 4 evaluations (steps 10-40) on
    np.testing.assert_allclose([e.fit.E, e.fit.A, e.fit.gamma], [E, A, GAMMA], rtol=1e-4)
    assert e.predicted == pytest.approx(E + A / math.sqrt(HORIZON), abs=1e-5)
    assert e.gain == pytest.approx(A * (e.step**-GAMMA - HORIZON**-GAMMA), abs=1e-5)


def test_stopping_point_is_the_first_evaluation_promising_less_than_the_threshold():
  found = learning_curve.extrapolations(STEPS, _curve(STEPS), HORIZON)
  # 4 (t^-0.5 - 1000^-0.5) < 0.2 from t > 150.2: the evaluation at 160 (gain 0.1897; 150: 0.2001).
  stop = learning_curve.stopping_point(found, 0.2)
  assert stop.step == 160 and stop.gain == pytest.approx(0.18973, abs=1e-4)
  assert learning_curve.stopping_point(found, 0.01) is None  # 300 still promises 0.104


def test_a_noisy_curve_extrapolates_within_a_few_percent():
  """1% multiplicative noise, 5 draws: the fit to steps 10-150 predicts step 300's loss within
  2.5% (measured: at most 1.8%), the fit to steps 10-300 step 1000's within 2% (measured: 1.3%;
  from steps 10-150 it is 3.2%: the further the horizon, the larger the error)."""
  for seed in range(5):
    noisy = _curve(STEPS) * np.exp(np.random.default_rng(seed).normal(0, 0.01, len(STEPS)))
    half = learning_curve.extrapolations(STEPS[:15], noisy[:15], 300)[-1]
    assert half.predicted == pytest.approx(_curve(300), rel=0.025), seed
    whole = learning_curve.extrapolations(STEPS, noisy, HORIZON)[-1]
    assert whole.predicted == pytest.approx(_curve(HORIZON), rel=0.02), seed


@pytest.mark.parametrize('steps, losses, horizon, message', [
    ([10, 30, 20, 40], [3, 2.5, 2.2, 2.0], 100, r'increasing steps > 0; got steps \[10.0, 30.0'),
    ([0, 10, 20, 30], [3, 2.5, 2.2, 2.0], 100, r'increasing steps > 0'),
    ([10, 20, 30, 40], [3, 2.5, math.nan, 2.0], 100, r'finite losses > 0'),
    ([10, 20, 30], [3, 2.5, 2.2], 100,
     r'3 evaluations: the curve E \+ A / t\^gamma needs at least 4'),
    ([10, 20, 30, 40], [3, 2.5, 2.2, 2.0], 40, r'The horizon, step 40, must come after the last '
     r'evaluation, step 40'),
])
def test_bad_curves_are_one_error_naming_the_problem(steps, losses, horizon, message):
  with pytest.raises(errors.UserError, match=message):
    learning_curve.extrapolations(steps, losses, horizon)


def test_fewer_than_four_points_a_fit_is_refused():
  with pytest.raises(ValueError, match='min_points=3: the curve has 3 constants; at least 4'):
    learning_curve.extrapolations(STEPS, _curve(STEPS), HORIZON, min_points=3)


def _run(tmp_path, steps=STEPS, train_steps=300):
  """A run directory whose two eval tasks' mean loss is the planted curve (each 0.1 off it)."""
  run = tmp_path / 'run'
  run.mkdir()
  (run / 'config.json').write_text(json.dumps({'train': {'steps': train_steps}}))
  with open(run / 'metrics.jsonl', 'w', encoding='utf-8') as f:
    for step, loss in zip(steps, _curve(steps)):
      f.write(json.dumps({'step': int(step), 'loss': 9.0, 'eval/a/loss': loss + 0.1,
                          'eval/b/loss': loss - 0.1}) + '\n')
  return str(run)


def test_command_prints_each_refit_the_stop_and_the_loss_reached(tmp_path):
  run = _run(tmp_path)
  printed = commands.run_main(command.main, run=run, threshold=0.2, horizon=None, metric=None,
                              min_points=4)
  lines = printed.splitlines()
  assert lines[0] == (f'Learning curve of the eval loss (the mean of eval/a/loss, eval/b/loss) in '
                      f'{run}, extrapolated to step 300:')
  assert len(lines) == 1 + 26 + 2  # evaluations 4-29 (steps 40-290) fitted; 300 is the horizon
  assert lines[1].startswith('  after step 40 (4 evaluations): L(t) = 1.5 + 4 / t^0.5; at step '
                             f'300 {E + A / math.sqrt(300):.4f}')
  # 4 (t^-0.5 - 300^-0.5) < 0.2 from t > 86.1: the evaluation at 90 (gain 0.1907).
  assert lines[-2] == 'Stop at step 90: the curve promises 0.1907 < --threshold=0.2 by step 300.'
  assert lines[-1] == f'The run reached {E + A / math.sqrt(300):.4f} at step 300.'


def test_command_errors_are_one_line(tmp_path):
  run = _run(tmp_path, steps=STEPS[:3])
  with pytest.raises(SystemExit, match=r'^error: 3 evaluations: the curve'):
    commands.run_main(command.main, run=run, threshold=0.01, horizon=None, metric=None,
                      min_points=4)
  with pytest.raises(SystemExit, match=rf'^error: {run} logged no eval/a/acc after step 0'):
    commands.run_main(command.main, run=run, threshold=0.01, horizon=None, metric='eval/a/acc',
                      min_points=4)
  with pytest.raises(SystemExit, match=r'^error: --min_points=3 must be at least 4'):
    commands.run_main(command.main, run=run, threshold=0.01, horizon=None, metric=None,
                      min_points=3)
