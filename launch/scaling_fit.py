"""Scaling-law fits over sweeps of model size and tokens: L(N, D), the compute law and allocation.

  python -m launch.scaling_fit DIR [DIR ...] --out=OUT [--metric=loss] [--points=all|final] \
      [--min_fraction=0.1] [--x_params=matmul|total] [--bootstrap=200] [--seed=0] \
      [--law=chinchilla|dcpt --ratio_key=data.mixture.TASK]

reads every run of the sweep directories DIR (launch.sweep's --workdir; each sub-directory with a
config.json; a run directory itself is taken as one run) and makes each logged value of --metric a
point (N, D, L):

- N, the run's parameters from its config.json `model` (missing keys take research/defaults.py's
  defaults, so older runs load): --x_params=matmul (default) counts those in a matmul, the output
  layer's included and the input embedding (a lookup) not, a mixture of experts' active ones
  (research.model.transformer.matmul_params: the N of the 6 N FLOPs per token); --x_params=total
  every parameter, as Chinchilla counts.
- D, the tokens seen by that step (`tokens_seen` / step of the run's training lines, times step).
- L, the metric at that step: `loss` (default), the training loss, a mean over the --log_every
  steps before it; or `eval/<task>/loss`; several, comma-separated, give their mean.

--points=all (default) takes every step that logged the metric from --min_fraction of the run's
`train.steps` on (the first steps, warmup above all, follow no law); --points=final the last one
alone. Intermediate points are how Chinchilla's approach 1 saw many D per run, but there the
cosine schedule of each run was matched to its length: a point midway through a cosine run has
not had its learning rate decayed, so its loss lies above that of a run trained for that D alone,
and a law fitted to such points over-estimates the loss of short runs (and shifts beta). Sweeps
with one run per (N, D) and --points=final avoid it.

It fits L(N, D) = E + A/N^alpha + B/D^beta (research/analysis/scaling.py: Chinchilla's approach 3, Hoffmann
et al. 2022, arXiv 2203.15556) with --bootstrap resamples of the runs (whole runs: a run's points
are not independent) for percentile intervals (Besiroglu et al. 2024, arXiv 2404.10102), the
compute-optimal allocation it implies (Chinchilla's eq. 4), and the compute law
L(C) = E + A/C^gamma, C = 6 N D, on the compute-efficient frontier of the points (Kaplan et al.
2020, arXiv 2001.08361).
It writes OUT/scaling_fit.json (constants, intervals, every point with its prediction),
OUT/scaling_fit.md (the tables and the command) and the plots OUT/fit_vs_measured.png (loss against
D, a colour per N, measured points and fitted curves) and OUT/compute_law.png, through a temporary
directory in OUT, scaling_fit.md last.

--law=dcpt fits the D-CPT law of continual pre-training (Que et al. 2024, arXiv 2406.01375)
instead, L(N, D, r) = E + A/N^alpha + B r^eta/D^beta + C/(r + eps)^gamma, r each run's mixture
ratio: the share of task TASK in the mixture of --ratio_key=PATH.TASK of its config.json (its
weight over the sum of that mixture's weights; 0 where it has none). For the domain's loss (e.g.
--metric=eval/DOMAIN/loss) name the domain task, for the general corpus's its task. It writes
scaling_fit.json and scaling_fit.md, with intervals over runs as above and no plots.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import dataclasses
import json
import math
import os
import shlex
import textwrap
from collections.abc import Callable, Sequence

import jax
import matplotlib
import ml_collections
import numpy as np
from absl import flags
from matplotlib import figure

from launch import report as report_command
from research import defaults, errors
from research.analysis import report, scaling
from research.data import sampler
from research.interop import hf_checkpoint
from research.model import transformer

# Other commands define --out, --metric and --seed too; allow_override lets their modules load in
# one process (tests).
_OUT = flags.DEFINE_string('out', None, 'The directory scaling_fit.json, scaling_fit.md and the '
                           'plots are written to (created if missing).', allow_override=True)
_METRIC = flags.DEFINE_string('metric', 'loss', 'The loss fitted: loss (training) or '
                              'eval/<task>/loss; several, comma-separated, fit their mean.',
                              allow_override=True)
_POINTS = flags.DEFINE_enum('points', 'all', ['all', 'final'], 'all: every logged step of a run '
                            'is a point (from --min_fraction on); final: its last step only.',
                            allow_override=True)
_MIN_FRACTION = flags.DEFINE_float('min_fraction', 0.1, 'With --points=all, the steps before this '
                                   "fraction of a run's train.steps are left out.",
                                   allow_override=True)
_X_PARAMS = flags.DEFINE_enum('x_params', 'matmul', ['matmul', 'total'], 'N: matmul (the '
                              'parameters of the 6N FLOPs per token, active ones of an MoE) or '
                              'total (every parameter).', allow_override=True)
_BOOTSTRAP = flags.DEFINE_integer('bootstrap', 200, 'Resamples of the runs behind the 95% '
                                  'intervals; 0 = no intervals.', allow_override=True)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap resamples.', allow_override=True)
_LAW = flags.DEFINE_enum('law', 'chinchilla', ['chinchilla', 'dcpt'], 'chinchilla: L(N, D) and '
                         'L(C); dcpt: the D-CPT law L(N, D, r) of the mixture ratio r '
                         '(--ratio_key).')
_RATIO_KEY = flags.DEFINE_string('ratio_key', None, 'With --law=dcpt, PATH.TASK: r of a run is '
                                 "TASK's share of the weights of the mixture at PATH of its "
                                 'config.json, e.g. data.mixture.stdlib_code.')

JSON_FILE, MARKDOWN_FILE = 'scaling_fit.json', 'scaling_fit.md'
FIT_PLOT, COMPUTE_PLOT = 'fit_vs_measured.png', 'compute_law.png'
_ALLOCATION_SCALES = (1, 10, 100)  # the allocation table: at these multiples of the largest C


@dataclasses.dataclass(frozen=True)
class Points:
  """The (N, D, L) points of the runs; `run_P` indexes `runs`."""
  runs: list[report.Run]
  params: list[int]  # N of each run
  run_P: np.ndarray
  step_P: np.ndarray
  n_P: np.ndarray
  d_P: np.ndarray
  l_P: np.ndarray
  skipped: dict[str, list[str]]  # why -> run names


def model_config(run: report.Run) -> transformer.ModelConfig:
  """The run's model: config.json's `model` over research/defaults.py's defaults; fails naming
  config.json."""

  where = os.path.join(run.path, 'config.json')
  model = run.config.get('model')
  if not isinstance(model, dict):
    raise errors.UserError(f'{where} has no model section; pass runs of launch.train.')
  values = {**defaults.get_config().model.to_dict(), **model}
  unknown = sorted(set(values) - {f.name for f in dataclasses.fields(transformer.ModelConfig)})
  if unknown:
    raise errors.UserError(f'{where}: model keys {unknown} are not model settings of this code '
                           '(research/defaults.py lists them); leave the run out or update the '
                           'code.')
  try:
    return transformer.ModelConfig.from_config(ml_collections.ConfigDict(values))
  except errors.UserError as e:
    raise errors.UserError(f'{where}: {e}') from e


def parameters(config: transformer.ModelConfig, x_params: str) -> int:
  """N of the model: its matmul parameters, or all its parameters (from the shapes, no init)."""
  if x_params == 'matmul':
    return transformer.matmul_params(config)

  shapes = hf_checkpoint.abstract_params(config)
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes))


def tokens_per_step(run: report.Run) -> float | None:
  """`tokens_seen` / step at the run's last training line with both (the global batch's padded
  tokens); None when no line has them."""
  rates = [values['tokens_seen'] / step for step, values in run.metrics.items()
           if step > 0 and 'tokens_seen' in values]
  return rates[-1] if rates else None


def run_points(run: report.Run, metric: str, mode: str,
               min_fraction: float) -> tuple[list[tuple[int, float, float]], str]:
  """([(step, D, L)], '') of the run, or ([], why it is left out)."""
  keys = metric.split(',')
  steps = [step for step, values in run.metrics.items() if step > 0 and all(
      k in values for k in keys)]
  if not steps:
    return [], f'no {metric}'
  rate = tokens_per_step(run)
  if rate is None:
    return [], 'no tokens_seen'
  train = run.config.get('train')
  last = train.get('steps') if isinstance(train, dict) else None
  last = last if isinstance(last, int) and last > 0 else max(run.metrics)
  steps = steps[-1:] if mode == 'final' else [s for s in steps if s >= min_fraction * last]
  found = [(step, step * rate, float(np.mean([run.metrics[step][k] for k in keys])))
           for step in steps]
  found = [point for point in found if math.isfinite(point[2]) and point[2] > 0]
  return (found, '') if found else ([], f'no finite positive {metric} after --min_fraction')


def load_points(paths: Sequence[str], metric: str, mode: str, min_fraction: float,
                x_params: str) -> Points:
  """The points of every run in `paths`; fails naming the directories or --metric when the law
  cannot be fitted to them."""
  runs = report_command.load_runs(paths)
  where = ', '.join(paths)
  kept, params, rows, skipped = [], [], [], {}
  for run in runs:
    found, why = run_points(run, metric, mode, min_fraction)
    if not found:
      skipped.setdefault(why, []).append(run.name)
      continue
    rows += [(len(kept), *point) for point in found]
    params.append(parameters(model_config(run), x_params))
    kept.append(run)
  if not kept and all(why == f'no {metric}' for why in skipped):
    logged = report.eval_names(runs)
    evals = ', '.join(f'eval/{name}/loss' for name in logged) or 'no eval loss'
    raise errors.UserError(f'--metric={metric}: no run in {where} logged it; they log loss and '
                           f'{evals}.')
  left_out = ''.join(f' Left out, {why}: {", ".join(names)}.' for why, names in skipped.items())
  sizes = sorted(set(params))
  if len(sizes) < 3:
    raise errors.UserError(
        f'{where}: the {len(kept)} runs with points have {len(sizes)} model size(s) (N = '
        f'{", ".join(map(str, sizes)) or "none"}); telling A/N^alpha apart from E needs 3 or more. '
        'Sweep the model size (model.d_model, model.num_layers, ...) over 3 or more values.'
        + left_out)
  if len(rows) <= 5 or len({row[2] for row in rows}) < 3:
    raise errors.UserError(
        f'{where}: {len(rows)} points at {len({row[2] for row in rows})} token counts from '
        f'{len(kept)} runs cannot fit the 5 constants of E + A/N^alpha + B/D^beta; it needs 6 or '
        'more points at 3 or more token counts. Add runs (with --points=final each run is one '
        'point) or use --points=all.' + left_out)
  run_P, step_P, d_P, l_P = (np.array(column) for column in zip(*rows))
  return Points(kept, params, run_P, step_P, np.array(params, dtype=np.float64)[run_P],
                d_P.astype(np.float64), l_P, skipped)


def _plot_fit(points: Points, fit: scaling.LawFit, metric: str, path: str) -> None:
  """Measured loss against D, a colour per N, with the fitted law's curve for each N (log x)."""
  fig = figure.Figure(figsize=(9, 6), layout='constrained')
  ax = fig.subplots()
  sizes = sorted(set(points.n_P))
  colors = matplotlib.colormaps['viridis'](np.linspace(0, 0.9, len(sizes)))
  d_grid = np.geomspace(points.d_P.min(), points.d_P.max(), 200)
  for size, color in zip(sizes, colors):
    mine = points.n_P == size
    ax.scatter(points.d_P[mine], points.l_P[mine], s=12, color=color,
               label=f'N = {report.format_number(size)}')
    ax.plot(d_grid, scaling.predict(fit, size, d_grid), color=color, linewidth=1.2)
  ax.set_xscale('log')
  title = (f'{metric}: measured (points) and fitted E + A/N^alpha + B/D^beta (lines): '
           f'E={fit.E:.4g}, A={fit.A:.4g}, B={fit.B:.4g}, alpha={fit.alpha:.4g}, '
           f'beta={fit.beta:.4g}')
  ax.set_title(textwrap.fill(title, 90), fontsize=12)
  ax.set_xlabel('D, tokens seen', fontsize=11)
  ax.set_ylabel(metric, fontsize=11)
  ax.grid(alpha=0.3)
  fig.legend(loc='outside lower center', fontsize='small', ncols=min(len(sizes), 5))
  fig.savefig(path, dpi=120)


