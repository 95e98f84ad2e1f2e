"""The loss landscape of a checkpoint (research/analysis/curvature.py): Hutchinson's Hessian trace
against jax.hessian, power iteration against a planted spectrum, the gradient noise scale against a
linear regression whose gradient covariance is known, the calibration error by hand, and the
launch.curvature command."""

import json
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax import flatten_util

from launch import curvature as curvature_command
from research.analysis import calibration, curvature
from research.model import placed
from tests import commands, test_scores
from tests.test_evaluate import SUMS


def _mlp_loss(params, x_ND, y_N):
  hidden_NH = jnp.tanh(x_ND @ params['w1'] + params['b1'])
  return jnp.mean((hidden_NH @ params['w2'] + params['b2'] - y_N) ** 2)


def _key(seed: int):
  """A key of XLA's RngBitGenerator, whose Rademacher draws compile faster than threefry's."""
  return jax.random.key(seed, impl='rbg')


def _step_fn(loss, params):
  """The jitted v -> hvp_step of `loss` at `params`."""
  return jax.jit(lambda vector: curvature.hvp_step(loss, params, vector))


def test_hutchinson_trace_matches_the_exact_trace_of_a_tiny_mlp():
  rng = np.random.default_rng(0)
  params = {'w1': rng.normal(size=(3, 8)), 'b1': rng.normal(size=8), 'w2': rng.normal(size=8),
            'b2': np.zeros(())}  # 41 parameters
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  x_ND, y_N = jnp.asarray(rng.normal(size=(16, 3)), jnp.float32), jnp.asarray(rng.normal(size=16))
  loss = lambda p: _mlp_loss(p, x_ND, y_N)
  flat, unravel = flatten_util.ravel_pytree(params)
  exact = float(jax.jit(lambda f: jnp.trace(jax.hessian(lambda g: loss(unravel(g)))(f)))(flat))
  got = curvature.hutchinson_trace(_step_fn(loss, params), params, _key(0), 60)
  assert 0 < got['trace_stderr'] < 0.2 * abs(exact)
  assert abs(got['trace'] - exact) < 3 * got['trace_stderr']


def test_hutchinson_trace_is_exact_on_a_diagonal_quadratic():
  """v'Dv = sum_i d_i v_i^2 = tr D for every Rademacher probe: no variance."""
  diagonal = {'a': jnp.array([1.0, -2.0, 3.5]), 'b': jnp.array([[0.5, 4.0], [2.0, 0.25]])}
  loss = lambda p: 0.5 * sum(jnp.sum(d * x ** 2) for d, x in zip(jax.tree.leaves(diagonal),
                                                                 jax.tree.leaves(p)))
  params = jax.tree.map(jnp.ones_like, diagonal)
  got = curvature.hutchinson_trace(_step_fn(loss, params), params, _key(1), 4)
  assert got['trace'] == pytest.approx(9.25, rel=1e-6) and got['trace_stderr'] == 0


def test_power_iteration_recovers_a_planted_top_eigenvalue():
  rng = np.random.default_rng(0)
  q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  eigenvalues = np.concatenate([[3.0], np.linspace(-1.5, 1.5, 19)])
  matrix = jnp.asarray(q @ np.diag(eigenvalues) @ q.T, jnp.float32)
  params = {'x': jnp.ones(20)}
  loss = lambda p: 0.5 * p['x'] @ matrix @ p['x']
  got = curvature.top_eigenvalue(_step_fn(loss, params), params, _key(0), 60)
  assert abs(got['eigenvalue'] - 3.0) < 1e-4 and got['eigenvalue_change'] < 1e-5


def _regression_loss(theta, batch):
  return jnp.mean(0.5 * (batch['x'] @ theta - batch['y']) ** 2)


