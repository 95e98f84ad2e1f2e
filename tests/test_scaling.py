"""research/analysis/scaling.py and python -m launch.scaling_fit on points made from known constants.

The points are Chinchilla-like (Hoffmann et al. 2022, arXiv 2203.15556): E = 1.7, A = 400,
B = 410, alpha = 0.34, beta = 0.28 on a grid of 6 model sizes (1e6 to 1e8) by 7 token counts (1e7
to 1e10), times log-normal noise exp(sigma z). On this grid no loss comes within 25% of E, so E and
A/N^alpha trade off against each other: at sigma = 0.01 the bootstrap's 95% intervals are about
+-0.03 wide for alpha, +-0.015 for beta and +-0.2 for E, and the tolerances below are those, with
room; without noise the fit must be exact. A 95% interval misses the truth on one noise draw in 20:
the draws here are fixed by their seeds.

The D-CPT law (Que et al. 2024, arXiv 2406.01375) is planted as DCPT_TRUE on 5 model sizes by 5
token counts by 7 mixture ratios r, small ones among them so that C / (r + eps)^gamma is told
apart from E.
"""

import dataclasses
import functools
import json
import math
import os
import re

import numpy as np
import pytest

from experiments import base
from launch import scaling_fit
from research import errors
from research.analysis import scaling
from research.model import transformer
from tests import commands

TRUE = scaling.LawFit(E=1.7, A=400.0, B=410.0, alpha=0.34, beta=0.28, objective=0.0, init=())
N_P = np.repeat(np.geomspace(1e6, 1e8, 6), 7)
D_P = np.tile(np.geomspace(1e7, 1e10, 7), 6)
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def noisy(values, sigma: float, seed: int = 0) -> np.ndarray:
  return values * np.exp(sigma * np.random.default_rng(seed).standard_normal(len(values)))


def errors_of(fit: scaling.LawFit) -> dict[str, float]:
  """Absolute errors of the exponents and E, relative errors of A and B."""
  return {'E': fit.E - TRUE.E, 'alpha': fit.alpha - TRUE.alpha, 'beta': fit.beta - TRUE.beta,
          'A': fit.A / TRUE.A - 1, 'B': fit.B / TRUE.B - 1}


def test_points_without_noise_give_the_constants_back():
  fit = scaling.fit_loss_law(N_P, D_P, scaling.predict(TRUE, N_P, D_P))
  for name, error in errors_of(fit).items():
    assert abs(error) < 1e-6, (name, error)
  assert fit.objective < 1e-20 and len(fit.init) == 5


@pytest.mark.parametrize('sigma, tolerances', [
    (0.01, {'alpha': 0.05, 'beta': 0.02, 'E': 0.25}),
    (0.003, {'alpha': 0.015, 'beta': 0.006, 'E': 0.08}),
])
def test_noisy_points_recover_the_exponents_and_e(sigma, tolerances):
  fit = scaling.fit_loss_law(N_P, D_P, noisy(scaling.predict(TRUE, N_P, D_P), sigma))
  found = errors_of(fit)
  for name, tolerance in tolerances.items():
    assert abs(found[name]) < tolerance, (name, found)


def test_bootstrap_intervals_hold_the_true_constants_and_narrow_with_less_noise():
  widths = {}
  for sigma in (0.01, 0.003):
    intervals = scaling.bootstrap(N_P, D_P, noisy(scaling.predict(TRUE, N_P, D_P), sigma),
                                  samples=100, seed=1)
    for name in ('E', 'A', 'B', 'alpha', 'beta'):
      low, high = intervals[name]
      assert low < getattr(TRUE, name) < high, (sigma, name, intervals[name])
    a = TRUE.beta / (TRUE.alpha + TRUE.beta)
    assert intervals['n_opt_exponent'][0] < a < intervals['n_opt_exponent'][1]
    widths[sigma] = {name: high - low for name, (low, high) in intervals.items()}
  for name in widths[0.01]:
    assert widths[0.003][name] < 0.6 * widths[0.01][name], (name, widths)


