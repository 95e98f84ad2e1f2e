"""Forgetting over training: the decay of knowledge-injection probes' gap, the stability gap, and
backward and forward transfer over a sequence of domains.

research/data/probes.py puts a probe's documents into the batches of its exposure steps; the
training loop evaluates them and a control set of the same task never trained on. The gap (the
control's loss minus the probe's, nats per token) measures what the model holds of the injected
documents. Chang et al. 2024 ("How Do Large Language Models Acquire Factual Knowledge During
Pretraining?", arXiv 2406.11813) find it decays as a power law in the steps since the last
exposure; `forgetting_fit` fits that law, and an exponential decay beside it to compare.

At the start of continual pretraining on a new domain, its performance first drops, then recovers:
the stability gap (De Lange et al. 2023, "Continual evaluation for lifelong learning: Identifying
the stability gap", arXiv 2205.13452; in LLMs, Guo et al. 2024, "Efficient Continual Pre-training
by Mitigating the Stability Gap", arXiv 2406.14833). `stability_gap` measures it on a curve
evaluated from step 0.

Over a sequence of domains trained one after another (the stages of `data.stages`: prose -> code
-> arithmetic), `backward_transfer` and `forward_transfer` are the BWT and FWT of Lopez-Paz &
Ranzato 2017 ("Gradient Episodic Memory for Continual Learning", arXiv 1706.08840), adapted to
losses: R[i, j] is the eval loss on domain j at the end of stage i. Lower loss is better, so the
signs are the reverse of the paper's accuracies: BWT > 0 is forgetting (the earlier domains' loss
rose after their stage), FWT < 0 is positive forward transfer (the earlier stages lowered a domain's
loss before it was trained, below the reference).
"""

import numpy as np

BASELINE_EVALUATIONS = 5  # the evaluations before the first exposure whose mean gap is the baseline


def forgetting_fit(steps, gaps, exposures) -> dict[str, float] | None:
  """The decay of a probe's gap after its last exposure, fitted as a power law.

  The evaluation logged at step s follows training steps 0 .. s - 1, so it sees exposure e when
  s > e. The probe and its control are different documents, so their gap is not 0 before the
  first exposure: the `baseline` is the mean gap of the last `BASELINE_EVALUATIONS` evaluations
  before it (0 without any), and what the exposures added is gap - baseline. Over the evaluations
  after the last exposure where it is positive, gap - baseline = a * t^-b with t the steps since
  the last exposure (Chang et al. 2024) is fitted by least squares on log-log axes; the
  alternative, an exponential decay a' * exp(-t / tau), on log-linear axes over the same points,
  so that the two r2 (both of log(gap - baseline)) say which form the decay follows.

  Returns {'baseline', 'after' (the added gap at the first evaluation after the last exposure),
  'final' (at the last evaluation), 'a', 'b' (the forgetting exponent: larger = forgotten faster),
  'r2' (of the log-log line), 'tau', 'r2_exponential' (of the log-linear line), 'points'}; the
  fitted values are None with fewer than 3 points, and None is returned when no evaluation follows
  the last exposure.
  """
  steps, gaps = np.asarray(steps, np.float64), np.asarray(gaps, np.float64)
  before = gaps[steps <= exposures[0]][-BASELINE_EVALUATIONS:]
  baseline = float(np.mean(before)) if len(before) else 0.0
  later = steps > exposures[-1]
  if not np.any(later):
    return None
  added = gaps - baseline
  fit = {'baseline': baseline, 'after': float(added[later][0]), 'final': float(added[-1]),
         'a': None, 'b': None, 'r2': None, 'tau': None, 'r2_exponential': None}
  points = later & (added > 0)
  fit['points'] = int(np.sum(points))
  if fit['points'] < 3:
    return fit
  t, log_gap = steps[points] - exposures[-1], np.log(added[points])
  slope, intercept, r2 = _line(np.log(t), log_gap)
  fit.update(a=float(np.exp(intercept)), b=float(-slope), r2=r2)
  slope, _, r2 = _line(t, log_gap)
  fit.update(tau=float(-1.0 / slope) if slope else None, r2_exponential=r2)
  return fit


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
  """(slope, intercept, r2) of the least-squares line through (x, y)."""
  slope, intercept = np.polyfit(x, y, 1)
  spread = np.sum(np.square(y - np.mean(y)))
  residual = np.sum(np.square(y - (slope * x + intercept)))
  return float(slope), float(intercept), float(1.0 - residual / spread if spread > 0 else 1.0)


