"""RegMix: choosing a data mixture by regression over small proxy runs.

Liu et al. 2024, "RegMix: Data Mixture as Regression for Language Model Pre-training",
arXiv 2407.01492 (reference implementation: github.com/sail-sg/regmix). The method:

1. sample mixture weight vectors from a Dirichlet prior (`sample_mixtures`);
2. train one small proxy model per mixture (a sweep, experiments/regmix.py) and record a target
   evaluation loss;
3. fit a regression from the mixture weights to the target loss (`fit`);
4. predict the loss of many candidate mixtures drawn from the same prior and average the top-k
   (`predict_best`); train the large model on that mixture.

The paper regresses with LightGBM (gradient-boosted trees) and also reports linear regression.
Here the regressor is ridge regression on the weights and, when they help, log(w + eps) and the
pairwise products w_i w_j, with the feature set and the ridge penalty chosen by leave-one-out
cross-validation (closed form): deterministic, dependency-free, and usable with tens of runs (the
paper's boosted trees stop early on a validation split of 128 of its 1000 runs). Fit quality is
the Spearman rank correlation of out-of-fold predictions (k-fold, the selection repeated inside
every fold), the measure the paper reports on those 128 held-out runs.

Shapes in names: N runs, T tasks (domains), M candidates, F features.
"""

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from research import errors

# The paper's sampling defaults (sail-sg/regmix mixture_config/synthesize_mixture.py).
TEMPERATURE = 0.5  # the token-count prior is raised to this power and renormalised
MIN_STRENGTH, MAX_STRENGTH, NUM_STRENGTHS = 0.1, 5.0, 15  # Dirichlet concentrations, log-spaced
MAX_USAGE = 15.0  # reject a mixture giving a domain more than 15 x its token share
MINIMUM = 2e-4  # weights below this are zeroed; weights are then rounded to multiples of it
SAMPLE_MULTIPLIER = 100  # raw draws per mixture kept, before deduplication
TOP_K = 128  # candidates averaged into the predicted best mixture (regression.ipynb: k = 128)

FEATURE_SETS = ('linear', 'log', 'quadratic', 'log_quadratic')
LOG_EPS = 1e-2  # log features are log(w + LOG_EPS): finite for dropped tasks (w = 0)
_LAMBDAS = np.logspace(-8, 3, 23)  # ridge penalties, relative to the number of runs
_DEFAULT_FOLDS = 5


def _prior(tasks: Sequence[str], token_counts) -> np.ndarray:
  """[T] token-count shares (uniform when `token_counts` is None), checked."""
  if token_counts is None:
    return np.full(len(tasks), 1 / len(tasks))
  if isinstance(token_counts, Mapping):
    missing = [t for t in tasks if t not in token_counts]
    if missing:
      raise errors.UserError(f'token_counts has no count for tasks {missing}; give one for every '
                             'task of the mixture.')
    token_counts = [token_counts[t] for t in tasks]
  counts = np.asarray(token_counts, dtype=np.float64)
  if counts.shape != (len(tasks),) or not np.all(np.isfinite(counts)) or np.any(counts <= 0):
    raise errors.UserError(f'token_counts={list(np.atleast_1d(counts))} must be {len(tasks)} '
                           f'positive numbers, one per task of {list(tasks)}.')
  return counts / counts.sum()


def round_to_grid(weights_NT: np.ndarray, step: float) -> np.ndarray:
  """Rows rounded to multiples of `step` that still sum to 1 (largest-remainder apportionment of
  round(1 / step) units; ties to the earlier task). RegMix rounds each weight alone, which can
  leave a row summing to slightly more or less than 1."""
  units = max(1, round(1 / step))
  quotas_NT = weights_NT / weights_NT.sum(axis=1, keepdims=True) * units
  counts_NT = np.floor(quotas_NT)
  short_N = (units - counts_NT.sum(axis=1)).astype(np.int64)
  order_NT = np.argsort(-(quotas_NT - counts_NT), axis=1, kind='stable')
  ranks_NT = np.argsort(order_NT, axis=1, kind='stable')  # each task's place in that order
  counts_NT += ranks_NT < short_N[:, None]
  return counts_NT / units