def test_bootstrap_resamples_whole_groups():
  """Runs of one point each and the same points as one group each give the same resamples."""
  losses = noisy(scaling.predict(TRUE, N_P, D_P), 0.01)
  by_point = scaling.bootstrap(N_P, D_P, losses, samples=8, seed=3)
  by_group = scaling.bootstrap(N_P, D_P, losses, samples=8, seed=3, groups=np.arange(42) * 7)
  assert by_point == by_group
  with pytest.raises(errors.UserError, match='groups has 3 labels for 42 points'):
    scaling.bootstrap(N_P, D_P, losses, samples=8, groups=[0, 1, 2])


def test_huber_fit_resists_an_outlier_that_moves_least_squares():
  losses = noisy(scaling.predict(TRUE, N_P, D_P), 0.003)
  spoiled = losses.copy()
  spoiled[20] *= 3  # a diverged run in the middle of the grid
  moved = {}
  for delta in (scaling.DELTA, math.inf):
    clean = scaling.fit_loss_law(N_P, D_P, losses, delta=delta)
    dirty = scaling.fit_loss_law(N_P, D_P, spoiled, delta=delta)
    moved[delta] = {name: abs(getattr(dirty, name) - getattr(clean, name))
                    for name in ('E', 'alpha', 'beta')}
  assert all(shift < 0.01 for shift in moved[scaling.DELTA].values()), moved
  assert moved[math.inf]['E'] > 0.5 and moved[math.inf]['alpha'] > 0.1, moved


def test_compute_law_recovers_gamma():
  c_P = np.geomspace(1e15, 1e21, 25)
  true = scaling.ComputeLawFit(E=1.7, A=750.0, gamma=0.15, objective=0.0, init=())
  exact = scaling.fit_compute_law(c_P, scaling.predict_compute(true, c_P))
  assert abs(exact.gamma - true.gamma) < 1e-6 and abs(exact.E - true.E) < 1e-6
  assert abs(exact.A / true.A - 1) < 1e-5
  losses = noisy(scaling.predict_compute(true, c_P), 0.005, seed=1)
  fit = scaling.fit_compute_law(c_P, losses)
  assert abs(fit.gamma - true.gamma) < 0.01 and abs(fit.E - true.E) < 0.05
  intervals = scaling.bootstrap_compute_law(c_P, losses, samples=50)
  for name in ('E', 'A', 'gamma'):
    assert intervals[name][0] < getattr(true, name) < intervals[name][1], (name, intervals)


def test_compute_frontier_keeps_points_better_than_all_cheaper_ones():
  c = [1, 2, 2, 3, 4, 5]
  loss = [5.0, 4.0, 3.0, 3.5, 2.5, 2.5]
  assert scaling.compute_frontier(c, loss).tolist() == [True, False, True, False, True, False]


def test_compute_optimal_allocation_minimises_the_law_and_implies_the_compute_law():
  c = np.array([1e18, 1e20, 1e22])
  n_opt, d_opt = scaling.compute_optimal(TRUE, c)
  np.testing.assert_allclose(6 * n_opt * d_opt, c, rtol=1e-12)
  best = scaling.predict(TRUE, n_opt, d_opt)
  for factor in (0.8, 1.25):  # other splits of the same compute do worse
    n = n_opt * factor
    assert np.all(scaling.predict(TRUE, n, c / (6 * n)) > best)
  implied = scaling.implied_compute_law(TRUE)
  assert implied.gamma == pytest.approx(0.34 * 0.28 / 0.62)
  np.testing.assert_allclose(scaling.predict_compute(implied, c), best, rtol=1e-12)
  a = TRUE.beta / (TRUE.alpha + TRUE.beta)  # N_opt ~ C^a
  assert math.log(n_opt[1] / n_opt[0]) / math.log(100) == pytest.approx(a)


