"""Scaling laws: loss as a function of model size, training tokens and compute, fitted to runs.

The two-variable law is Chinchilla's parametric loss (Hoffmann et al. 2022, "Training
Compute-Optimal Large Language Models", arXiv 2203.15556, approach 3):

  L(N, D) = E + A / N^alpha + B / D^beta

with N parameters and D training tokens. As in the paper, it is fitted in log space: with
A = exp(log_A), B = exp(log_B), E = exp(log_E), `fit_loss_law` minimises over
(log_A, log_B, log_E, alpha, beta)

  mean_i Huber_delta(LSE(log_A - alpha log N_i, log_B - beta log D_i, log_E) - log L_i)

(LSE the log-sum-exp, delta = 1e-3) from every point of the paper's grid of initialisations and
keeps the lowest objective. The Huber loss on log-loss weighs each point's relative error, and with
a delta this small it is nearly an absolute (L1) loss, so one diverged run moves the fit little.

The paper minimises with L-BFGS. Here every initialisation runs at once, vectorised in numpy
float64, by Levenberg-Marquardt on the iteratively reweighted least-squares form of the Huber loss
(a point's squared residual weighted by min(1, delta / |r|), whose quadratic majorises the Huber
loss), a step kept only when it lowers the Huber objective itself: the same objective and minimum,
without a compile, in about a second for the 4,500 initialisations and a few hundred points.
All of them take `SCREEN_ITERATIONS` steps; the `REFINED` best continue until their objective
stops falling. (L-BFGS in JAX, vmapped over the grid, took 30 s to 2 minutes on two CPU cores:
its line search runs as long as the slowest initialisation's.)

Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt", arXiv 2404.10102) refitted the
paper's own points, read off its figure: the published constants fit them poorly, and intervals as
narrow as the paper's would take over 600,000 runs where it had fewer than 500. `bootstrap` refits
the law on resampled points (or resampled runs, `groups`) and reports percentile intervals.

The compute law (`fit_compute_law`) is one-dimensional, L(C) = E + A / C^gamma with C = 6 N D, the
training FLOPs of a dense Transformer (Kaplan et al. 2020, "Scaling Laws for Neural Language
Models", arXiv 2001.08361), fitted the same way. It keeps the irreducible loss E, where Kaplan's
L(C_min) = (C_c / C_min)^alpha_C is a pure power law: the two-variable law implies exactly this
form along its compute-optimal allocation, E + A' / C^(alpha beta / (alpha + beta))
(`implied_compute_law`), and a pure power law bends away from losses near E, which small models
reach. It is fitted to the compute-efficient frontier (`compute_frontier`), as Kaplan's is: only
at the best allocation is loss a function of compute alone.

The compute-optimal allocation of a fitted law (`compute_optimal`) is Chinchilla's eq. 4:
N_opt(C) = G (C/6)^a, D_opt(C) = (C/6)^b / G, a = beta / (alpha + beta), b = alpha / (alpha + beta),
G = (alpha A / (beta B))^(1 / (alpha + beta)).

The D-CPT law (Que et al. 2024, "D-CPT Law: Domain-specific Continual Pre-Training Scaling Law
for Large Language Models", arXiv 2406.01375) adds the mixture ratio r of continual pre-training,
the fraction of its data from the corpus whose validation loss L is:

  L(N, D, r) = E + A / N^alpha + B r^eta / D^beta + C / (r + eps)^gamma

with eps = `DCPT_EPS` keeping r = 0 finite. Fitted to the domain's loss, r is the domain
fraction; to the general corpus's, the same law with r its fraction (1 - r of a domain-general
mix). `fit_dcpt_law` fits it as `fit_loss_law` does, with its four terms in the log-sum-exp and
C = exp(log_C); at r = 0, r^eta is 0 for eta > 0 (its log r is that of the smallest positive
double). Fitted to a few small runs at a few r, the two laws choose r for a larger run
(`optimal_ratio`) in place of a grid search of runs over r.

Shapes in names: I initialisations, P points, T terms of a law's log-sum-exp, K its parameters,
S bootstrap resamples.
"""

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from research import errors

