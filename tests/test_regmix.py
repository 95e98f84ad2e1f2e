"""research/analysis/regmix.py, python -m launch.regmix and experiments/regmix.py, on synthetic losses.

The losses are known functions of the mixture plus noise: log-linear, 3 - sum_i a_i log(w_i + e),
whose optimum on the simplex is w_i = a_i / sum(a) (1 + T e) - e, and linear, whose optimum is the
vertex of the smallest coefficient.
"""

import contextlib
import io
import json
import os
import re

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import base
from experiments import regmix as experiment
from launch import regmix as regmix_command
from research import errors
from research.analysis import regmix
from research.analysis import sweep

TASKS = ['stdlib_prose', 'stdlib_code', 'arithmetic']
A_T = np.array([0.1, 0.3, 0.05])  # log-linear coefficients
EPS = 0.01
OPTIMUM_T = A_T / A_T.sum() * (1 + len(A_T) * EPS) - EPS  # [0.219, 0.677, 0.104]
TARGET = 'eval/stdlib_code/loss'


def log_linear(weights_NT: np.ndarray) -> np.ndarray:
  return 3 - np.log(weights_NT + EPS) @ A_T


@pytest.mark.parametrize('prior', [{}, {'token_counts': {'stdlib_prose': 1e5, 'stdlib_code': 1e6,
                                                         'arithmetic': 1e7}},
                                   {'alpha': 0.5}])
def test_samples_are_on_the_simplex_grid_and_reproducible(prior):
  weights_NT = regmix.sample_mixtures(TASKS, 64, seed=3, minimum=0.01, **prior)
  assert weights_NT.shape == (64, 3) and np.all(weights_NT >= 0)
  np.testing.assert_allclose(weights_NT.sum(axis=1), 1.0, atol=1e-12)
  units_NT = weights_NT * 100  # on the grid of `minimum`: no weight in (0, 0.01)
  np.testing.assert_allclose(units_NT, np.round(units_NT), atol=1e-9)
  assert len(np.unique(weights_NT, axis=0)) == 64  # deduplicated
  np.testing.assert_array_equal(weights_NT,
                                regmix.sample_mixtures(TASKS, 64, seed=3, minimum=0.01, **prior))
  assert not np.array_equal(weights_NT,
                            regmix.sample_mixtures(TASKS, 64, seed=4, minimum=0.01, **prior))
  if 'token_counts' in prior:  # at most 15 x its token share (1/111), but for renormalisation
    assert weights_NT[:, 0].max() <= 15 / 111 / (1 - 2 * 0.01) + 0.01
    assert weights_NT[:, 0].max() > 0


def test_candidates_without_deduplication_and_rounding():
  weights_NT = regmix.sample_mixtures(TASKS, 5000, seed=0, minimum=0.0, unique=False)
  np.testing.assert_allclose(weights_NT.sum(axis=1), 1.0, atol=1e-12)
  assert weights_NT.shape == (5000, 3)
  # concentrations down to 0.1 / 3: many draws put almost all weight on one task
  assert 0.1 < np.mean(weights_NT.max(axis=1) > 0.99) < 0.9


def test_round_to_grid_and_ranks():
  rounded = regmix.round_to_grid(np.array([[1 / 3, 1 / 3, 1 / 3], [0.004, 0.5, 0.496]]), 0.01)
  np.testing.assert_array_equal(np.round(rounded * 100), [[34, 33, 33], [0, 50, 50]])
  np.testing.assert_array_equal(regmix.rankdata([3.0, 1.0, 1.0, 2.0]), [4, 1.5, 1.5, 3])
  assert regmix.spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
  assert regmix.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)


def test_fit_recovers_a_log_linear_loss_and_its_optimum():
  weights_NT = regmix.sample_mixtures(TASKS, 32, seed=1, minimum=0.02)
  losses_N = log_linear(weights_NT) + np.random.default_rng(0).normal(0, 0.01, 32)
  model = regmix.fit(weights_NT, losses_N)
  assert model.cv_spearman > 0.9 and model.num_runs == 32
  held_out_MT = regmix.sample_mixtures(TASKS, 500, seed=2, unique=False)
  assert regmix.spearman(model.predict(held_out_MT), log_linear(held_out_MT)) > 0.95
  best = regmix.predict_best(model, TASKS, 100_000, seed=0)
  assert list(best.weights) == TASKS and best.top_k == regmix.TOP_K
  assert sum(best.weights.values()) == pytest.approx(1.0)
  assert np.abs(np.array(list(best.weights.values())) - OPTIMUM_T).sum() < 0.1
  # deterministic
  assert regmix.predict_best(model, TASKS, 100_000, seed=0) == best