def _plot_compute(c_P, l_P, frontier_P, fit: scaling.ComputeLawFit,
                  implied: scaling.ComputeLawFit, metric: str, path: str) -> None:
  """Loss against C = 6 N D: every point, the frontier's, the fitted compute law and the law the
  fit of L(N, D) implies at its compute-optimal allocation (log x)."""
  fig = figure.Figure(figsize=(9, 6), layout='constrained')
  ax = fig.subplots()
  c_grid = np.geomspace(c_P.min(), c_P.max(), 200)
  ax.scatter(c_P[~frontier_P], l_P[~frontier_P], s=8, color='0.7', label='points')
  ax.scatter(c_P[frontier_P], l_P[frontier_P], s=14, color='C0', label='compute-efficient frontier')
  ax.plot(c_grid, scaling.predict_compute(fit, c_grid), color='C0',
          label=f'fit to the frontier: {fit.E:.3g} + {fit.A:.3g} / C^{fit.gamma:.3g}')
  ax.plot(c_grid, scaling.predict_compute(implied, c_grid), color='C3', linestyle='--',
          label=f'L(N_opt, D_opt) of the L(N, D) fit: {implied.E:.3g} + {implied.A:.3g} / '
          f'C^{implied.gamma:.3g}')
  ax.set_xscale('log')
  ax.set_title(textwrap.fill(f'{metric} against compute C = 6 N D', 90), fontsize=12)
  ax.set_xlabel('C, FLOPs', fontsize=11)
  ax.set_ylabel(metric, fontsize=11)
  ax.grid(alpha=0.3)
  fig.legend(loc='outside lower center', fontsize='small', ncols=2)
  fig.savefig(path, dpi=120)