DELTA = 1e-3  # Chinchilla's Huber delta on log-loss
SCREEN_ITERATIONS = 10  # steps every initialisation takes
REFINED = 32  # initialisations that then continue until converged
MAX_ITERATIONS = 2000  # steps at most of a refined initialisation
TOLERANCE = 1e-10  # converged: a step lowered the objective by less than this, relatively
LEVEL = 0.95  # bootstrap intervals: the 2.5th to the 97.5th percentile
BOOTSTRAP_STARTS = 8  # a resample is refitted from the fit and the 7 best initialisations
DCPT_EPS = 1e-3  # the D-CPT law's eps in C / (r + eps)^gamma
_MIN_DAMPING, _MAX_DAMPING = 1e-12, 1e12  # stuck: no step lowers the objective even this damped
_CHUNK = 2**21  # rows are optimised in chunks of about this many (row, point, term, parameter)


@dataclasses.dataclass(frozen=True)
class LawFit:
  """L(N, D) = E + A / N^alpha + B / D^beta, as fitted by `fit_loss_law`.

  Attributes:
    E, A, B, alpha, beta: the constants.
    objective: the mean Huber loss on log-loss at the fit (what is minimised).
    init: the initialisation it came from, (log_A, log_B, log_E, alpha, beta).
  """
  E: float
  A: float
  B: float
  alpha: float
  beta: float
  objective: float
  init: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class ComputeLawFit:
  """L(C) = E + A / C^gamma, as fitted by `fit_compute_law` or implied by a `LawFit`.

  Attributes:
    E, A, gamma: the constants.
    objective: the mean Huber loss on log-loss at the fit; nan for an implied law.
    init: the initialisation it came from, (log_A, log_E, gamma); () for an implied law.
  """
  E: float
  A: float
  gamma: float
  objective: float
  init: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class DcptLawFit:
  """L(N, D, r) = E + A / N^alpha + B r^eta / D^beta + C / (r + eps)^gamma, the D-CPT law (arXiv
  2406.01375), as fitted by `fit_dcpt_law`; eps = `DCPT_EPS`.

  Attributes:
    E, A, B, C, alpha, beta, eta, gamma: the constants.
    objective: the mean Huber loss on log-loss at the fit (what is minimised).
    init: the initialisation it came from, (log_A, log_B, log_E, alpha, beta, log_C, eta, gamma).
  """
  E: float
  A: float
  B: float
  C: float
  alpha: float
  beta: float
  eta: float
  gamma: float
  objective: float
  init: tuple[float, ...]


def loss_law_grid() -> np.ndarray:
  """[4500, 5] Chinchilla's initialisations (arXiv 2203.15556) of (log_A, log_B,
  log_E, alpha, beta): log_A, log_B in {0, 5, ..., 25}, log_E in {-1, -0.5, ..., 1}, alpha, beta
  in {0, 0.5, ..., 2}."""
  offsets, log_e = np.arange(0, 26, 5.0), np.arange(-1, 1.01, 0.5)
  exponents = np.arange(0, 2.1, 0.5)
  return np.array(list(itertools.product(offsets, offsets, log_e, exponents, exponents)))


def compute_law_grid() -> np.ndarray:
  """[150, 3] initialisations of (log_A, log_E, gamma): log_A in {0, 5, ..., 25}, log_E in {-1,
  -0.5, ..., 1}, gamma in {0, 0.05, 0.1, 0.25, 0.5} (compute exponents are small: Kaplan's 0.05)."""
  return np.array(list(itertools.product(np.arange(0, 26, 5.0), np.arange(-1, 1.01, 0.5),
                                         (0.0, 0.05, 0.1, 0.25, 0.5))))


def dcpt_law_grid() -> np.ndarray:
  """[2400, 8] initialisations of (log_A, log_B, log_E, alpha, beta, log_C, eta, gamma): a coarser
  `loss_law_grid`, log_A, log_B in {0, 5, ..., 20}, log_E in {-1, 0, 1}, alpha, beta in
  {0.25, 0.75}, by log_C in {-4, -1}, eta and gamma in {0.25, 0.75}."""
  offsets, halves = np.arange(0, 21, 5.0), (0.25, 0.75)
  return np.array(list(itertools.product(offsets, offsets, (-1.0, 0.0, 1.0), halves, halves,
                                         (-4.0, -1.0), halves, halves)))


def _loss_law_design(n_P: np.ndarray, d_P: np.ndarray) -> np.ndarray:
  """[P, 3, 5]: the terms log_A - alpha log N, log_B - beta log D and log_E as linear maps of
  (log_A, log_B, log_E, alpha, beta)."""
  design_PTK = np.zeros((len(n_P), 3, 5))
  design_PTK[:, 0, 0], design_PTK[:, 0, 3] = 1, -np.log(n_P)
  design_PTK[:, 1, 1], design_PTK[:, 1, 4] = 1, -np.log(d_P)
  design_PTK[:, 2, 2] = 1
  return design_PTK