def stability_gap(steps, values, higher_is_better: bool) -> dict[str, float | int | None] | None:
  """The dip of an evaluation curve below its step-0 value, and when it is back.

  `values` are a metric's evaluations at `steps` (ascending), the first at step 0 (the model the
  run started from); `higher_is_better` for an accuracy, not for a loss. `depth` is how much worse
  than the step-0 value the worst later evaluation is (for an accuracy its largest drop, for a loss
  its largest rise), 0 when none is worse; `dip_step` is the step of that worst evaluation (the
  first, on a tie). `recovered_step`, the steps to recover, is the first step after `dip_step`
  whose value is back at the step-0 value or better: 0 without a dip, None when the curve never
  gets back.

  Returns {'start', 'depth', 'dip_step', 'recovered_step'}; None when the first evaluation is not
  at step 0 or there is none after it.
  """
  steps, values = np.asarray(steps), np.asarray(values, np.float64)
  if len(steps) < 2 or steps[0] != 0:
    return None
  start = values[0]
  worse_by = (start - values if higher_is_better else values - start)[1:]  # > 0: below start
  worst = int(np.argmax(worse_by)) + 1
  if worse_by[worst - 1] <= 0:
    return {'start': float(start), 'depth': 0.0, 'dip_step': None, 'recovered_step': 0}
  back = np.flatnonzero(worse_by[worst:] <= 0)
  return {'start': float(start), 'depth': float(worse_by[worst - 1]), 'dip_step': int(steps[worst]),
          'recovered_step': int(steps[worst + 1 + back[0]]) if len(back) else None}


def backward_transfer(losses_TT) -> float:
  """BWT of a sequence of T >= 2 domains: the mean over the earlier domains j < T - 1 of
  R[T - 1, j] - R[j, j], the loss on domain j at the end of training less its loss at the end of
  its own stage j (`losses_TT`[i, j] = R[i, j], losses at the end of each stage); > 0: forgotten."""
  losses_TT = _transfer_matrix(losses_TT)
  return float(np.mean(losses_TT[-1, :-1] - np.diag(losses_TT)[:-1]))


def forward_transfer(losses_TT, reference_T) -> float:
  """FWT of a sequence of T >= 2 domains: the mean over the domains j > 0 of R[j - 1, j] -
  reference[j], the loss on domain j before its stage began (at the end of stage j - 1) less its
  reference loss (`reference_T`: before any training, at step 0 or the uniform prediction's);
  < 0: the earlier stages helped."""
  losses_TT = _transfer_matrix(losses_TT)
  reference_T = np.asarray(reference_T, np.float64)
  if reference_T.shape != losses_TT.shape[:1]:
    raise ValueError(f'{reference_T.shape[0]} reference losses for {len(losses_TT)} domains.')
  return float(np.mean(np.diag(losses_TT, k=1) - reference_T[1:]))


def _transfer_matrix(losses_TT) -> np.ndarray:
  losses_TT = np.asarray(losses_TT, np.float64)
  if losses_TT.ndim != 2 or losses_TT.shape[0] != losses_TT.shape[1] or len(losses_TT) < 2:
    raise ValueError(f'Transfer needs a T x T loss table with T >= 2, got shape {losses_TT.shape}.')
  return losses_TT
