"""Knowledge-injection probes over training: their exposure steps, the gap metric, and the fit of
its decay (forgetting).

research/data/probes.py puts a probe's documents into the batches of its exposure steps; the
training loop evaluates them and a control set of the same task never trained on. The gap (the
control's loss minus the probe's, nats per token) measures what the model holds of the injected
documents. Chang et al. 2024 ("How Do Large Language Models Acquire Factual Knowledge During
Pretraining?", arXiv 2406.11813) find it decays as a power law in the steps since the last
exposure; `forgetting_fit` fits that law.
"""

import numpy as np

from research import errors, schedules


def count(spec, key: str, name: str) -> int:
  """Probe `name`'s integer `key` (default 1), checked to be >= 1."""
  value = spec.get(key, 1)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise errors.UserError(f'data.probes.{name}.{key}={value!r} must be an integer >= 1.')
  return value


def exposure_steps(spec, name: str, total_steps: int) -> tuple[int, ...]:
  """The steps whose batches hold probe `name` (`spec`, its `data.probes` entry, a ConfigDict
  or the dict of a run's config.json): `at`, `at + every`, ..., `times` of them."""
  at = schedules.start_step(spec, f'data.probes.{name}', total_steps)
  every = count(spec, 'every', name)
  return tuple(at + i * every for i in range(count(spec, 'times', name)))


def gap_metrics(results: dict[str, float], names) -> dict[str, float]:
  """`eval/probe/<name>/gap`: the control's eval loss minus the probe's, for each probe name."""
  return {f'eval/probe/{name}/gap': results[f'eval/probe/{name}/control/loss']
          - results[f'eval/probe/{name}/loss'] for name in names}


def forgetting_fit(steps, gaps, last_exposure: int) -> dict[str, float] | None:
  """The power law gap(t) = a * t^-b in t = steps since `last_exposure` (Chang et al. 2024), by
  least squares on log gap against log t over the evaluations after it with a positive gap.

  Returns {'a', 'b' (the forgetting exponent: larger = forgotten faster), 'r2' (of the log-log
  line), 'points'}, or None with fewer than 3 such evaluations.
  """
  steps, gaps = np.asarray(steps, np.float64), np.asarray(gaps, np.float64)
  after = (steps > last_exposure) & (gaps > 0)
  if np.sum(after) < 3:
    return None
  log_t, log_gap = np.log(steps[after] - last_exposure), np.log(gaps[after])
  slope, intercept = np.polyfit(log_t, log_gap, 1)
  residual = log_gap - (slope * log_t + intercept)
  spread = np.sum(np.square(log_gap - np.mean(log_gap)))
  r2 = 1.0 - np.sum(np.square(residual)) / spread if spread > 0 else 1.0
  return {'a': float(np.exp(intercept)), 'b': float(-slope), 'r2': float(r2),
          'points': int(np.sum(after))}