@pytest.mark.parametrize('n, d, message', [
    (np.repeat([1e6, 1e7], 4), np.tile([1e7, 1e8, 1e9, 1e10], 2), 'N takes 2 distinct value'),
    (np.repeat([1e6, 1e7, 1e8], 2), np.tile([1e7, 1e8], 3), 'D takes 2 distinct value'),
    ([1e6, 1e7, 1e8, 1e6, 1e7], [1e7, 1e8, 1e9, 1e9, 1e7], '5 points cannot fit the 5'),
])
def test_unidentifiable_points_fail_naming_the_variable(n, d, message):
  with pytest.raises(errors.UserError, match=message):
    scaling.fit_loss_law(n, d, np.full(len(n), 3.0))


DCPT_TRUE = scaling.DcptLawFit(E=1.5, A=400.0, B=300.0, C=0.05, alpha=0.35, beta=0.3, eta=0.4,
                               gamma=0.5, objective=0.0, init=())
DCPT_NAMES = ('E', 'A', 'B', 'C', 'alpha', 'beta', 'eta', 'gamma')
RATIOS = [0.0, 0.005, 0.02, 0.1, 0.3, 0.6, 1.0]


def dcpt_points(count: int) -> list[np.ndarray]:
  """[N, D, r]: `count` model sizes (1e6 to 1e8) by `count` token counts (1e8 to 1e10) by RATIOS."""
  return [a.reshape(-1) for a in np.meshgrid(np.geomspace(1e6, 1e8, count),
                                             np.geomspace(1e8, 1e10, count), RATIOS)]


DN_P, DD_P, R_P = dcpt_points(5)


@pytest.fixture(scope='module')
def dcpt_fits():
  """sigma -> the D-CPT law fitted to DCPT_TRUE's points times log-normal noise of sigma: exact on
  a 3 x 3 x 7 grid, sigma = 0.01 on the 5 x 5 x 7 one."""
  exact = dcpt_points(3)
  return {0.0: scaling.fit_dcpt_law(*exact, scaling.predict_dcpt(DCPT_TRUE, *exact)),
          0.01: scaling.fit_dcpt_law(DN_P, DD_P, R_P, noisy(
              scaling.predict_dcpt(DCPT_TRUE, DN_P, DD_P, R_P), 0.01))}


def test_dcpt_points_without_noise_give_the_constants_back(dcpt_fits):
  fit = dcpt_fits[0.0]
  for name in DCPT_NAMES:
    assert getattr(fit, name) == pytest.approx(getattr(DCPT_TRUE, name), rel=1e-5), name
  assert fit.objective < 1e-20 and len(fit.init) == 8


def test_dcpt_noisy_points_recover_the_constants(dcpt_fits):
  """With 1% noise, over noise seeds 0 to 4, the exponents came back within 0.03, E within 0.1 (it
  trades off against A/N^alpha), A within 13%, C within 22% and B within 46% (it trades off against
  beta); the tolerances are those, with room. Seed 0: E 1.565, A 452, B 371, C 0.0489, alpha
  0.360, beta 0.313, eta 0.418, gamma 0.501."""
  fit = dcpt_fits[0.01]
  for name in ('alpha', 'beta', 'eta', 'gamma'):
    assert abs(getattr(fit, name) - getattr(DCPT_TRUE, name)) < 0.04, (name, fit)
  assert abs(fit.E - DCPT_TRUE.E) < 0.15, fit
  for name, tolerance in (('A', 0.25), ('C', 0.3), ('B', 0.6)):
    assert abs(getattr(fit, name) / getattr(DCPT_TRUE, name) - 1) < tolerance, (name, fit)


def test_dcpt_fit_predicts_held_out_points(dcpt_fits):
  """Points off the grid (N, D between its values, r between and beyond its small ones) are
  predicted by the exact fit to 1e-6 and by the noisy one to 1%."""
  n, d, r = np.array([3e6, 2e7, 5e7]), np.array([3e8, 2e9, 7e9]), np.array([0.001, 0.2, 0.8])
  truth = scaling.predict_dcpt(DCPT_TRUE, n, d, r)
  np.testing.assert_allclose(scaling.predict_dcpt(dcpt_fits[0.0], n, d, r), truth, rtol=1e-6)
  np.testing.assert_allclose(scaling.predict_dcpt(dcpt_fits[0.01], n, d, r), truth, rtol=0.01)