def _dcpt_law_design(n_P: np.ndarray, d_P: np.ndarray, r_P: np.ndarray) -> np.ndarray:
  """[P, 4, 8]: the terms log_A - alpha log N, log_B + eta log r - beta log D, log_E and
  log_C - gamma log(r + eps) as linear maps of (log_A, log_B, log_E, alpha, beta, log_C, eta,
  gamma); log r at r = 0 is that of the smallest positive double, where r^eta vanishes."""
  design_PTK = np.zeros((len(n_P), 4, 8))
  design_PTK[:, :3, :5] = _loss_law_design(n_P, d_P)
  design_PTK[:, 1, 6] = np.log(np.maximum(r_P, np.finfo(np.float64).tiny))
  design_PTK[:, 3, 5], design_PTK[:, 3, 7] = 1, -np.log(r_P + DCPT_EPS)
  return design_PTK


def _compute_law_design(c_P: np.ndarray) -> np.ndarray:
  """[P, 2, 3]: the terms log_A - gamma log C and log_E as linear maps of (log_A, log_E, gamma)."""
  design_PTK = np.zeros((len(c_P), 2, 3))
  design_PTK[:, 0, 0], design_PTK[:, 0, 2] = 1, -np.log(c_P)
  design_PTK[:, 1, 1] = 1
  return design_PTK