def test_noise_scale_recovers_the_planted_noise_scale_of_a_linear_regression():
  """Loss 0.5 (x'theta - y)^2, x ~ N(0, I_d), y = noise of variance s2, at theta = r: the
  per-example gradient x (x'r - y) has mean G = r and covariance (|r|^2 + s2) I + r r', so
  B_simple = (d (|r|^2 + s2) + |r|^2) / |r|^2 = 21 for d = 10, |r| = 1, s2 = 1. The small
  batches' gradients of 400 big batches at once (vmapped); a big batch's is their mean."""
  dim, num_big, small, big = 10, 400, 4, 64
  rng = np.random.default_rng(0)
  theta = rng.normal(size=dim)
  theta = jnp.asarray(theta / np.linalg.norm(theta), jnp.float32)
  x = rng.normal(size=(num_big, big // small, small, dim))
  batches = {'x': jnp.asarray(x, jnp.float32),
             'y': jnp.asarray(rng.normal(size=x.shape[:-1]), jnp.float32)}
  gradient = jax.vmap(jax.vmap(jax.grad(_regression_loss), (None, 0)), (None, 0))
  gradients_NKD = np.asarray(jax.jit(gradient)(theta, batches), np.float64)
  got = curvature.noise_scale(np.sum(gradients_NKD ** 2, axis=-1),
                              np.sum(gradients_NKD.mean(axis=1) ** 2, axis=-1), small, big)
  assert got['gradient_sq_norm'] == pytest.approx(1.0, rel=0.1)
  assert got['trace_sigma'] == pytest.approx(21.0, rel=0.1)
  assert got['b_simple'] == pytest.approx(21.0, rel=0.1)
  assert 0 < got['gradient_sq_norm_stderr'] < 0.05


def test_gradient_square_norms_of_small_batches_and_their_big_batch():
  rng = np.random.default_rng(1)
  theta = jnp.asarray(rng.normal(size=3), jnp.float32)
  batches = [{'x': jnp.asarray(rng.normal(size=(2, 3)), jnp.float32),
              'y': jnp.asarray(rng.normal(size=2), jnp.float32)} for _ in range(3)]
  step = jax.jit(lambda batch, total: curvature.gradient_sums(_regression_loss, theta, batch,
                                                              total))
  losses_K, small_K, big = curvature.gradient_square_norms(step, batches, jnp.zeros(3))
  gradients = np.array([jax.grad(_regression_loss)(theta, b) for b in batches], np.float64)
  np.testing.assert_allclose(losses_K, [float(_regression_loss(theta, b)) for b in batches],
                             rtol=1e-6)
  np.testing.assert_allclose(small_K, np.sum(gradients ** 2, axis=1), rtol=1e-5)
  assert big == pytest.approx(np.sum(gradients.mean(axis=0) ** 2), rel=1e-5)


def test_expected_calibration_error_by_hand():
  # Bins of width 0.2: (0.8, 1] holds two right at 0.9 (|1 - 0.9| = 0.1), (0.6, 0.8] one of two at
  # 0.7 (0.2), (0.4, 0.6] a wrong 0.55 and (0.2, 0.4] a wrong 0.25.
  confidence, correct = [0.9, 0.9, 0.7, 0.7, 0.55, 0.25], [1, 1, 1, 0, 0, 0]
  expected = (2 * 0.1 + 2 * 0.2 + 0.55 + 0.25) / 6
  assert calibration.expected_calibration_error(confidence, correct, 5) == pytest.approx(expected)
  count, accuracy, mean_confidence = calibration.reliability_bins(confidence, correct, 5)
  assert count.tolist() == [0, 1, 1, 2, 2] and accuracy.tolist() == [0, 0, 0, 0.5, 1]
  np.testing.assert_allclose(mean_confidence, [0, 0.25, 0.55, 0.7, 0.9])
  calibrated = [0.75] * 4 + [0.5] * 2 + [0.0, 1.0]  # a confidence of 0 in the first bin
  assert calibration.expected_calibration_error(calibrated, [1, 1, 1, 0, 1, 0, 0, 1]) == 0.0
  likelihood_QC = np.log([[0.2, 0.6, 0.2], [0.5, 0.25, 0.25]])
  confidence_Q, correct_Q = calibration.choice_confidence(likelihood_QC, [1, 2])
  np.testing.assert_allclose(confidence_Q, [0.6, 0.5])
  assert correct_Q.tolist() == [True, False]


def _save_random_run(config, workdir: str) -> str:
  """test_scores.save_run of random parameters drawn on the host (nothing compiled)."""
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda x: rng.normal(0, 0.5, x.shape).astype(x.dtype),
                        placed.ModelOnMesh(config, jax.devices()[:1]).abstract_params)
  return test_scores.save_run(config, workdir, params)


@pytest.fixture(scope='module')
def run(data_dir, tmp_path_factory):
  """A checkpoint of tests/test_scores.py's tiny decoder on 2-digit sums."""
  config = test_scores._config(data_dir, notes='')
  config.data.tasks = ml_collections.ConfigDict({'sums': SUMS})
  config.data.mixture = ml_collections.ConfigDict({'sums': 1.0})
  return _save_random_run(config, str(tmp_path_factory.mktemp('curvature')))


def _run(**flag_values) -> str:
  values = {'task': 'sums', 'measures': ['hessian', 'noise_scale', 'calibration'],
            'calibration_task': 'sums', 'calibration_examples': 8, 'hessian_batch': 8,
            'hessian_probes': 4, 'hessian_iterations': 3, 'noise_small': 8, 'noise_big': 16,
            'noise_batches': 2, **flag_values}
  return commands.run_main(curvature_command.main, **values)


def test_command_writes_every_measure(run):
  printed = _run(checkpoint=[run])
  path = os.path.join(run, 'curvature', 'step0.json')
  assert f'wrote {path}' in printed
  with open(path) as f:
    result = json.load(f)
  assert result['step'] == 0 and result['measures'] == ['hessian', 'noise_scale', 'calibration']
  hessian, noise, calibration = result['hessian'], result['noise_scale'], result['calibration']
  assert hessian['batch_rows'] == 8 and noise['big_rows'] == 16
  for value in [*hessian.values(), *noise.values(), calibration['ece']]:
    assert math.isfinite(value)
  assert hessian['trace_stderr'] > 0 and noise['trace_sigma_stderr'] > 0
  assert calibration['questions'] == 8 and sum(calibration['bins']['count']) == 8
  assert 0 <= calibration['ece'] <= 1


def test_bad_flags_are_one_line_naming_the_flag(run, tmp_path):
  out = str(tmp_path / 'out.json')
  cases = [
      (dict(measures=['hessian', 'sharpness']), "--measures=hessian,sharpness names 'sharpness'"),
      (dict(hessian_probes=1), '--hessian_probes=1 must be at least 2'),
      (dict(noise_big=8), '--noise_big=8 must be larger than --noise_small=8'),
      (dict(task=None), '--measures=hessian and noise_scale need --task=NAME'),
      (dict(calibration_task=None), '--measures=calibration needs --calibration_task=NAME'),
      (dict(calibration_task='sum'), "--calibration_task names an unknown task 'sum'"),
      (dict(out=str(tmp_path)), f'--out={tmp_path} is a directory'),
      (dict(noise_small=1, noise_big=4, measures=['noise_scale']),
       '--noise_big=4 rounds to --noise_small=8'),
  ]
  for flag_values, message in cases:
    with pytest.raises(SystemExit, match=r'^error: .*' + message):
      _run(checkpoint=[run], **{'out': out, **flag_values})
  assert os.listdir(tmp_path) == []  # nothing written