def _constants(values: dict[str, float], intervals) -> dict:
  """name -> {'value', 'interval': [low, high] or None without a bootstrap}."""
  return {name: {'value': value, 'interval': list(intervals[name]) if intervals else None}
          for name, value in values.items()}


def summary(command: str, points: Points, fit: scaling.LawFit, intervals,
            compute: scaling.ComputeLawFit | None, compute_intervals, frontier_P) -> dict:
  """scaling_fit.json's content."""
  total = fit.alpha + fit.beta
  loss_law = _constants({'E': fit.E, 'A': fit.A, 'B': fit.B, 'alpha': fit.alpha, 'beta': fit.beta,
                         'n_opt_exponent': fit.beta / total, 'd_opt_exponent': fit.alpha / total},
                        intervals)
  c_P = 6 * points.n_P * points.d_P
  predicted_P = scaling.predict(fit, points.n_P, points.d_P)
  implied = scaling.implied_compute_law(fit)
  return {
      'command': command,
      'loss_law': {'formula': 'L(N, D) = E + A / N^alpha + B / D^beta', 'constants': loss_law,
                   'G': scaling.allocation_constant(fit),
                   'objective': fit.objective, 'init': dict(zip(
                       ('log_A', 'log_B', 'log_E', 'alpha', 'beta'), fit.init))},
      'compute_law': None if compute is None else {
          'formula': 'L(C) = E + A / C^gamma, C = 6 N D, on the compute-efficient frontier',
          'constants': _constants({'E': compute.E, 'A': compute.A, 'gamma': compute.gamma},
                                  compute_intervals),
          'objective': compute.objective,
          'init': dict(zip(('log_A', 'log_E', 'gamma'), compute.init))},
      'implied_compute_law': {'E': implied.E, 'A': implied.A, 'gamma': implied.gamma},
      'interval_level': scaling.LEVEL if intervals else None,
      'runs': [{'name': run.name, 'path': run.path, 'N': n}
               for run, n in zip(points.runs, points.params)],
      'skipped': points.skipped,
      'points': [{'run': points.runs[r].name, 'step': int(s), 'N': n, 'D': d, 'C': c, 'L': loss,
                  'predicted': p, 'frontier': bool(f)}
                 for r, s, n, d, c, loss, p, f in zip(
                     points.run_P, points.step_P, points.n_P, points.d_P, c_P, points.l_P,
                     predicted_P, frontier_P)],
  }


