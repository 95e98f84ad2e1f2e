"""Learning-curve extrapolation, and early stopping by it.

Modeling of learning curves with applications to POS tagging (SEEDS.md section 6, "early-run
predictors for early stopping") extrapolates the learning curve from the part of training seen so
far, refits it as more arrives, and stops once the curve promises less than a threshold of
further gain. The curve here is the inverse power law in the step t,

  L(t) = E + A / t^gamma,

the form of the compute law, fitted as research/analysis/scaling.fit_compute_law fits it (Huber
loss on log L from a grid of starts).
"""

import dataclasses
from collections.abc import Sequence

import numpy as np

from research import errors
from research.analysis import scaling

MIN_POINTS = 4  # the fit's 3 constants and one point more


@dataclasses.dataclass(frozen=True)
class Extrapolation:
  """The curve fitted to the evaluations up to `step`, and what it predicts.

  Attributes:
    step: the last evaluation the fit saw.
    points: how many evaluations it saw.
    fit: E, A and gamma.
    at_step: the fitted loss at `step`.
    predicted: the fitted loss at the horizon.
  """
  step: int
  points: int
  fit: scaling.ComputeLawFit
  at_step: float
  predicted: float

  @property
  def gain(self) -> float:
    """What the curve promises from `step` to the horizon: `at_step` - `predicted`."""
    return self.at_step - self.predicted


def extrapolations(steps: Sequence[float], losses: Sequence[float], horizon: float,
                   min_points: int = MIN_POINTS) -> list[Extrapolation]:
  """One `Extrapolation` to `horizon` per prefix of the evaluations (steps > 0, increasing) with
  at least `min_points` (>= MIN_POINTS) of them: the curve as it would have been fitted during
  training, after each evaluation."""
  if min_points < MIN_POINTS:
    raise ValueError(f'min_points={min_points}: the curve has 3 constants; at least {MIN_POINTS}.')
  steps_P, losses_P = np.asarray(steps, np.float64), np.asarray(losses, np.float64)
  if steps_P.shape != losses_P.shape or steps_P.ndim != 1:
    raise ValueError(f'{steps_P.shape} steps for {losses_P.shape} losses.')
  if np.any(steps_P <= 0) or np.any(np.diff(steps_P) <= 0):
    raise errors.UserError('A learning curve needs evaluations at increasing steps > 0; got steps '
                           f'{steps_P.tolist()}.')
  if not np.all(np.isfinite(losses_P)) or np.any(losses_P <= 0):
    raise errors.UserError(f'A learning curve needs finite losses > 0; got {losses_P.tolist()}.')
  if len(steps_P) < min_points:
    raise errors.UserError(f'{len(steps_P)} evaluations: the curve E + A / t^gamma needs at least '
                           f'{min_points}.')
  if horizon <= steps_P[-1]:
    raise errors.UserError(f'The horizon, step {horizon:g}, must come after the last evaluation, '
                           f'step {steps_P[-1]:g}.')
  found = []
  for points in range(min_points, len(steps_P) + 1):
    fit = scaling.fit_compute_law(steps_P[:points], losses_P[:points])
    step = steps_P[points - 1]
    found.append(Extrapolation(
        step=int(step), points=points, fit=fit,
        at_step=float(scaling.predict_compute(fit, step)),
        predicted=float(scaling.predict_compute(fit, horizon))))
  return found


def stopping_point(found: Sequence[Extrapolation], threshold: float) -> Extrapolation | None:
  """The first extrapolation whose promised `gain` is below `threshold` (nats): where training
  would have stopped; None when every one promised more."""
  return next((extrapolation for extrapolation in found if extrapolation.gain < threshold), None)