def sample_mixtures(tasks: Sequence[str], n: int, seed: int, *, alpha=None, token_counts=None,
                    temperature: float = TEMPERATURE, min_strength: float = MIN_STRENGTH,
                    max_strength: float = MAX_STRENGTH, num_strengths: int = NUM_STRENGTHS,
                    max_usage: float = MAX_USAGE, minimum: float = MINIMUM,
                    unique: bool = True) -> np.ndarray:
  """[n, T] mixture weights over `tasks` (rows on the simplex), a pure function of the arguments.

  The paper's prior (RegMix, arXiv 2407.01492; sail-sg/regmix mixture_config/synthesize_mixture.py):
  the token-count shares p of the tasks (`token_counts`, a mapping task -> tokens or a sequence in
  task order; uniform when None) are raised to `temperature` and renormalised; each draw picks a
  concentration s uniformly among `num_strengths` values log-spaced over [min_strength,
  max_strength] and samples Dirichlet(s * p_tempered). A draw giving a task more than
  min(max_usage * p, 1) (p before the temperature: that task's tokens would repeat more than
  max_usage times in the large run) is rejected. With `alpha` (a number or one per task) instead,
  draws are plain Dirichlet(alpha) without rejection.

  Then weights below `minimum` are zeroed (a task the proxy would see too little of to matter), the
  row is renormalised and rounded to multiples of `minimum` (`round_to_grid`; `minimum=0` skips
  both). With `unique`, as in the paper, n * SAMPLE_MULTIPLIER draws are deduplicated and n of the
  distinct rows picked at random (an error when fewer exist: lower `minimum` or `n`); without it,
  the first n accepted draws are returned (the candidates of `predict_best`).
  """
  tasks = list(tasks)
  if len(tasks) < 2 or len(set(tasks)) != len(tasks):
    raise errors.UserError(f'A mixture needs two or more distinct tasks, got {tasks}.')
  if n < 1:
    raise errors.UserError(f'Asked for {n} mixtures; ask for at least 1.')
  if not 0 <= minimum < 1 / len(tasks):
    raise errors.UserError(f'minimum={minimum} must be in [0, 1/{len(tasks)}) for {len(tasks)} '
                           'tasks.')
  if alpha is not None and token_counts is not None:
    raise errors.UserError('Give alpha (a plain Dirichlet) or token_counts (the RegMix prior), '
                           'not both.')
  rng = np.random.default_rng(seed)
  if alpha is not None:
    alpha_T = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (len(tasks),))
    if not np.all(np.isfinite(alpha_T)) or np.any(alpha_T <= 0):
      raise errors.UserError(f'alpha={alpha} must be positive (one number or one per task).')
    bound_T = np.ones(len(tasks))

    def draw(size: int) -> np.ndarray:
      return rng.dirichlet(alpha_T, size)
  else:
    prior_T = _prior(tasks, token_counts)
    bound_T = np.minimum(max_usage * prior_T, 1.0)
    tempered_T = prior_T ** temperature
    tempered_T /= tempered_T.sum()
    strengths = np.logspace(np.log10(min_strength), np.log10(max_strength), num_strengths)

    def draw(size: int) -> np.ndarray:
      which_M = rng.integers(len(strengths), size=size)
      draws_MT = np.empty((size, len(tasks)))
      for index, strength in enumerate(strengths):
        rows = which_M == index
        draws_MT[rows] = rng.dirichlet(tempered_T * strength, int(rows.sum()))
      return draws_MT

  def accepted(size: int) -> np.ndarray:
    weights_MT = draw(size)
    sums_M = weights_MT.sum(axis=1)
    ok_M = np.all(np.isfinite(weights_MT), axis=1) & (sums_M > 0)
    ok_M &= np.all(weights_MT <= bound_T + 1e-12, axis=1)
    weights_MT = weights_MT[ok_M]
    if minimum > 0:
      weights_MT = np.where(weights_MT < minimum, 0.0, weights_MT)
      weights_MT = weights_MT[weights_MT.sum(axis=1) > 0]
      return round_to_grid(weights_MT, minimum)
    return weights_MT / weights_MT.sum(axis=1, keepdims=True)

  if unique:
    weights_MT = accepted(n * SAMPLE_MULTIPLIER)
    _, first_M = np.unique(weights_MT, axis=0, return_index=True)
    distinct_MT = weights_MT[np.sort(first_M)]
    if len(distinct_MT) < n:
      raise errors.UserError(f'Only {len(distinct_MT)} distinct mixtures of {len(tasks)} tasks in '
                             f'{n * SAMPLE_MULTIPLIER} draws at minimum={minimum}; ask for fewer '
                             'or lower the minimum (a finer grid).')
    return distinct_MT[np.sort(rng.choice(len(distinct_MT), n, replace=False))]
  chunks, total = [], 0
  for _ in range(1000):
    chunk_MT = accepted(max(2 * (n - total), 1024))
    chunks.append(chunk_MT)
    total += len(chunk_MT)
    if total >= n:
      return np.concatenate(chunks)[:n]
  raise errors.UserError(f'The prior rejected almost every draw (max_usage={max_usage}); raise '
                         'max_usage or give token_counts that are less skewed.')


