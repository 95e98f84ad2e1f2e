"""Membership inference: telling a model's training documents (members) from held-out ones.

Each attack turns a document's scores (research/analysis/scores.py) into one statistic, ordered so that one
end means "member"; over a member set and a non-member set of one distribution it is judged by the
ROC AUC and the TPR at a low FPR (Carlini et al. 2022, "Membership Inference Attacks From First
Principles", arXiv 2112.03570, argue the low-FPR end is what matters). Attacks (`ATTACKS`: name ->
higher_is_member):

    loss       nll, the document's mean token negative log-likelihood; lower = member (Yeom et al.
               2018, "Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting",
               arXiv 1709.01604)
    zlib       nll / zlib bits, zlib bits being 8 x the bytes of the document's UTF-8 text
               compressed by zlib at level 9: the zlib-entropy ratio of Carlini et al. 2021
               ("Extracting Training Data from Large Language Models", arXiv 2012.07805), which
               discounts text that is easy for any compressor; lower = member
    min_k      min_k_prob, Min-K% prob (Shi et al. 2023, "Detecting Pretraining Data from Large
               Language Models", arXiv 2310.16789): the mean log-probability of the k least likely
               fraction of the document's tokens; higher = member
    reference  nll - reference_nll, the target's minus a reference model's nll on the same tokens,
               the log of their perplexity ratio: the reference-model comparison of Carlini et al.
               2021 (who rank by the ratio of the two log-perplexities), in the difference form of
               difficulty calibration (Watson et al. 2022, "On the Importance of Difficulty
               Calibration in Membership Inference Attacks", arXiv 2111.08440); it discounts
               documents that are easy for any model; lower = member. Only when the scores carry
               `reference_nll`.
"""

import math

import numpy as np

from research import finished
from research.analysis import scores as scores_lib
from research.data import store as store_lib

ATTACKS = {'loss': False, 'zlib': False, 'min_k': True, 'reference': False}  # higher_is_member
DEFAULT_FPR = 0.01


def _oriented(member, nonmember, higher_is_member: bool) -> tuple[np.ndarray, np.ndarray]:
  """Both score sets as float64 arrays, negated unless higher_is_member (so higher = member)."""
  sign = 1.0 if higher_is_member else -1.0
  member, nonmember = (sign * np.asarray(s, np.float64).ravel() for s in (member, nonmember))
  if not len(member) or not len(nonmember):
    raise ValueError(f'Membership metrics need members and non-members; got {len(member)} and '
                     f'{len(nonmember)}.')
  return member, nonmember


def roc_auc(member_scores, nonmember_scores, higher_is_member: bool = True) -> float:
  """The exact area under the ROC curve of telling members from non-members by a score: the
  probability that a random member scores more member-like than a random non-member, ties counted
  half, i.e. the Mann-Whitney U statistic of the members over m x n (m members, n non-members).
  1.0: every member is more member-like than every non-member; 0.5: no better than chance."""
  member, nonmember = _oriented(member_scores, nonmember_scores, higher_is_member)
  nonmember = np.sort(nonmember)
  below = np.searchsorted(nonmember, member, side='left')  # non-members strictly less member-like
  tied = np.searchsorted(nonmember, member, side='right') - below
  return float((below.sum() + 0.5 * tied.sum()) / (len(member) * len(nonmember)))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = DEFAULT_FPR,
               higher_is_member: bool = True) -> float:
  """The share of members flagged at the threshold that flags at most `fpr` of the non-members.

  With scores oriented so that higher = member, a document is flagged when its score is strictly
  above a threshold t. Of n non-members, j = floor(fpr x n) may be flagged; t is the (n - j)-th
  smallest non-member score (-inf when j = n), so the non-members above it are at most j (fewer
  when others tie with it). The result is the fraction of members strictly above t. With fewer
  than 1 / fpr non-members j is 0, t is the most member-like non-member, and the TPR is the share
  of members more member-like than every non-member.
  """
  member, nonmember = _oriented(member_scores, nonmember_scores, higher_is_member)
  if not 0 <= fpr <= 1:
    raise ValueError(f'fpr={fpr} must be in [0, 1].')
  allowed = int(math.floor(fpr * len(nonmember) + 1e-9))  # slack: 0.29 x 100 is 28.999... in floats
  threshold = -np.inf if allowed == len(nonmember) else np.sort(nonmember)[-allowed - 1]
  return float(np.mean(member > threshold))