def test_fit_recovers_a_linear_loss_whose_optimum_is_a_vertex():
  weights_NT = regmix.sample_mixtures(TASKS, 24, seed=5, minimum=0.02)
  coef_T = np.array([2.0, 1.5, 2.5])
  losses_N = weights_NT @ coef_T + np.random.default_rng(1).normal(0, 0.01, 24)
  model = regmix.fit(weights_NT, losses_N, features='linear')
  assert model.features == 'linear' and model.cv_spearman > 0.9
  held_out_MT = regmix.sample_mixtures(TASKS, 500, seed=6, unique=False)
  assert regmix.spearman(model.predict(held_out_MT), held_out_MT @ coef_T) > 0.95
  assert regmix.predict_best(model, TASKS, 20_000, seed=0).weights['stdlib_code'] > 0.95


def test_fit_needs_more_runs_than_tasks():
  with pytest.raises(errors.UserError, match='3 runs cannot fit a regression over 3 tasks'):
    regmix.fit(np.eye(3), [1.0, 2.0, 3.0])


def _write_run(root, name: str, mixture: dict, eval_steps: dict[int, float], steps: int = 100):
  """A run directory: config.json (research/defaults.py with `mixture`, `steps`) and metrics.jsonl
  with a training line every 50 steps and the target at `eval_steps`."""
  config = base.get_config().to_dict()
  config['data']['mixture'] = mixture
  config['train']['steps'] = steps
  run = root / name
  run.mkdir(parents=True)
  (run / 'config.json').write_text(json.dumps(config))
  lines = [{'step': s, 'loss': 3.0} for s in range(50, steps + 1, 50)]
  lines += [{'step': s, TARGET: value, 'eval/stdlib_prose/loss': 2.0}
            for s, value in eval_steps.items()]
  (run / 'metrics.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))


@pytest.fixture(scope='module')
def sweep_dir(tmp_path_factory):
  """24 runs with log-linear final losses (noise 0.005), one without the target, one unfinished."""
  root = tmp_path_factory.mktemp('regmix') / 'proxies'
  weights_NT = regmix.sample_mixtures(TASKS, 26, seed=7, minimum=0.02)
  losses_N = log_linear(weights_NT) + np.random.default_rng(2).normal(0, 0.005, 26)
  for index, (row, loss) in enumerate(zip(weights_NT, losses_N)):
    # weights as a sweep leaves them: not normalised, a dropped task at 0
    mixture = {task: float(2 * w) for task, w in zip(TASKS, row)}
    evals = {50: loss + 0.5, 100: float(loss)}
    if index == 24:
      evals = {}
    elif index == 25:
      evals = {50: float(loss)}
    _write_run(root, f'run{index:02d}', mixture, evals)
  return str(root)


def _main(argv: list[str], **flag_values) -> str:
  """Runs the command's main in-process with those flags; returns what it printed."""
  flags.FLAGS.mark_as_parsed()
  printed = io.StringIO()
  with flagsaver.flagsaver(**flag_values), contextlib.redirect_stdout(printed):
    regmix_command.main(['launch.regmix', *argv])
  return printed.getvalue()


def test_command_writes_a_snippet_that_sets_the_mixture(sweep_dir, tmp_path, monkeypatch):
  out = str(tmp_path / 'best_mixture.py')
  printed = _main([sweep_dir], target=TARGET, out=out, candidates=20_000)
  assert 'left out, no eval/stdlib_code/loss: run24' in printed
  assert ('left out, unfinished (last eval/stdlib_code/loss at step 50 of 100): run25'
          in printed)
  assert f'24 runs over {", ".join(TASKS)}' in printed
  assert re.search(r'5-fold cross-validated Spearman 0\.9\d\d', printed)
  text = open(out, encoding='utf-8').read()
  assert (f'# Made by: python -m launch.regmix {sweep_dir} --target={TARGET} --out={out} '
          '--candidates=20000\n') in text
  assert '# Fitted on 24 runs: ridge regression on' in text
  config = base.get_config()
  exec(text, {'config': config})  # noqa: S102 (what an experiment file does with it)
  weights = config.data.mixture.to_dict()
  assert sorted(weights) == sorted(TASKS) and sum(weights.values()) == pytest.approx(1.0, abs=1e-9)
  assert np.abs(np.array([weights[t] for t in TASKS]) - OPTIMUM_T).sum() < 0.1

  # experiments/regmix.py:target trains on it
  monkeypatch.setattr(experiment, 'BEST_MIXTURE_FILE', out)
  target = experiment.get_config('target')
  assert target.data.mixture.to_dict() == weights
  assert target.train.steps == experiment.TARGET_STEPS


def test_experiment_sweep_is_reproducible_and_valid():
  points = experiment.get_sweep()
  assert points == experiment.get_sweep() and len(points) == experiment.NUM_PROXIES
  names = [p.name for p in sweep.points(points, experiment.get_config())]  # valid keys
  assert len(set(names)) == len(names)
  weights_NT = np.array([[p[f'data.mixture.{t}'] for t in experiment.TASKS] for p in points])
  np.testing.assert_allclose(weights_NT.sum(axis=1), 1.0, atol=1e-12)
  assert (weights_NT == 0).any()  # some mixtures drop a task
  config = experiment.get_config()
  assert set(config.eval.tasks) == set(experiment.TASKS) == set(config.data.mixture)
  assert experiment.TARGET.split('/')[1] in experiment.TASKS


def test_experiment_target_needs_the_mixture_file(monkeypatch):
  monkeypatch.setattr(experiment, 'BEST_MIXTURE_FILE', '/nonexistent/best.py')
  with pytest.raises(ValueError, match=re.escape('/nonexistent/best.py, which does not exist; '
                                                 'write it with python -m launch.regmix')):
    experiment.get_config('target')


@pytest.mark.parametrize('problem', ['missing_dir', 'empty_dir', 'unknown_target', 'too_few_runs',
                                     'no_target_flag', 'out_is_dir', 'bad_token_counts'])
def test_command_errors_name_the_path_or_flag(sweep_dir, tmp_path, problem):
  out = str(tmp_path / 'best.py')
  argv, values = [sweep_dir], {'target': TARGET, 'out': out}
  if problem == 'missing_dir':
    argv = [str(tmp_path / 'nope')]
    message = f'Sweep directory {tmp_path / "nope"} does not exist or is not a directory'
  elif problem == 'empty_dir':
    (tmp_path / 'empty').mkdir()
    argv = [str(tmp_path / 'empty')]
    message = f'{tmp_path / "empty"} holds no runs (no sub-directory with a config.json)'
  elif problem == 'unknown_target':
    values['target'] = 'eval/nope/loss'
    message = (f'--target=eval/nope/loss: no run in {sweep_dir} logged it; the evaluation losses '
               'they log: eval/stdlib_code/loss, eval/stdlib_prose/loss.')
  elif problem == 'too_few_runs':
    for index, row in enumerate(np.eye(3)):
      _write_run(tmp_path / 'few', f'run{index}', dict(zip(TASKS, map(float, row))), {100: 1.0})
    argv = [str(tmp_path / 'few')]
    message = (f'{tmp_path / "few"}: 3 of 3 runs have a final {TARGET}; fitting 3 tasks '
               f'({", ".join(TASKS)}) needs at least 4.')
  elif problem == 'no_target_flag':
    values['target'] = None
    message = '--target is required'
  elif problem == 'out_is_dir':
    values['out'] = str(tmp_path)
    message = f'--out={tmp_path} is a directory'
  else:
    values['token_counts'] = ['stdlib_code=1e6']
    message = '--token_counts=stdlib_code=1e6 needs a positive count for each of'
  with pytest.raises(SystemExit) as raised:
    _main(argv, **values)
  text = str(raised.value)
  assert text.startswith('error: ' + message) and '\n' not in text
  assert not os.path.exists(out)


def test_a_target_of_several_metrics_is_their_mean_at_the_last_step():
  from research.analysis import report
  metrics = {50: {'eval/a/loss': 9.0, 'eval/b/loss': 9.0},
             100: {'eval/a/loss': 2.0, 'eval/b/loss': 3.5}}
  run = report.Run('r', 'r', {'train': {'steps': 100}}, metrics, [])
  assert regmix_command.target_value(run, 'eval/a/loss,eval/b/loss') == (2.75, '')
  assert regmix_command.target_value(run, 'eval/a/loss,eval/c/loss') == (None, 'no eval/c/loss')


def test_snippet_weights_are_whole_examples_of_a_block(sweep_dir, tmp_path):
  out = str(tmp_path / 'best.py')
  _main([sweep_dir], target=TARGET, out=out, candidates=2_000, mixture_block=8)
  config = base.get_config()
  exec(open(out, encoding='utf-8').read(), {'config': config})  # noqa: S102
  eighths = {task: w * 8 for task, w in config.data.mixture.to_dict().items()}
  # The optimum [0.219, 0.677, 0.104] of 8 examples is 1.75, 5.4 and 0.8: 2, 5 and 1, exactly (a
  # share under half an example would be 0, dropping its task, not a weight the sampler refuses).
  assert eighths == dict(zip(TASKS, [2.0, 5.0, 1.0]))