def test_optimal_ratio_minimises_the_weighted_losses():
  """At N = 1e8, D = 1e10 the domain loss falls steeply from r = 0 to its minimum near r = 0.17,
  where the rising B r^eta / D^beta overtakes the falling C / (r + eps)^gamma; the general loss,
  of the general fraction 1 - r, climbs steeply as r nears 1. The weighted optimum (0.174) lies
  strictly inside [0, 1], at the minimum of a 100 times finer grid."""
  general = dataclasses.replace(DCPT_TRUE, E=1.8, C=0.2)
  r = scaling.optimal_ratio(DCPT_TRUE, general, 1e8, 1e10, weight=0.7)
  fine = np.linspace(0, 1, 100_001)
  total = (0.7 * scaling.predict_dcpt(DCPT_TRUE, 1e8, 1e10, fine)
           + 0.3 * scaling.predict_dcpt(general, 1e8, 1e10, 1 - fine))
  assert 0 < r < 1 and abs(r - fine[np.argmin(total)]) <= 1e-3, r
  with pytest.raises(errors.UserError, match='weight=1.5 must be in'):
    scaling.optimal_ratio(DCPT_TRUE, general, 1e8, 1e10, weight=1.5)


@pytest.mark.parametrize('r, message', [
    (np.where(R_P == 1.0, 1.2, R_P), r'r must be a fraction in \[0, 1\].*it is \[1.2'),
    (np.minimum(R_P, 0.005), 'r takes 2 distinct value'),
    (R_P[:10], 'r has 10 values for 175 points'),
])
def test_dcpt_bad_ratios_fail_naming_r(r, message):
  with pytest.raises(errors.UserError, match=message):
    scaling.fit_dcpt_law(DN_P, DD_P, r, np.full(len(DN_P), 3.0))


def test_non_positive_loss_fails_naming_it():
  losses = scaling.predict(TRUE, N_P, D_P)
  losses[4] = 0.0
  with pytest.raises(errors.UserError, match=r'L must be finite and positive.*points \[4\]'):
    scaling.fit_loss_law(N_P, D_P, losses)


# --- python -m launch.scaling_fit on run directories written here ------------------------------

TOKENS_PER_STEP = 2**16
SIZES = [(64, 2), (128, 2), (256, 4), (512, 4)]  # (d_model, num_layers)
LENGTHS = [(1000, 3000), (1500, 2500), (2000, 3000), (1000, 2500)]  # train.steps, by size


def _model(d_model: int, num_layers: int) -> dict:
  return {'d_model': d_model, 'num_layers': num_layers, 'num_heads': d_model // 64,
          'head_dim': 64, 'mlp_dim': 4 * d_model}