def _number(value: float) -> str:
  """`report.format_number`, in scientific notation from 10^15 on (an interval of a constant the
  points cannot pin down reaches such values)."""
  return report.format_number(value) if abs(value) < 1e15 else f'{value:.3g}'


def _row(name: str, entry: dict) -> list[str]:
  """A table row's cells: the constant, its fitted value and its interval ('-' without a
  bootstrap)."""
  low_high = entry['interval']
  interval = f'{_number(low_high[0])} to {_number(low_high[1])}' if low_high else '-'
  return [name, _number(entry['value']), interval]


def _table(law: dict, level: float | None) -> str:
  """The markdown table of a law's constants with their `level` intervals."""
  header = ['constant', 'fit', f'{level:.0%} interval' if level else 'interval']
  return report.markdown_table(header, ['---', '---:', '---'],
                               [_row(name, entry) for name, entry in law['constants'].items()])


def markdown(data: dict, points: Points, fit: scaling.LawFit, metric: str,
             compute_note: str) -> str:
  """scaling_fit.md: the command, the points, the constants with their intervals, the allocation
  and the plots."""
  level, law = data['interval_level'], data['loss_law']
  lines = ['# Scaling-law fit', '', 'Made by:', '', f'    {data["command"]}', '',
           f'{len(points.l_P)} points (N, D, {metric}) from {len(points.runs)} runs; N from '
           f'{report.format_number(points.n_P.min())} to {report.format_number(points.n_P.max())} '
           f'({len(set(points.params))} sizes), D from {report.format_number(points.d_P.min())} '
           f'to {report.format_number(points.d_P.max())} tokens.']
  lines += [f'Left out, {why}: {", ".join(names)}.' for why, names in points.skipped.items()]
  lines += ['', '## L(N, D) = E + A / N^alpha + B / D^beta', '', _table(law, level), '',
            f'Chinchilla\'s approach 3 (arXiv 2203.15556): Huber loss (delta {scaling.DELTA}) on '
            f'log-loss, minimum {law["objective"]:.4g}, from the initialisation '
            + ', '.join(f'{k}={v:g}' for k, v in law['init'].items()) + '. '
            + ('Intervals: percentiles of the fits to resamples of the runs (whole runs, with '
               'replacement).' if level else 'No intervals (--bootstrap=0).'), '',
            'Compute-optimal allocation (Chinchilla\'s eq. 4): N_opt(C) = G (C/6)^a, '
            f'D_opt(C) = (C/6)^b / G, G = {report.format_number(law["G"])}, a = n_opt_exponent, '
            'b = d_opt_exponent; C = 6 N D.', '']
  largest = float((6 * points.n_P * points.d_P).max())
  allocations = []
  for scale in _ALLOCATION_SCALES:
    n_opt, d_opt = (float(v) for v in scaling.compute_optimal(fit, largest * scale))
    allocations.append([f'{largest * scale:.3g}', report.format_number(n_opt),
                        report.format_number(d_opt), report.format_number(d_opt / n_opt),
                        f'{float(scaling.predict(fit, n_opt, d_opt)):.4g}'])
  lines.append(report.markdown_table(
      ['C (FLOPs)', 'N_opt', 'D_opt', 'tokens per parameter', 'predicted loss'], ['---:'] * 5,
      allocations))
  implied = data['implied_compute_law']
  lines += ['', '## L(C) = E + A / C^gamma', '']
  if data['compute_law']:
    lines += [_table(data['compute_law'], level), '',
              'Fitted to the compute-efficient frontier (the points of lower loss than every '
              'point of less compute), as Kaplan et al. 2020 (arXiv 2001.08361) fit L(C_min); '
              'with the irreducible E, the form L(N, D) takes at its optimal allocation. '
              + ('Intervals: resamples of the runs of the frontier\'s points.' if level else '')]
  else:
    lines.append(compute_note)
  lines += ['', f'Implied by L(N, D) at its optimal allocation: E = {implied["E"]:.4g}, '
            f'A = {report.format_number(implied["A"])}, gamma = alpha beta / (alpha + beta) = '
            f'{implied["gamma"]:.4g}.', '', '## Plots', '', f'![fit vs measured]({FIT_PLOT})', '']
  if data['compute_law']:
    lines += [f'![compute law]({COMPUTE_PLOT})', '']
  lines += ['Points of one run at intermediate steps (--points=all) are not compute-optimal for '
            'their D: a cosine schedule has not decayed there, so those losses lie above those '
            'of runs trained for that D alone.']
  return '\n'.join(lines) + '\n'