def _log_law(theta_IK: np.ndarray, design_PTK: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """([I, P] the log-sum-exp of the terms, [I, P, K] its gradient in the parameters)."""
  terms_IPT = np.einsum('ik,ptk->ipt', theta_IK, design_PTK, optimize=True)
  top_IP1 = terms_IPT.max(axis=-1, keepdims=True)
  exp_IPT = np.exp(terms_IPT - top_IP1)
  total_IP1 = exp_IPT.sum(axis=-1, keepdims=True)
  jacobian_IPK = np.einsum('ipt,ptk->ipk', exp_IPT / total_IP1, design_PTK, optimize=True)
  return (top_IP1 + np.log(total_IP1))[..., 0], jacobian_IPK


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
  """r^2 / 2 within delta, delta (|r| - delta / 2) beyond; r^2 / 2 everywhere for delta=inf."""
  if math.isinf(delta):
    return 0.5 * r**2
  inner = np.minimum(np.abs(r), delta)
  return 0.5 * inner**2 + delta * (np.abs(r) - inner)


def _minimise(theta_IK, weights_IP, design_PTK, log_y_P, delta: float, iterations: int):
  """Levenberg-Marquardt on the reweighted Huber objective (module docstring) from every row of
  `theta_IK` for at most `iterations` steps, each row's objective weighting the points by its row
  of `weights_IP`. Returns ([I, K] solutions, [I] objectives: inf where the start is not finite).
  Runs chunks of rows in turn, so memory stays bounded however many points there are."""
  rows = max(1, _CHUNK // design_PTK.size)
  parts = [_minimise_rows(theta_IK[i:i + rows], weights_IP[i:i + rows], design_PTK, log_y_P, delta,
                          iterations) for i in range(0, len(theta_IK), rows)]
  return np.concatenate([part[0] for part in parts]), np.concatenate([part[1] for part in parts])


def _minimise_rows(theta_IK, weights_IP, design_PTK, log_y_P, delta: float, iterations: int):
  """`_minimise` of one chunk of rows."""
  theta_IK = np.array(theta_IK, dtype=np.float64)
  weights_IP = np.asarray(weights_IP, dtype=np.float64)
  count = len(theta_IK)
  total_I = weights_IP.sum(axis=1)
  with np.errstate(over='ignore', invalid='ignore'):
    log_pred_IP, jacobian_IPK = _log_law(theta_IK, design_PTK)
    residual_IP = log_pred_IP - log_y_P
    objective_I = (weights_IP * _huber(residual_IP, delta)).sum(axis=1) / total_I
  objective_I[~np.isfinite(objective_I)] = np.inf
  damping_I = np.full(count, 1e-2)
  active = np.flatnonzero(np.isfinite(objective_I))
  eye_KK = np.eye(theta_IK.shape[1])
  for _ in range(iterations):
    if not len(active):
      break
    r_AP, jacobian_APK, w_AP = residual_IP[active], jacobian_IPK[active], weights_IP[active]
    irls_AP = w_AP * np.minimum(1.0, delta / np.maximum(np.abs(r_AP), 1e-300))
    weighted_APK = jacobian_APK * irls_AP[..., None]
    hessian_AKK = weighted_APK.transpose(0, 2, 1) @ jacobian_APK
    gradient_AK = (weighted_APK * r_AP[..., None]).sum(axis=1)
    damped_AKK = hessian_AKK + damping_I[active, None, None] * (eye_KK + hessian_AKK * eye_KK)
    candidate_AK = theta_IK[active] - np.linalg.solve(damped_AKK, gradient_AK[..., None])[..., 0]
    with np.errstate(over='ignore', invalid='ignore'):
      log_pred_AP, new_jacobian_APK = _log_law(candidate_AK, design_PTK)
      new_r_AP = log_pred_AP - log_y_P
      new_objective_A = (w_AP * _huber(new_r_AP, delta)).sum(axis=1) / total_I[active]
    old_objective_A = objective_I[active]
    better_A = np.isfinite(new_objective_A) & (new_objective_A < old_objective_A)
    kept = active[better_A]
    theta_IK[kept], objective_I[kept] = candidate_AK[better_A], new_objective_A[better_A]
    residual_IP[kept], jacobian_IPK[kept] = new_r_AP[better_A], new_jacobian_APK[better_A]
    damping_I[active] = np.clip(np.where(better_A, damping_I[active] / 3, damping_I[active] * 4),
                                _MIN_DAMPING, _MAX_DAMPING)
    converged_A = better_A & (old_objective_A - new_objective_A <= TOLERANCE * old_objective_A)
    active = active[~(converged_A | (damping_I[active] >= _MAX_DAMPING))]
  return theta_IK, objective_I


@dataclasses.dataclass(frozen=True)
class _Search:
  """The fit of a law from a grid: the best solution, its objective and initialisation, and the
  initialisations in the order their screening steps left them (best first)."""
  theta_K: np.ndarray
  objective: float
  init_K: np.ndarray
  ranked_IK: np.ndarray


def _search(inits_IK, design_PTK, log_y_P, delta: float, what: str) -> _Search:
  """Every initialisation takes `SCREEN_ITERATIONS` steps; the `REFINED` best are run until they
  converge; the lowest objective wins. Fails when every optimisation failed."""
  weights_IP = np.broadcast_to(np.ones(len(log_y_P)), (len(inits_IK), len(log_y_P)))
  theta_IK, objective_I = _minimise(inits_IK, weights_IP, design_PTK, log_y_P, delta,
                                    SCREEN_ITERATIONS)
  order = np.argsort(objective_I, kind='stable')
  best = order[:REFINED]
  theta_RK, objective_R = _minimise(theta_IK[best], weights_IP[best], design_PTK, log_y_P, delta,
                                    MAX_ITERATIONS)
  if not np.isfinite(objective_R).any():
    raise errors.UserError(f'Every initialisation of the {what} fit failed (non-finite loss); '
                           'check the points for extreme values.')
  winner = int(np.argmin(objective_R))
  return _Search(theta_RK[winner], float(objective_R[winner]), inits_IK[best[winner]],
                 inits_IK[order])


def _positive(name: str, values) -> np.ndarray:
  """`values` as a float64 vector; fails naming `name` unless all are finite and positive."""
  array = np.asarray(values, dtype=np.float64).reshape(-1)
  bad = ~(np.isfinite(array) & (array > 0))
  if bad.any():
    raise errors.UserError(f'{name} must be finite and positive; it is {array[bad][:3].tolist()} '
                           f'at points {np.flatnonzero(bad)[:3].tolist()}. Leave those points out.')
  return array


def _points(columns: Mapping[str, Sequence[float]]) -> list[np.ndarray]:
  """The named columns as positive float64 vectors of one length; fails naming them."""
  arrays = [_positive(name, values) for name, values in columns.items()]
  if len({len(a) for a in arrays}) != 1:
    raise errors.UserError(f'{", ".join(columns)} must have one value per point; they have '
                           f'{[len(a) for a in arrays]} values.')
  return arrays


def _check_identifiable(columns: Mapping[str, np.ndarray], law: str, constants: int) -> None:
  """Fails unless every variable takes 3 distinct values and the points outnumber the constants:
  with 2 values of N, the 2 levels A / N^alpha takes cannot fix E, A and alpha apart."""
  for name, values in columns.items():
    distinct = np.unique(values)
    if len(distinct) < 3:
      raise errors.UserError(f'{name} takes {len(distinct)} distinct value(s) '
                             f'({", ".join(f"{v:.4g}" for v in distinct)}); the term of {name} in '
                             f'{law} needs at least 3 to be told apart from E. Add points at more '
                             f'values of {name}.')
  points = len(next(iter(columns.values())))
  if points <= constants:
    raise errors.UserError(f'{points} points cannot fit the {constants} constants of {law}; give '
                           f'at least {constants + 1}.')


def _grid(inits, default: np.ndarray, constants: int) -> np.ndarray:
  """`inits` as [I, constants] float64 (`default` when None); fails on another shape."""
  grid_IK = default if inits is None else np.asarray(inits, dtype=np.float64)
  if grid_IK.ndim != 2 or grid_IK.shape[1] != constants or not len(grid_IK):
    raise errors.UserError(f'inits has shape {grid_IK.shape}; give [I, {constants}] '
                           'initialisations, I >= 1.')
  return grid_IK


def _loss_law_search(N, D, L, delta: float, inits):
  """(the `_Search` of the loss law, its design, log L) after checking the points."""
  n_P, d_P, l_P = _points({'N': N, 'D': D, 'L': L})
  _check_identifiable({'N': n_P, 'D': d_P}, 'E + A/N^alpha + B/D^beta', 5)
  design_PTK = _loss_law_design(n_P, d_P)
  search = _search(_grid(inits, loss_law_grid(), 5), design_PTK, np.log(l_P), delta, 'loss law')
  return search, design_PTK, np.log(l_P)


def _loss_fit(theta_K, objective: float, init_K) -> LawFit:
  log_a, log_b, log_e, alpha, beta = map(float, theta_K)
  return LawFit(E=math.exp(log_e), A=math.exp(log_a), B=math.exp(log_b), alpha=alpha, beta=beta,
                objective=objective, init=tuple(map(float, init_K)))


def fit_loss_law(N, D, L, *, delta: float = DELTA, inits=None) -> LawFit:
  """Fits L(N, D) = E + A / N^alpha + B / D^beta to points (N_i, D_i, L_i) (module docstring).

  Args:
    N, D, L: one value per point, all positive: parameters, training tokens, loss. N and D must
      each take 3 or more distinct values, and there must be 6 or more points.
    delta: the Huber delta on log-loss; math.inf fits by least squares on log-loss.
    inits: [I, 5] initialisations (log_A, log_B, log_E, alpha, beta); default `loss_law_grid()`.

  Returns:
    The fit of the lowest objective over the initialisations.
  """
  search, _, _ = _loss_law_search(N, D, L, delta, inits)
  return _loss_fit(search.theta_K, search.objective, search.init_K)


def predict(fit: LawFit, N, D) -> np.ndarray:
  """E + A / N^alpha + B / D^beta of `fit` at N and D (broadcast)."""
  n, d = np.asarray(N, dtype=np.float64), np.asarray(D, dtype=np.float64)
  return fit.E + fit.A / n**fit.alpha + fit.B / d**fit.beta


def _resampled_weights(groups_P: np.ndarray, samples: int, seed: int) -> np.ndarray:
  """[S, P] how often each point is drawn when the groups are drawn with replacement, as many as
  there are, `samples` times (a drawn group draws all its points)."""
  _, group_P = np.unique(groups_P, return_inverse=True)
  count = group_P.max() + 1
  draws_SG = np.random.default_rng(seed).integers(0, count, (samples, count))
  counts_SG = np.stack([np.bincount(draws_G, minlength=count) for draws_G in draws_SG])
  return counts_SG[:, group_P].astype(np.float64)


def _bootstrap_groups(samples: int, level: float, starts: int, groups, points: int) -> np.ndarray:
  """One group label per point (each point its own group by default); fails naming a bad
  argument."""
  if samples < 2:
    raise errors.UserError(f'samples={samples}: a bootstrap needs 2 or more resamples (200 is '
                           'usual).')
  if not 0 < level < 1:
    raise errors.UserError(f'level={level} must be between 0 and 1 (0.95: the 2.5th to the 97.5th '
                           'percentile).')
  if starts < 1:
    raise errors.UserError(f'starts={starts}: give 1 or more initialisations per resample.')
  groups_P = np.arange(points) if groups is None else np.asarray(groups).reshape(-1)
  if len(groups_P) != points:
    raise errors.UserError(f'groups has {len(groups_P)} labels for {points} points; give one per '
                           'point (e.g. the run it comes from).')
  return groups_P


def _refits(search: _Search, design_PTK, log_y_P, delta: float, samples: int, seed: int,
            groups_P: np.ndarray, starts: int) -> np.ndarray:
  """[S, K] the law refitted to `samples` resamples, each from `starts` initialisations: the fit's
  solution and the best-screened grid points; nan rows where every start failed."""
  starts_JK = np.concatenate([search.theta_K[None], search.ranked_IK[:starts - 1]])
  weights_SP = _resampled_weights(groups_P, samples, seed)
  theta_XK, objective_X = _minimise(np.tile(starts_JK, (samples, 1)),
                                    np.repeat(weights_SP, len(starts_JK), axis=0), design_PTK,
                                    log_y_P, delta, MAX_ITERATIONS)
  theta_SJK = theta_XK.reshape(samples, len(starts_JK), -1)
  objective_SJ = objective_X.reshape(samples, len(starts_JK))
  theta_SK = theta_SJK[np.arange(samples), np.argmin(objective_SJ, axis=1)]
  theta_SK[~np.isfinite(objective_SJ.min(axis=1))] = np.nan
  return theta_SK


def _intervals(values: Mapping[str, np.ndarray], level: float) -> dict[str, tuple[float, float]]:
  """name -> (low, high), the central `level` percentile interval of the values that are not nan."""
  tail = 100 * (1 - level) / 2
  return {name: (float(np.nanpercentile(v, tail)), float(np.nanpercentile(v, 100 - tail)))
          for name, v in values.items()}


def bootstrap(N, D, L, *, samples: int = 200, seed: int = 0, level: float = LEVEL, groups=None,
              delta: float = DELTA, inits=None,
              starts: int = BOOTSTRAP_STARTS) -> dict[str, tuple[float, float]]:
  """Percentile bootstrap intervals (Efron 1979, "Bootstrap Methods: Another Look at the
  Jackknife") of the loss law's constants, the uncertainty Besiroglu et al. 2024 (arXiv
  2404.10102) found Chinchilla understated.

  Each of `samples` resamples draws the points with replacement (with `groups`, one label per
  point, draws the groups: e.g. runs, whose intermediate points are not independent) and refits
  the law (`fit_loss_law` with `delta`) from `starts` initialisations: the fit of all points and
  the `starts` - 1 initialisations of `inits` that screened best.

  Returns:
    name -> (low, high), the central `level` interval over the resamples, of E, A, B, alpha, beta
    and the exponents of the compute-optimal allocation, `n_opt_exponent` = beta / (alpha + beta)
    (N_opt ~ C^a) and `d_opt_exponent` = alpha / (alpha + beta) (D_opt ~ C^b).
  """
  groups_P = _bootstrap_groups(samples, level, starts, groups, np.size(L))
  search, design_PTK, log_y_P = _loss_law_search(N, D, L, delta, inits)
  log_a, log_b, log_e, alpha, beta = _refits(search, design_PTK, log_y_P, delta, samples, seed,
                                             groups_P, starts).T
  return _intervals({'E': np.exp(log_e), 'A': np.exp(log_a), 'B': np.exp(log_b), 'alpha': alpha,
                     'beta': beta, 'n_opt_exponent': beta / (alpha + beta),
                     'd_opt_exponent': alpha / (alpha + beta)}, level)


def compute_frontier(C, L) -> np.ndarray:
  """[P] bool: the points of lower loss than every point of less compute, the compute-efficient
  frontier on which Kaplan et al. 2020 (arXiv 2001.08361) fit L(C_min). Of points of equal
  compute, only the lowest can be on it."""
  c_P, l_P = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (C, L))
  order = np.lexsort((l_P, c_P))  # by compute, then loss
  lowest_before = np.concatenate([[np.inf], np.minimum.accumulate(l_P[order])[:-1]])
  on_P = np.zeros(len(c_P), dtype=bool)
  on_P[order] = l_P[order] < lowest_before
  return on_P


def _compute_law_search(C, L, delta: float, inits):
  """(the `_Search` of the compute law, its design, log L) after checking the points."""
  c_P, l_P = _points({'C': C, 'L': L})
  _check_identifiable({'C': c_P}, 'E + A/C^gamma', 3)
  design_PTK = _compute_law_design(c_P)
  search = _search(_grid(inits, compute_law_grid(), 3), design_PTK, np.log(l_P), delta,
                   'compute law')
  return search, design_PTK, np.log(l_P)


def fit_compute_law(C, L, *, delta: float = DELTA, inits=None) -> ComputeLawFit:
  """Fits L(C) = E + A / C^gamma to points (C_i, L_i) as `fit_loss_law` fits its law.

  Args:
    C, L: one value per point, positive: training FLOPs (6 N D) and loss; 4 or more points at 3
      or more values of C. Pass the points of `compute_frontier` to fit the compute-efficient
      frontier.
    delta: the Huber delta on log-loss; math.inf fits by least squares on log-loss.
    inits: [I, 3] initialisations (log_A, log_E, gamma); default `compute_law_grid()`.
  """
  search, _, _ = _compute_law_search(C, L, delta, inits)
  log_a, log_e, gamma = map(float, search.theta_K)
  return ComputeLawFit(E=math.exp(log_e), A=math.exp(log_a), gamma=gamma,
                       objective=search.objective, init=tuple(map(float, search.init_K)))


def bootstrap_compute_law(C, L, *, samples: int = 200, seed: int = 0, level: float = LEVEL,
                          groups=None, delta: float = DELTA, inits=None,
                          starts: int = BOOTSTRAP_STARTS) -> dict[str, tuple[float, float]]:
  """Percentile bootstrap intervals of the compute law's E, A and gamma, resampled and refitted
  as in `bootstrap`."""
  groups_P = _bootstrap_groups(samples, level, starts, groups, np.size(L))
  search, design_PTK, log_y_P = _compute_law_search(C, L, delta, inits)
  log_a, log_e, gamma = _refits(search, design_PTK, log_y_P, delta, samples, seed, groups_P,
                                starts).T
  return _intervals({'E': np.exp(log_e), 'A': np.exp(log_a), 'gamma': gamma}, level)


def predict_compute(fit: ComputeLawFit, C) -> np.ndarray:
  """E + A / C^gamma of `fit` at C."""
  return fit.E + fit.A / np.asarray(C, dtype=np.float64)**fit.gamma


def allocation_constant(fit: LawFit) -> float:
  """Chinchilla's G = (alpha A / (beta B))^(1 / (alpha + beta))."""
  return (fit.alpha * fit.A / (fit.beta * fit.B))**(1 / (fit.alpha + fit.beta))


def compute_optimal(fit: LawFit, C) -> tuple[np.ndarray, np.ndarray]:
  """(N_opt, D_opt): the allocation of compute C = 6 N D that minimises `fit`'s loss (Chinchilla's
  eq. 4), N_opt = G (C/6)^(beta / (alpha + beta)), D_opt = (C/6)^(alpha / (alpha + beta)) / G."""
  total, g = fit.alpha + fit.beta, allocation_constant(fit)
  c6 = np.asarray(C, dtype=np.float64) / 6
  return g * c6**(fit.beta / total), c6**(fit.alpha / total) / g


def implied_compute_law(fit: LawFit) -> ComputeLawFit:
  """`fit`'s loss along its compute-optimal allocation, L(N_opt(C), D_opt(C)), which is exactly
  E + A' / C^gamma with gamma = alpha beta / (alpha + beta) and A' = (A G^-alpha + B G^beta) 6^gamma
  (G of `compute_optimal`); objective nan, init ()."""
  g, gamma = allocation_constant(fit), fit.alpha * fit.beta / (fit.alpha + fit.beta)
  return ComputeLawFit(E=fit.E, A=(fit.A * g**-fit.alpha + fit.B * g**fit.beta) * 6**gamma,
                       gamma=gamma, objective=math.nan, init=())


def _fractions(name: str, values, points: int) -> np.ndarray:
  """`values` as a float64 vector of `points` fractions; fails naming `name` unless all are finite
  and in [0, 1]."""
  array = np.asarray(values, dtype=np.float64).reshape(-1)
  if len(array) != points:
    raise errors.UserError(f'{name} has {len(array)} values for {points} points; give one per '
                           'point.')
  bad = ~(np.isfinite(array) & (array >= 0) & (array <= 1))
  if bad.any():
    raise errors.UserError(f'{name} must be a fraction in [0, 1] (of the training data from the '
                           f'corpus whose loss L is); it is {array[bad][:3].tolist()} at points '
                           f'{np.flatnonzero(bad)[:3].tolist()}.')
  return array


def _dcpt_law_search(N, D, r, L, delta: float, inits):
  """(the `_Search` of the D-CPT law, its design, log L) after checking the points."""
  n_P, d_P, l_P = _points({'N': N, 'D': D, 'L': L})
  r_P = _fractions('r', r, len(l_P))
  _check_identifiable({'N': n_P, 'D': d_P, 'r': r_P},
                      'E + A/N^alpha + B r^eta/D^beta + C/(r + eps)^gamma', 8)
  design_PTK = _dcpt_law_design(n_P, d_P, r_P)
  search = _search(_grid(inits, dcpt_law_grid(), 8), design_PTK, np.log(l_P), delta, 'D-CPT law')
  return search, design_PTK, np.log(l_P)


def fit_dcpt_law(N, D, r, L, *, delta: float = DELTA, inits=None) -> DcptLawFit:
  """Fits the D-CPT law (Que et al. 2024, arXiv 2406.01375; module docstring),
  L(N, D, r) = E + A / N^alpha + B r^eta / D^beta + C / (r + eps)^gamma, to points
  (N_i, D_i, r_i, L_i) as `fit_loss_law` fits its law.

  Args:
    N, D, L: one value per point, all positive: parameters, training tokens, loss.
    r: one value per point in [0, 1]: the fraction of the training data from the corpus whose loss
      L is (the domain's fraction for the domain loss, the general corpus's for the general loss).
      N, D and r must each take 3 or more distinct values, and there must be 9 or more points.
    delta: the Huber delta on log-loss; math.inf fits by least squares on log-loss.
    inits: [I, 8] initialisations (log_A, log_B, log_E, alpha, beta, log_C, eta, gamma); default
      `dcpt_law_grid()`.
  """
  search, _, _ = _dcpt_law_search(N, D, r, L, delta, inits)
  log_a, log_b, log_e, alpha, beta, log_c, eta, gamma = map(float, search.theta_K)
  return DcptLawFit(E=math.exp(log_e), A=math.exp(log_a), B=math.exp(log_b), C=math.exp(log_c),
                    alpha=alpha, beta=beta, eta=eta, gamma=gamma, objective=search.objective,
                    init=tuple(map(float, search.init_K)))


def predict_dcpt(fit: DcptLawFit, N, D, r) -> np.ndarray:
  """E + A / N^alpha + B r^eta / D^beta + C / (r + eps)^gamma of `fit` at N, D and r
  (broadcast)."""
  n, d, r = (np.asarray(v, dtype=np.float64) for v in (N, D, r))
  return (fit.E + fit.A / n**fit.alpha + fit.B * r**fit.eta / d**fit.beta
          + fit.C / (r + DCPT_EPS)**fit.gamma)


def bootstrap_dcpt_law(N, D, r, L, *, samples: int = 200, seed: int = 0, level: float = LEVEL,
                       groups=None, delta: float = DELTA, inits=None,
                       starts: int = BOOTSTRAP_STARTS) -> dict[str, tuple[float, float]]:
  """Percentile bootstrap intervals of the D-CPT law's constants, resampled and refitted as in
  `bootstrap`."""
  groups_P = _bootstrap_groups(samples, level, starts, groups, np.size(L))
  search, design_PTK, log_y_P = _dcpt_law_search(N, D, r, L, delta, inits)
  log_a, log_b, log_e, alpha, beta, log_c, eta, gamma = _refits(
      search, design_PTK, log_y_P, delta, samples, seed, groups_P, starts).T
  return _intervals({'E': np.exp(log_e), 'A': np.exp(log_a), 'B': np.exp(log_b),
                     'C': np.exp(log_c), 'alpha': alpha, 'beta': beta, 'eta': eta,
                     'gamma': gamma}, level)


def optimal_ratio(domain: DcptLawFit, general: DcptLawFit, N: float, D: float, *,
                  weight: float = 0.5, points: int = 1001) -> float:
  """The domain ratio r in [0, 1] that minimises weight L_domain(N, D, r) + (1 - weight)
  L_general(N, D, 1 - r), the use of the D-CPT law (arXiv 2406.01375) that picks the mixture of a
  continual pre-training run: `domain` fitted to the domain loss against the domain fraction,
  `general` to the general loss against the general fraction; the best of `points` evenly spaced
  r."""
  if not 0 <= weight <= 1:
    raise errors.UserError(f'weight={weight} must be in [0, 1]: the weight of the domain loss, '
                           '1 - weight that of the general loss.')
  r = np.linspace(0, 1, points)
  total = (weight * predict_dcpt(domain, N, D, r)
           + (1 - weight) * predict_dcpt(general, N, D, 1 - r))
  return float(r[np.argmin(total)])