def _write_run(directory, model: dict, steps: int, eval_shift: float = 0.1, mixture=None,
               law=lambda n, d: scaling.predict(TRUE, n, d)) -> None:
  """A run whose training loss (logged every 100 steps) is `law` (TRUE's by default) at its matmul
  parameters and tokens seen, and whose evaluation loss (every 50 steps, lines without tokens_seen)
  is that plus `eval_shift`. The config's model section has only the keys that differ from the
  defaults, as an older run's config.json lacks newer keys; `mixture` replaces data.mixture."""
  config = base.get_config().to_dict()
  config['model'] = model
  config['train']['steps'] = steps
  if mixture is not None:
    config['data']['mixture'] = mixture
  n = transformer.matmul_params(transformer.ModelConfig(**model))
  lines = []
  for step in range(50, steps + 1, 50):
    loss = float(law(n, step * TOKENS_PER_STEP))
    if step % 100 == 0:
      lines.append({'step': step, 'loss': loss, 'tokens_seen': step * TOKENS_PER_STEP})
    lines.append({'step': step, 'eval/stdlib_prose/loss': loss + eval_shift})
  directory.mkdir(parents=True)
  (directory / 'config.json').write_text(json.dumps(config))
  (directory / 'metrics.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  """A sweep of 4 model sizes, 2 runs of each, of 5 lengths in all."""
  root = tmp_path_factory.mktemp('scaling') / 'sweep'
  for (d_model, num_layers), lengths in zip(SIZES, LENGTHS):
    for steps in lengths:
      _write_run(root / f'd{d_model}_l{num_layers}_s{steps}', _model(d_model, num_layers), steps)
  return str(root)


def test_scaling_fit_command_writes_the_fit_the_table_and_the_plots(sweep, tmp_path):
  out = str(tmp_path / 'fit')
  printed = commands.run_main(lambda _: scaling_fit.main(['launch.scaling_fit', sweep]), out=out,
                              metric='eval/stdlib_prose/loss', bootstrap=20)
  names = sorted(os.listdir(out))
  assert names == ['compute_law.png', 'fit_vs_measured.png', 'scaling_fit.json', 'scaling_fit.md']
  for name in ('compute_law.png', 'fit_vs_measured.png'):
    with open(os.path.join(out, name), 'rb') as f:
      assert f.read(8) == PNG_SIGNATURE
  with open(os.path.join(out, 'scaling_fit.json')) as f:
    data = json.load(f)
  constants = data['loss_law']['constants']
  # Evaluation losses are the law plus 0.1: E + 0.1, the rest unchanged; no noise, so exact.
  assert constants['E']['value'] == pytest.approx(TRUE.E + 0.1, rel=1e-4)
  for name in ('A', 'B', 'alpha', 'beta'):
    assert constants[name]['value'] == pytest.approx(getattr(TRUE, name), rel=1e-4), name
  assert all(len(entry['interval']) == 2 for entry in constants.values())
  # Evaluations every 50 steps, from --min_fraction=0.1 of each run's steps on.
  expected = sum(len(range(50, steps + 1, 50)) - (steps // 10 - 1) // 50 for lengths in LENGTHS
                 for steps in lengths)
  assert len(data['points']) == expected and len(data['runs']) == 8
  point = data['points'][0]
  assert point['D'] == point['step'] * TOKENS_PER_STEP and point['C'] == pytest.approx(
      6 * point['N'] * point['D'])
  assert data['compute_law']['constants']['gamma']['value'] > 0
  with open(os.path.join(out, 'scaling_fit.md')) as f:
    text = f.read()
  assert f'python -m launch.scaling_fit {sweep} --out={out}' in text
  assert '| alpha | 0.34 |' in text and '![fit vs measured](fit_vs_measured.png)' in text
  assert 'L(N, D) = 1.8 + 400/N^0.34 + 410/D^0.28' in printed


def test_final_points_of_the_training_loss(sweep, tmp_path):
  """--points=final: one point per run, at its last step; the training loss is the law itself."""
  out = str(tmp_path / 'fit')
  commands.run_main(lambda _: scaling_fit.main(['launch.scaling_fit', sweep]), out=out,
                    points='final', bootstrap=0)
  with open(os.path.join(out, 'scaling_fit.json')) as f:
    data = json.load(f)
  assert sorted(p['step'] for p in data['points']) == sorted(sum(LENGTHS, ()))
  constants = data['loss_law']['constants']
  assert constants['alpha']['interval'] is None
  for name in ('E', 'A', 'B', 'alpha', 'beta'):
    assert constants[name]['value'] == pytest.approx(getattr(TRUE, name), rel=1e-4), name


def test_total_parameters_add_the_norms_to_the_matmul_ones():
  config = transformer.ModelConfig(**_model(128, 2))
  extra = scaling_fit.parameters(config, 'total') - scaling_fit.parameters(config, 'matmul')
  assert extra == (2 * 2 + 1) * 128  # two norms a layer and the final one; tied embeddings


def test_too_few_runs_fail_naming_the_directory(tmp_path):
  one_size = tmp_path / 'one_size'
  for steps in (1000, 2000, 3000):
    _write_run(one_size / f's{steps}', _model(128, 2), steps)
  message = f'{one_size}: the 3 runs with points have 1 model size'
  with pytest.raises(SystemExit, match='^error: ' + re.escape(message)):
    commands.run_main(lambda _: scaling_fit.main(['launch.scaling_fit', str(one_size)]),
                      out=str(tmp_path / 'fit'))
  few = tmp_path / 'few'
  for d_model, num_layers in SIZES[:3]:
    _write_run(few / f'd{d_model}', _model(d_model, num_layers), 1000)
  message = f'{few}: 3 points at 1 token counts from 3 runs cannot fit the 5 constants'
  with pytest.raises(SystemExit, match='^error: ' + re.escape(message)):
    commands.run_main(lambda _: scaling_fit.main(['launch.scaling_fit', str(few)]),
                      out=str(tmp_path / 'fit'), points='final')
  assert not os.path.exists(tmp_path / 'fit')


def test_a_metric_no_run_logged_fails_naming_the_flag(sweep, tmp_path):
  with pytest.raises(SystemExit, match='^error: --metric=eval/code/loss: no run .* logged it; '
                     'they log loss and eval/stdlib_prose/loss'):
    commands.run_main(lambda _: scaling_fit.main(['launch.scaling_fit', sweep]),
                      out=str(tmp_path / 'fit'), metric='eval/code/loss')


def test_dcpt_law_command_reads_the_mixture_ratio_of_each_run(tmp_path):
  """3 model sizes by 4 mixtures of stdlib_code and stdlib_prose (weights not summing to 1, a zero
  weight dropping a task), training loss DCPT_TRUE's law at r = stdlib_code's share of
  data.mixture: the fit and its intervals (2 resamples of the runs) give it back. A task in no
  run's mixture, and --law=dcpt without --ratio_key, fail naming the flag."""
  root = tmp_path / 'cpt'
  for d_model, num_layers in SIZES[:3]:
    for code, prose in ((0, 1), (1, 10), (1, 2), (3, 0)):
      _write_run(root / f'd{d_model}_c{code}_p{prose}', _model(d_model, num_layers), 1000,
                 mixture={'stdlib_code': code, 'stdlib_prose': prose},
                 law=functools.partial(scaling.predict_dcpt, DCPT_TRUE, r=code / (code + prose)))
  out = str(tmp_path / 'fit')
  printed = commands.run_main(lambda _: scaling_fit.main(['launch.scaling_fit', str(root)]),
                              out=out, law='dcpt', ratio_key='data.mixture.stdlib_code',
                              bootstrap=2, min_fraction=0.5)
  assert sorted(os.listdir(out)) == ['scaling_fit.json', 'scaling_fit.md']
  with open(os.path.join(out, 'scaling_fit.json')) as f:
    data = json.load(f)
  assert sorted({run['r'] for run in data['runs']}) == pytest.approx([0, 1 / 11, 1 / 3, 1])
  for name, entry in data['dcpt_law']['constants'].items():  # exact points: every resample too
    assert [entry['value'], *entry['interval']] == pytest.approx([getattr(DCPT_TRUE, name)] * 3,
                                                                 rel=1e-3), name
  assert all(p['predicted'] == pytest.approx(p['L'], rel=1e-6) for p in data['points'])
  assert 'D-CPT law E=1.5, A=400,' in printed
  with open(os.path.join(out, 'scaling_fit.md')) as f:
    assert '--law=dcpt --ratio_key=data.mixture.stdlib_code' in f.read()
  with pytest.raises(SystemExit, match=r'^error: --ratio_key=data.mixture.stdlib_math: the runs '
                     r'have 1 distinct ratio\(s\) r \(0\)'):
    commands.run_main(lambda _: scaling_fit.main(['launch.scaling_fit', str(root)]),
                      out=out, law='dcpt', ratio_key='data.mixture.stdlib_math', bootstrap=0)
  with pytest.raises(SystemExit, match='^error: --law=dcpt --ratio_key=None: '):
    commands.run_main(lambda _: scaling_fit.main(['launch.scaling_fit', str(root)]),
                      out=out, law='dcpt')