def mixture_ratio(run: report.Run, ratio_key: str) -> float:
  """r of the run: task TASK's share of the weights of the mixture at PATH of its config.json
  (--ratio_key=PATH.TASK; 0 where TASK has no weight); fails naming config.json and the flag."""
  path, _, task = ratio_key.rpartition('.')
  mixture = run.config
  for part in path.split('.'):
    mixture = mixture.get(part) if isinstance(mixture, dict) else None
  where = os.path.join(run.path, 'config.json')
  if not isinstance(mixture, dict):
    raise errors.UserError(f'--ratio_key={ratio_key}: {where} has no mixture at {path!r}; give '
                           'PATH.TASK of a mixture of task weights, e.g. data.mixture.stdlib_code.')
  try:
    return sampler.normalised_weights(mixture, path).get(task, 0.0)
  except errors.UserError as e:
    raise errors.UserError(f'{where}: {e}') from e


def dcpt(command: str, points: Points, metric: str, ratio_key: str, samples: int,
         seed: int) -> tuple[dict, str]:
  """(scaling_fit.json's content, scaling_fit.md) of the D-CPT law (arXiv 2406.01375) fitted to
  the points, r of each run its `mixture_ratio`, with intervals from `samples` resamples of the
  runs (none for 0)."""
  ratio_R = np.array([mixture_ratio(run, ratio_key) for run in points.runs])
  ratios = np.unique(ratio_R)
  if len(ratios) < 3:
    raise errors.UserError(f'--ratio_key={ratio_key}: the runs have {len(ratios)} distinct '
                           f'ratio(s) r ({", ".join(f"{r:.4g}" for r in ratios)}); the D-CPT law '
                           'needs 3 or more. Sweep that weight over 3 or more values (or name a '
                           'task of the mixture).')
  r_P = ratio_R[points.run_P]
  fit = scaling.fit_dcpt_law(points.n_P, points.d_P, r_P, points.l_P)
  intervals = scaling.bootstrap_dcpt_law(points.n_P, points.d_P, r_P, points.l_P, samples=samples,
                                         seed=seed, groups=points.run_P) if samples else None
  names = ('E', 'A', 'B', 'C', 'alpha', 'beta', 'eta', 'gamma')
  law = {'formula': 'L(N, D, r) = E + A / N^alpha + B r^eta / D^beta + C / (r + eps)^gamma',
         'eps': scaling.DCPT_EPS, 'ratio_key': ratio_key,
         'constants': _constants({name: getattr(fit, name) for name in names}, intervals),
         'objective': fit.objective, 'init': dict(zip(
             ('log_A', 'log_B', 'log_E', 'alpha', 'beta', 'log_C', 'eta', 'gamma'), fit.init))}
  level = scaling.LEVEL if intervals else None
  predicted_P = scaling.predict_dcpt(fit, points.n_P, points.d_P, r_P)
  data = {'command': command, 'dcpt_law': law, 'interval_level': level,
          'runs': [{'name': run.name, 'path': run.path, 'N': n, 'r': float(r)}
                   for run, n, r in zip(points.runs, points.params, ratio_R)],
          'skipped': points.skipped,
          'points': [{'run': points.runs[i].name, 'step': int(s), 'N': n, 'D': d, 'r': r, 'L': loss,
                      'predicted': p} for i, s, n, d, r, loss, p in zip(
                          points.run_P, points.step_P, points.n_P, points.d_P, r_P, points.l_P,
                          predicted_P)]}
  text = ['# D-CPT law fit', '', 'Made by:', '', f'    {command}', '',
          f'{len(points.l_P)} points (N, D, r, {metric}) from {len(points.runs)} runs; r, the '
          f'share of {ratio_key} in its mixture: {", ".join(f"{r:.4g}" for r in ratios)}.', '',
          f'## {law["formula"]}', '', _table(law, level), '',
          f'Que et al. 2024 (arXiv 2406.01375), eps = {scaling.DCPT_EPS:g}, fitted as '
          f'Chinchilla\'s approach 3: Huber loss (delta {scaling.DELTA}) on log-loss, minimum '
          f'{fit.objective:.4g}.']
  return data, '\n'.join(text) + '\n'


