"""The calibration of a checkpoint's answers: the expected calibration error (Guo et al. 2017, "On
Calibration of Modern Neural Networks", arXiv 1706.04599) over M equal-width confidence bins
B_m = ((m-1)/M, m/M]: ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|. Of a checkpoint it is measured
on the in-loop multiple-choice questions of a task whose documents are a prompt and its answer
(research/multiple_choice.py): the confidence is the pick's probability among the candidates (the
softmax of their summed answer-token log-probabilities), as Kadavath et al. 2022 ("Language Models
(Mostly) Know What They Know", arXiv 2207.05221) measure multiple-choice calibration.
`python -m launch.curvature --measures=calibration` writes it.
"""

import jax
import numpy as np

from research import finished, multiple_choice, sharding

DEFAULT_BINS = 10


def reliability_bins(confidence_N, correct_N, num_bins: int = DEFAULT_BINS
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(count [M], accuracy [M], confidence [M]) of M = `num_bins` equal-width bins
  ((m-1)/M, m/M] (a confidence of 0 in the first): how many predictions fall in each, the fraction
  of them that are right and their mean confidence (both 0 in an empty bin)."""
  confidence_N = np.asarray(confidence_N, np.float64)
  bin_N = np.clip(np.ceil(confidence_N * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
  count = np.bincount(bin_N, minlength=num_bins)
  sums = [np.bincount(bin_N, weights, num_bins)
          for weights in (np.asarray(correct_N, np.float64), confidence_N)]
  accuracy, confidence = (s / np.maximum(count, 1) for s in sums)
  return count, accuracy, confidence


def expected_calibration_error(confidence_N, correct_N, num_bins: int = DEFAULT_BINS) -> float:
  """ECE = sum_m |B_m| / n |acc(B_m) - conf(B_m)| over `reliability_bins` (Guo et al. 2017, arXiv
  1706.04599) of predictions of confidence `confidence_N` in [0, 1], right where `correct_N`."""
  count, accuracy, confidence = reliability_bins(confidence_N, correct_N, num_bins)
  return float(np.sum(count * np.abs(accuracy - confidence)) / np.sum(count))


def choice_confidence(likelihood_QC, right_Q) -> tuple[np.ndarray, np.ndarray]:
  """(confidence [Q], correct [Q]) of Q multiple-choice questions from each candidate's summed
  log-probability [Q, C]: the pick (the likeliest candidate, as multiple_choice.accuracy picks)
  and its probability among the candidates (their softmax), and whether it is the right one."""
  likelihood_QC = np.asarray(likelihood_QC, np.float64)
  shifted_QC = likelihood_QC - likelihood_QC.max(axis=1, keepdims=True)
  confidence_Q = 1.0 / np.sum(np.exp(shifted_QC), axis=1)  # the pick's shifted value is 0
  return confidence_Q, np.argmax(likelihood_QC, axis=1) == np.asarray(right_Q)


def choice_calibration(loaded: finished.LoadedCheckpoint,
                       choice_set: multiple_choice.ChoiceSet,
                       num_bins: int = DEFAULT_BINS) -> dict:
  """The checkpoint's `ece` on the questions of `choice_set` (multiple_choice.choice_set) over
  `num_bins` bins, with their `accuracy` (multiple_choice's mc_accuracy), `mean_confidence`,
  `questions` and each bin's `count`, `accuracy` and `confidence` (`bins`, the reliability
  diagram)."""
  step = multiple_choice.make_choice_step(loaded.model, sharding.replicated(loaded.placed.mesh))
  log_probs = jax.device_get([loaded.apply(step, batch) for batch in choice_set.batches])
  confidence_Q, correct_Q = choice_confidence(
      multiple_choice.candidate_scores(choice_set, log_probs), choice_set.right)
  count, accuracy, confidence = reliability_bins(confidence_Q, correct_Q, num_bins)
  return {'ece': expected_calibration_error(confidence_Q, correct_Q, num_bins),
          'accuracy': float(np.mean(correct_Q)), 'mean_confidence': float(np.mean(confidence_Q)),
          'questions': len(correct_Q),
          'bins': {'count': count.tolist(), 'accuracy': accuracy.tolist(),
                   'confidence': confidence.tolist()}}
