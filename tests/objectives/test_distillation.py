"""Knowledge distillation: the tempered KL sum, by hand, and its gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import base
from research import errors
from research.objectives import distillation


def _random_logits(seed: int):
  rng = np.random.default_rng(seed)
  return jnp.asarray(rng.normal(size=[2, 5, 7]) * 2.0, jnp.float32)


@pytest.mark.parametrize('temperature', [1.0, 2.5])
def test_zero_when_the_student_equals_the_teacher_and_positive_otherwise(temperature):
  logits, other = _random_logits(0), _random_logits(1)
  weights = jnp.ones([2, 5])
  same = distillation.distillation_sums(logits, logits, weights, temperature)
  assert abs(float(same['kl_sum'])) < 1e-6
  assert float(same['weight_sum']) == 10.0
  assert float(distillation.distillation_sums(other, logits, weights, temperature)['kl_sum']) > 0.1


def test_kl_sum_by_hand():
  # Two tokens over 3 words. Token 0: teacher (ln 2, 0, 0) -> (1/2, 1/4, 1/4), student uniform.
  # Token 1 (weight 0.5): teacher uniform, student (0, 0, ln 2) -> (1/4, 1/4, 1/2).
  # At T = 2 both are softened first: teacher 0 -> (sqrt 2, 1, 1) / (2 + sqrt 2).
  ln2 = math.log(2.0)
  teacher = jnp.array([[[ln2, 0.0, 0.0], [0.0, 0.0, 0.0]]])
  student = jnp.array([[[0.0, 0.0, 0.0], [0.0, 0.0, ln2]]])
  weights = jnp.array([[1.0, 0.5]])
  kl = lambda p, q: sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
  third = [1 / 3] * 3
  sums = distillation.distillation_sums(student, teacher, weights, 1.0)
  expected = kl([0.5, 0.25, 0.25], third) + 0.5 * kl(third, [0.25, 0.25, 0.5])
  np.testing.assert_allclose(sums['kl_sum'], expected, rtol=1e-5)
  np.testing.assert_allclose(sums['weight_sum'], 1.5)
  r = math.sqrt(2.0)
  sums = distillation.distillation_sums(student, teacher, weights, 2.0)
  expected = 4.0 * (kl([r / (2 + r), 1 / (2 + r), 1 / (2 + r)], third)
                    + 0.5 * kl(third, [1 / (2 + r), 1 / (2 + r), r / (2 + r)]))
  np.testing.assert_allclose(sums['kl_sum'], expected, rtol=1e-5)


def test_gradient_is_the_probability_difference_and_the_teacher_gets_none():
  student, teacher = _random_logits(2), _random_logits(3)
  weights = jnp.asarray(np.random.default_rng(4).uniform(size=[2, 5]), jnp.float32)
  loss = lambda s, t: distillation.distillation_sums(s, t, weights, 1.0)['kl_sum']
  student_grad, teacher_grad = jax.grad(loss, argnums=(0, 1))(student, teacher)
  expected = (jax.nn.softmax(student) - jax.nn.softmax(teacher)) * weights[..., None]
  np.testing.assert_allclose(student_grad, expected, atol=1e-6)
  assert not np.any(teacher_grad)


def test_bfloat16_logits_are_taken_in_float32():
  logits = _random_logits(5)
  sums = distillation.distillation_sums(logits.astype(jnp.bfloat16), logits, jnp.ones([2, 5]), 1.0)
  assert sums['kl_sum'].dtype == jnp.float32


@pytest.mark.parametrize('key, value, fragment', [
    ('temperature', 0.0, r'objective\.distill\.temperature=0\.0'),
    ('temperature', -1.0, r'objective\.distill\.temperature=-1\.0'),
    ('weight', 1.5, r'objective\.distill\.weight=1\.5'),
    ('weight', -0.5, r'objective\.distill\.weight=-0\.5'),
    ('until', -0.1, r'objective\.distill\.until=-0\.1 must be 0 \(distill throughout\)'),
    ('until', 2.5, r'objective\.distill\.until=2\.5 must be 0'),
])
def test_check_config_names_the_bad_key(key, value, fragment):
  config = base.get_config()
  distillation.check_config(config)
  config.objective.distill[key] = value
  with pytest.raises(errors.UserError, match=fragment):
    distillation.check_config(config)


def test_the_weight_ends_at_until_abruptly_or_linearly():
  config = base.get_config().objective.distill
  config.weight = 0.375  # exact in float32
  weight = lambda step, total=100: float(distillation.weight_at(config, step, total))
  assert weight(0) == weight(10**6) == 0.375  # until 0: throughout
  config.until = 0.25  # a fraction of the 100 steps: step 25
  assert distillation.until_step(config, 100) == 25
  assert [weight(s) for s in (0, 24, 25, 99)] == [0.375, 0.375, 0.0, 0.0]
  config.until, config.shape = 20, 'linear'  # a step
  np.testing.assert_allclose([weight(s) for s in (0, 5, 10, 19, 20, 50)],
                             [0.375, 0.28125, 0.1875, 0.01875, 0.0, 0.0], rtol=1e-6)
  assert weight(5, total=10**6) == weight(5)  # a whole step does not scale with train.steps


def test_hidden_sums_by_hand_and_the_teacher_gets_no_gradient():
  student = jnp.array([[[1.0, 2.0], [0.0, 0.0]], [[3.0, 3.0], [1.0, -1.0]]])
  teacher = jnp.array([[[1.0, 0.0], [5.0, 5.0]], [[0.0, 3.0], [1.0, 1.0]]])
  weights = jnp.array([[1.0, 0.0], [0.5, 2.0]])
  # Per token: mean squared difference (0 + 4) / 2 = 2, (weight 0), (9 + 0) / 2 = 4.5, (0 + 4) / 2.
  np.testing.assert_allclose(distillation.hidden_sums(student, teacher, weights),
                             2.0 + 0.5 * 4.5 + 2.0 * 2.0, rtol=1e-6)
  grads = jax.grad(distillation.hidden_sums, argnums=(0, 1))(student, teacher, weights)
  np.testing.assert_allclose(grads[0], (student - teacher) * weights[..., None], rtol=1e-6)
  assert not np.any(grads[1])


def test_a_negative_hidden_weight_is_named():
  config = base.get_config()
  config.objective.distill.hidden_weight = -1.0
  with pytest.raises(errors.UserError, match=r'objective\.distill\.hidden_weight=-1\.0 must be '):
    distillation.check_config(config)


def test_logit_swap_ranks_the_target_first_and_keeps_the_rest():
  """Mix-CPT's logit swap (arXiv 2407.10804): the target's logit and the largest trade places."""
  logits = jnp.array([[[1.0, 3.0, 2.0], [1.0, 3.0, 2.0], [1.0, 3.0, 2.0]]])
  swapped = distillation.swap_logits(logits, jnp.array([[2, 1, 0]]))
  np.testing.assert_array_equal(swapped, [[[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [3.0, 1.0, 2.0]]])
  teacher = _random_logits(5)
  targets = jnp.asarray(np.random.default_rng(6).integers(7, size=[2, 5]))
  swapped = distillation.swap_logits(teacher, targets)
  assert np.all(np.argmax(swapped, axis=-1) == targets)
  np.testing.assert_allclose(np.sort(swapped, axis=-1), np.sort(teacher, axis=-1))  # same values
  # The KL is taken to the swapped teacher: zero for a student that is it.
  weights = jnp.ones([2, 5])
  assert abs(float(distillation.distillation_sums(swapped, teacher, weights, 2.0,
                                                  targets)['kl_sum'])) < 1e-5
  assert float(distillation.distillation_sums(teacher, teacher, weights, 2.0,
                                              targets)['kl_sum']) > 0.1