def write(out: str, files: dict[str, str], plots: dict[str, Callable[[str], None]]) -> None:
  """Writes the text `files` and the `plots` (name -> function of the path) into `out`, all or
  nothing, `MARKDOWN_FILE` last."""
  def write_files(staging):
    for name, draw in plots.items():
      draw(os.path.join(staging, name))
    for name, text in files.items():
      with open(os.path.join(staging, name), 'w', encoding='utf-8') as f:
        f.write(text)
    return [*plots, *sorted(files, key=lambda n: n == MARKDOWN_FILE)]
  cli.write_directory(out, write_files, 'the fit and its plots')


@cli.exits_on_user_error
def main(argv):
  cli.quiet_absl_logging()
  paths, out, metric = argv[1:], _OUT.value, _METRIC.value
  if not out:
    raise errors.UserError('--out is required: the directory the fit is written to, as in python '
                           '-m launch.scaling_fit DIR [DIR ...] --out=OUT.')
  if not paths:
    raise errors.UserError('No sweep directory given; pass one or more, as in python -m '
                           'launch.scaling_fit DIR [DIR ...] --out=OUT.')
  if _BOOTSTRAP.value < 0 or _BOOTSTRAP.value == 1:
    raise errors.UserError(f'--bootstrap={_BOOTSTRAP.value}: give 0 (no intervals) or 2 or more '
                           'resamples (200 is usual).')
  if not 0 <= _MIN_FRACTION.value < 1:
    raise errors.UserError(f'--min_fraction={_MIN_FRACTION.value} must be in [0, 1).')
  if (_LAW.value == 'dcpt') != bool(_RATIO_KEY.value):
    raise errors.UserError(f'--law={_LAW.value} --ratio_key={_RATIO_KEY.value}: the D-CPT law and '
                           'only it reads the mixture ratio; pass both --law=dcpt and '
                           '--ratio_key=PATH.TASK (e.g. data.mixture.stdlib_code), or neither.')
  points = load_points(paths, metric, _POINTS.value, _MIN_FRACTION.value, _X_PARAMS.value)
  flags_given = [f'--out={out}', f'--metric={metric}', f'--points={_POINTS.value}',
                 f'--x_params={_X_PARAMS.value}', f'--bootstrap={_BOOTSTRAP.value}']
  if _POINTS.value == 'all':
    flags_given.insert(3, f'--min_fraction={_MIN_FRACTION.value:g}')
  if _SEED.value:
    flags_given.append(f'--seed={_SEED.value}')
  if _RATIO_KEY.value:
    flags_given += ['--law=dcpt', f'--ratio_key={_RATIO_KEY.value}']
  command = 'python -m launch.scaling_fit ' + shlex.join([*paths, *flags_given])
  for why, names in points.skipped.items():
    print(f'left out, {why}: {", ".join(names)}')
  if _RATIO_KEY.value:
    data, text = dcpt(command, points, metric, _RATIO_KEY.value, _BOOTSTRAP.value, _SEED.value)
    write(out, {JSON_FILE: json.dumps(data, indent=2) + '\n', MARKDOWN_FILE: text}, {})
    print(f'{len(points.l_P)} points from {len(points.runs)} runs: D-CPT law ' + ', '.join(
        f'{name}={entry["value"]:.4g}' for name, entry in data['dcpt_law']['constants'].items()))
    print(os.path.join(out, MARKDOWN_FILE))
    return
  fit = scaling.fit_loss_law(points.n_P, points.d_P, points.l_P)
  intervals = scaling.bootstrap(points.n_P, points.d_P, points.l_P, samples=_BOOTSTRAP.value,
                                seed=_SEED.value, groups=points.run_P) if _BOOTSTRAP.value else None
  c_P = 6 * points.n_P * points.d_P
  frontier_P = scaling.compute_frontier(c_P, points.l_P)
  compute, compute_intervals, compute_note = None, None, ''
  if frontier_P.sum() >= 4 and len(np.unique(c_P[frontier_P])) >= 3:
    compute = scaling.fit_compute_law(c_P[frontier_P], points.l_P[frontier_P])
    if _BOOTSTRAP.value:
      compute_intervals = scaling.bootstrap_compute_law(
          c_P[frontier_P], points.l_P[frontier_P], samples=_BOOTSTRAP.value, seed=_SEED.value,
          groups=points.run_P[frontier_P])
  else:
    compute_note = (f'Not fitted: the compute-efficient frontier has {int(frontier_P.sum())} '
                    'points; E + A/C^gamma needs 4 or more (more runs, or --points=all).')
    print(compute_note)
  data = summary(command, points, fit, intervals, compute, compute_intervals, frontier_P)
  plots = {FIT_PLOT: lambda path: _plot_fit(points, fit, metric, path)}
  if compute:
    plots[COMPUTE_PLOT] = lambda path: _plot_compute(
        c_P, points.l_P, frontier_P, compute, scaling.implied_compute_law(fit), metric, path)
  write(out, {JSON_FILE: json.dumps(data, indent=2) + '\n',
              MARKDOWN_FILE: markdown(data, points, fit, metric, compute_note)}, plots)
  print(f'{len(points.l_P)} points from {len(points.runs)} runs: L(N, D) = {fit.E:.4g} + '
        f'{fit.A:.4g}/N^{fit.alpha:.4g} + {fit.B:.4g}/D^{fit.beta:.4g}'
        + (f'; L(C) = {compute.E:.4g} + {compute.A:.4g}/C^{compute.gamma:.4g}' if compute else ''))
  print(os.path.join(out, MARKDOWN_FILE))


if __name__ == '__main__':
  cli.run(main)