def _features(weights_NT: np.ndarray, kind: str, eps: float) -> np.ndarray:
  """[N, F] regression features of mixtures: the weights, and log(w + eps) and/or w_i w_j."""
  parts = [weights_NT]
  if kind in ('log', 'log_quadratic'):
    parts.append(np.log(weights_NT + eps))
  if kind in ('quadratic', 'log_quadratic'):
    pairs = list(itertools.combinations(range(weights_NT.shape[1]), 2))
    parts.append(np.stack([weights_NT[:, i] * weights_NT[:, j] for i, j in pairs], axis=1))
  return np.concatenate(parts, axis=1)


@dataclasses.dataclass(frozen=True)
class _Ridge:
  """Ridge regression on standardised features with an unpenalised intercept."""
  mean_F: np.ndarray
  scale_F: np.ndarray
  coef_F: np.ndarray
  intercept: float

  def predict(self, x_NF: np.ndarray) -> np.ndarray:
    return (x_NF - self.mean_F) / self.scale_F @ self.coef_F + self.intercept


def _ridge_path(x_NF: np.ndarray, y_N: np.ndarray, lambdas: np.ndarray):
  """(leave-one-out mean squared error per lambda, a function lambda -> _Ridge).

  The LOO residual of a linear smoother is (y_i - yhat_i) / (1 - H_ii), exact for penalised least
  squares; H = 11'/N + Xs (Xs'Xs + lambda I)^-1 Xs' with Xs the standardised, centred features.
  """
  n = len(y_N)
  mean_F = x_NF.mean(axis=0)
  scale_F = x_NF.std(axis=0)
  scale_F = np.where(scale_F > 1e-12, scale_F, 1.0)
  xs_NF = (x_NF - mean_F) / scale_F
  y_mean = float(y_N.mean())
  u_NK, s_K, vt_KF = np.linalg.svd(xs_NF, full_matrices=False)
  uty_K = u_NK.T @ (y_N - y_mean)
  mse_L = np.empty(len(lambdas))
  for index, lam in enumerate(lambdas):
    shrink_K = s_K ** 2 / (s_K ** 2 + lam)
    fitted_N = u_NK @ (shrink_K * uty_K) + y_mean
    leverage_N = (u_NK ** 2) @ shrink_K + 1 / n
    with np.errstate(divide='ignore', invalid='ignore'):
      loo_N = (y_N - fitted_N) / (1 - leverage_N)
    mse = float(np.mean(loo_N ** 2))
    mse_L[index] = mse if math.isfinite(mse) and np.all(leverage_N < 1 - 1e-9) else math.inf

  def model(lam: float) -> _Ridge:
    coef_F = vt_KF.T @ (s_K / (s_K ** 2 + lam) * uty_K)
    return _Ridge(mean_F, scale_F, coef_F, y_mean)

  return mse_L, model


