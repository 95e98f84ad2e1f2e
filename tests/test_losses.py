import math

import jax.numpy as jnp
import numpy as np

from research.objectives import losses


def test_cross_entropy_z_loss_and_accuracy_by_hand():
  # Two tokens over a vocabulary of 3. Token 0: logits (0, ln 2, 0) -> Z = 4, target 1.
  # Token 1: logits (0, 0, 0) -> Z = 3, target 2, weight 0.5. Token 2 has weight 0.
  logits = jnp.array([[[0.0, math.log(2.0), 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]])
  targets = jnp.array([[1, 2, 1]])
  weights = jnp.array([[1.0, 0.5, 0.0]])
  sums = losses.token_cross_entropy(logits, targets, weights, z_loss=1e-2)
  ce0, ce1 = math.log(4.0) - math.log(2.0), math.log(3.0)
  np.testing.assert_allclose(sums['cross_entropy_sum'], ce0 + 0.5 * ce1, rtol=1e-6)
  np.testing.assert_allclose(sums['z_loss_sum'], 1e-2 * (math.log(4.0) ** 2 + 0.5 * math.log(3.0) ** 2),
                             rtol=1e-6)
  np.testing.assert_allclose(sums['loss_sum'], sums['cross_entropy_sum'] + sums['z_loss_sum'])
  # Token 0's argmax is the target (1); token 1's argmax is 0, not 2.
  np.testing.assert_allclose(sums['correct_sum'], 1.0)
  np.testing.assert_allclose(sums['weight_sum'], 1.5)
  means = losses.mean_metrics(sums)
  np.testing.assert_allclose(means['loss'], (ce0 + 0.5 * ce1) / 1.5, rtol=1e-6)
  np.testing.assert_allclose(means['accuracy'], 1 / 1.5, rtol=1e-6)
  np.testing.assert_allclose(means['tokens'], 1.5)


def test_zero_z_loss_coefficient_gives_plain_cross_entropy():
  logits = jnp.array([[[1.0, 2.0, 3.0]]])
  sums = losses.token_cross_entropy(logits, jnp.array([[0]]), jnp.array([[1.0]]))
  assert float(sums['z_loss_sum']) == 0.0
  np.testing.assert_allclose(sums['loss_sum'], math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 1,
                             rtol=1e-6)