def zlib_bits(texts: list[str]) -> np.ndarray:
  """[D] float64: 8 x the zlib-compressed bytes (level 9) of each text's UTF-8 encoding, from
  research/analysis/scores.py's zlib_ratio; an empty text counts one byte."""
  sizes = [scores_lib.zlib_ratio(t) * len(t.encode('utf-8')) for t in texts]
  return 8.0 * np.maximum(1, np.round(sizes))


def attack_statistics(scores: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Each attack's per-document statistic (the `ATTACKS` names -> [D]) from per-document `nll`,
  `min_k_prob`, `zlib_bits` and optionally `reference_nll` [D]; `reference` only with the latter."""
  nll = np.asarray(scores['nll'], np.float64)
  statistics = {'loss': nll, 'zlib': nll / np.asarray(scores['zlib_bits'], np.float64),
                'min_k': np.asarray(scores['min_k_prob'], np.float64)}
  if 'reference_nll' in scores:
    statistics['reference'] = nll - np.asarray(scores['reference_nll'], np.float64)
  return statistics


def attack_report(member: dict[str, np.ndarray], nonmember: dict[str, np.ndarray],
                  fpr: float = DEFAULT_FPR) -> dict[str, dict]:
  """For each attack of `attack_statistics` on both sets (`reference` when both carry
  `reference_nll`), in `ATTACKS` order: {'auc': roc_auc, 'tpr_at_fpr': tpr_at_fpr at `fpr`,
  'higher_is_member': its direction}. `member` and `nonmember` are per-document score dicts as
  `attack_statistics` takes (e.g. from `document_scores`)."""
  member_statistics = attack_statistics(member)
  nonmember_statistics = attack_statistics(nonmember)
  report = {}
  for name, higher in ATTACKS.items():
    if name in member_statistics and name in nonmember_statistics:
      pair = member_statistics[name], nonmember_statistics[name]
      report[name] = {'auc': roc_auc(*pair, higher_is_member=higher),
                      'tpr_at_fpr': tpr_at_fpr(*pair, fpr=fpr, higher_is_member=higher),
                      'higher_is_member': higher}
  return report


def sample_documents(num_documents: int, count: int, seed: int) -> np.ndarray:
  """int64 [min(count, num_documents)]: a seeded choice without replacement of document indices
  in [0, num_documents), ascending."""
  rng = np.random.default_rng(seed)
  return np.sort(rng.choice(num_documents, min(count, num_documents), replace=False)).astype(
      np.int64)


def document_scores(loaded: finished.LoadedCheckpoint, store: store_lib.DocumentStore,
                    vocabulary, k: float = scores_lib.DEFAULT_MIN_K,
                    batch_size: int = 0) -> dict[str, np.ndarray]:
  """`nll`, `min_k_prob` (at `k`) and `zlib_bits` [D] of the documents of `store` (e.g. a
  research/data/selection.py `subset` of `sample_documents`) under the checkpoint, by
  research/analysis/scores.py's model_scores (`batch_size` rows per forward pass, 0: the run's
  eval.batch_size; a multiple of the data-parallel size). A reference model's `reference_nll` is
  model_scores' `nll` of the same tokens under the reference checkpoint."""
  model = scores_lib.model_scores(loaded, store.tokens, store.offsets, k, batch_size)
  return {'nll': model['nll'], 'min_k_prob': model['min_k_prob'],
          'zlib_bits': zlib_bits(store.texts(vocabulary))}