def _select(weights_NT: np.ndarray, losses_N: np.ndarray, kinds: Sequence[str], eps: float):
  """(feature kind, lambda, its LOO MSE, the fitted _Ridge) with the lowest LOO error; ties go to
  the simpler kind and the larger penalty."""
  best = None
  lambdas = _LAMBDAS * len(losses_N)
  for kind in kinds:
    mse_L, model = _ridge_path(_features(weights_NT, kind, eps), losses_N, lambdas)
    for index in reversed(range(len(lambdas))):  # larger penalties first: they win ties
      if best is None or mse_L[index] < best[2]:
        best = (kind, float(lambdas[index]), float(mse_L[index]), model)
  kind, lam, mse, model = best
  return kind, lam, mse, model(lam)


def rankdata(values: np.ndarray) -> np.ndarray:
  """1-based ranks, ties sharing their mean rank."""
  values = np.asarray(values, dtype=np.float64)
  order = np.argsort(values, kind='stable')
  ranks = np.empty(len(values))
  sorted_values = values[order]
  start = 0
  while start < len(values):
    stop = start + 1
    while stop < len(values) and sorted_values[stop] == sorted_values[start]:
      stop += 1
    ranks[order[start:stop]] = (start + stop + 1) / 2
    start = stop
  return ranks


def spearman(a, b) -> float:
  """Spearman's rank correlation (Pearson correlation of the ranks); nan when one side is
  constant."""
  ra, rb = rankdata(a), rankdata(b)
  ra, rb = ra - ra.mean(), rb - rb.mean()
  denominator = math.sqrt(float(ra @ ra) * float(rb @ rb))
  return float(ra @ rb) / denominator if denominator > 0 else math.nan


@dataclasses.dataclass(frozen=True)
class Regression:
  """A fitted mixture -> loss regression (see `fit`).

  Attributes:
    num_tasks: T, the length of a mixture vector.
    features: the feature set chosen, one of FEATURE_SETS.
    penalty: the ridge penalty chosen (on standardised features).
    eps: the offset of the log features.
    num_runs: N, the runs fitted.
    cv_folds: the folds of the cross-validation reported.
    cv_spearman: Spearman correlation between the out-of-fold predictions and the losses.
    cv_rmse: root mean squared error of the out-of-fold predictions.
    cv_predictions_N: the out-of-fold prediction of every run.
  """
  num_tasks: int
  features: str
  penalty: float
  eps: float
  num_runs: int
  cv_folds: int
  cv_spearman: float
  cv_rmse: float
  cv_predictions_N: np.ndarray
  _ridge: _Ridge

  def predict(self, weights_NT) -> np.ndarray:
    """[N] predicted loss of mixtures [N, T] (rows of proportions in the fitted task order)."""
    weights_NT = np.atleast_2d(np.asarray(weights_NT, dtype=np.float64))
    if weights_NT.shape[1] != self.num_tasks:
      raise ValueError(f'Mixtures of {weights_NT.shape[1]} tasks given to a regression fitted on '
                       f'{self.num_tasks}.')
    return self._ridge.predict(_features(weights_NT, self.features, self.eps))


