import math

import ml_collections
import numpy as np
import pytest

from research import errors, schedules


def _config(**kwargs):
  return ml_collections.ConfigDict(kwargs)


def test_warmup_cosine_values():
  fn = schedules.make_schedule(
      _config(name='warmup_cosine', peak_lr=1e-3, warmup_steps=10, final_lr_fraction=0.1), 110)
  np.testing.assert_allclose(fn(0), 1e-4, rtol=1e-6)  # (0 + 1) / 10 of the peak
  np.testing.assert_allclose(fn(9), 1e-3, rtol=1e-6)  # warmup ends at the peak
  np.testing.assert_allclose(fn(10), 1e-3, rtol=1e-6)
  # Halfway through the decay: floor + half the range.
  np.testing.assert_allclose(fn(60), 1e-4 + 0.5 * 9e-4, rtol=1e-6)
  np.testing.assert_allclose(fn(35), 1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 4)), rtol=1e-6)
  np.testing.assert_allclose(fn(110), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(fn(500), 1e-4, rtol=1e-6)  # stays at the floor


def test_constant_with_and_without_warmup():
  fn = schedules.make_schedule(_config(name='constant', peak_lr=2e-3, warmup_steps=4), 100)
  np.testing.assert_allclose([fn(0), fn(1), fn(3), fn(50)], [5e-4, 1e-3, 2e-3, 2e-3], rtol=1e-6)
  fn = schedules.make_schedule(_config(name='constant', peak_lr=2e-3, warmup_steps=0), 100)
  np.testing.assert_allclose(fn(0), 2e-3, rtol=1e-6)


def test_unknown_schedule_names_the_key():
  with pytest.raises(errors.UserError, match="schedule.name='cosine'"):
    schedules.make_schedule(_config(name='cosine', peak_lr=1.0), 10)