def fit(weights_NT, losses_N, *, features: str = 'auto', folds: int = _DEFAULT_FOLDS,
        eps: float = LOG_EPS, seed: int = 0) -> Regression:
  """Fits the target loss of N runs from their mixture weights [N, T] (rows of proportions).

  RegMix (arXiv 2407.01492) fits LightGBM, or linear regression, from the weights to
  the target; this fits ridge regression on the `features` ('linear': w; 'log': w and
  log(w + eps); 'quadratic': w and the products w_i w_j; 'log_quadratic': all three; 'auto': the
  one of those with the lowest leave-one-out error), the penalty chosen by leave-one-out error
  over a log grid. Fit quality: `folds`-fold cross-validation (runs shuffled by `seed`), feature
  set and penalty chosen again inside each training fold, scored by the Spearman correlation and
  RMSE of the out-of-fold predictions. Needs N >= T + 1 runs.
  """
  weights_NT = np.asarray(weights_NT, dtype=np.float64)
  losses_N = np.asarray(losses_N, dtype=np.float64)
  if weights_NT.ndim != 2 or losses_N.shape != (weights_NT.shape[0],):
    raise ValueError(f'fit needs weights [N, T] and losses [N], got {weights_NT.shape} and '
                     f'{losses_N.shape}.')
  n, t = weights_NT.shape
  if n < t + 1:
    raise errors.UserError(f'{n} runs cannot fit a regression over {t} tasks; run at least '
                           f'{t + 1} (the paper fits hundreds; ten per task is a good start).')
  if not (np.all(np.isfinite(weights_NT)) and np.all(np.isfinite(losses_N))):
    raise errors.UserError('Mixture weights and losses must be finite; leave out runs that '
                           'diverged.')
  if features != 'auto' and features not in FEATURE_SETS:
    raise errors.UserError(f'features={features!r} is not one of {("auto",) + FEATURE_SETS}.')
  kinds = FEATURE_SETS if features == 'auto' else (features,)
  kind, penalty, _, ridge = _select(weights_NT, losses_N, kinds, eps)

  folds = max(2, min(folds, n))
  fold_N = np.empty(n, dtype=np.int64)
  fold_N[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
  predictions_N = np.empty(n)
  for fold in range(folds):
    held = fold_N == fold
    fold_kind, _, _, fold_ridge = _select(weights_NT[~held], losses_N[~held], kinds, eps)
    predictions_N[held] = fold_ridge.predict(_features(weights_NT[held], fold_kind, eps))
  return Regression(num_tasks=t, features=kind, penalty=penalty, eps=eps, num_runs=n,
                    cv_folds=folds, cv_spearman=spearman(predictions_N, losses_N),
                    cv_rmse=float(np.sqrt(np.mean((predictions_N - losses_N) ** 2))),
                    cv_predictions_N=predictions_N, _ridge=ridge)


@dataclasses.dataclass(frozen=True)
class Best:
  """The mixture `predict_best` chose.

  Attributes:
    weights: task -> weight, summing to 1.
    predicted_loss: the regression's prediction at `weights`.
    top_k: how many candidates were averaged.
    top_k_losses: (lowest, highest) predicted loss among them.
  """
  weights: dict[str, float]
  predicted_loss: float
  top_k: int
  top_k_losses: tuple[float, float]


def predict_best(model: Regression, tasks: Sequence[str], n_candidates: int = 100_000,
                 seed: int = 0, *, top_k: int = TOP_K, **prior) -> Best:
  """The mean of the `top_k` of `n_candidates` mixtures with the lowest predicted loss.

  RegMix (arXiv 2407.01492), the "simulate" step: candidates are drawn from the prior the proxy
  mixtures came from (`prior`: the keyword arguments of `sample_mixtures`, e.g. token_counts or
  minimum; not deduplicated), and averaging the best few is more robust than taking the single
  best prediction (the reference notebook averages k = 128). `tasks` names the columns, in the
  order the model was fitted in.
  """
  tasks = list(tasks)
  if len(tasks) != model.num_tasks:
    raise ValueError(f'{len(tasks)} tasks given for a regression fitted on {model.num_tasks}.')
  if top_k < 1:
    raise errors.UserError(f'top_k={top_k} must be at least 1.')
  candidates_MT = sample_mixtures(tasks, n_candidates, seed, unique=False, **prior)
  predicted_M = model.predict(candidates_MT)
  order = np.argsort(predicted_M, kind='stable')[:min(top_k, len(predicted_M))]
  best_T = candidates_MT[order].mean(axis=0)
  best_T /= best_T.sum()
  return Best(weights=dict(zip(tasks, map(float, best_T))),
              predicted_loss=float(model.predict(best_T[None])[0]), top_k=len(order),
              top_k_losses=(float(predicted_M[order[0]]), float(predicted_M[order[-1]])))
