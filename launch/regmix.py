"""RegMix's last step: fit mixture -> target loss over a sweep's runs and write the best mixture.

  python -m launch.regmix DIR --target=eval/stdlib_code/loss --out=F.py [--candidates=100000] \
      [--top_k=128] [--seed=0] [--minimum=0.0002] [--token_counts=task=N,...] \
      [--mixture_block=1024]

reads every run of the sweep directory DIR (launch.sweep's --workdir; each sub-directory with a
config.json): its mixture (`data.mixture` in config.json, normalised over the positive weights as
the sampler does) and the target's value at the run's last step (`train.steps`) in
metrics.jsonl; several metrics, comma-separated, give their mean (e.g. the mean loss over the
domains, a target that no single domain's data wins). Runs that never logged the target, or
stopped before their last step, or logged a non-finite value, are listed and left out. It fits
the regression of research/analysis/regmix.py, prints its cross-validated fit quality, draws --candidates
mixtures from the RegMix prior (uniform, or --token_counts), and writes F.py: the mean of the
--top_k best predicted mixtures as

  config.data.mixture = ml_collections.ConfigDict({...})

(each weight a whole number of the --mixture_block examples in which the sampler's proportions are
exact, so a weight too small for one example drops its task rather than failing the run) with
comments naming the command, the runs and the fit, for an experiment file to paste or to
exec with `config` in scope (experiments/regmix.py:target does). Liu et al. 2024, "RegMix: Data
Mixture as Regression for Language Model Pre-training", arXiv 2407.01492.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import dataclasses
import math
import os
import shlex

import numpy as np
from absl import flags

from research import errors
from research.analysis import regmix
from research.analysis import report
from research.data import sampler

# Other commands define --out too; allow_override lets their modules load in one process (tests).
_OUT = flags.DEFINE_string('out', None, 'The Python file the config snippet is written to.',
                           allow_override=True)
_TARGET = flags.DEFINE_string('target', None, 'The metric to minimise, e.g. eval/stdlib_code/loss; '
                              'several, comma-separated, minimise their mean.', allow_override=True)
_CANDIDATES = flags.DEFINE_integer('candidates', 100_000, 'Candidate mixtures drawn from the prior '
                                   'and scored by the regression.', allow_override=True)
_TOP_K = flags.DEFINE_integer('top_k', regmix.TOP_K, 'The best-predicted candidates averaged into '
                              'the mixture written.', allow_override=True)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the candidates and of the cross-validation folds.',
                             allow_override=True)
_MINIMUM = flags.DEFINE_float('minimum', regmix.MINIMUM, 'Candidate weights below this are zeroed '
                              'and the rest rounded to multiples of it.', allow_override=True)
_MIXTURE_BLOCK = flags.DEFINE_integer('mixture_block', 1024, 'The data.mixture_block of the run '
                                      'the mixture is for: each weight written is a whole number '
                                      'of its examples.', allow_override=True)
_TOKEN_COUNTS = flags.DEFINE_list('token_counts', [], 'task=tokens,... : the RegMix prior over the '
                                  'candidates (default uniform).', allow_override=True)


@dataclasses.dataclass(frozen=True)
class Runs:
  """What the regression is fitted on, and what was left out."""
  tasks: list[str]
  names: list[str]
  weights_NT: np.ndarray
  losses_N: np.ndarray
  skipped: dict[str, list[str]]  # why -> run names


def mixture(run: report.Run) -> dict[str, float]:
  """The run's data.mixture, normalised over its positive weights; fails naming config.json."""
  where = os.path.join(run.path, 'config.json')
  weights = run.config.get('data', {}).get('mixture') if isinstance(
      run.config.get('data'), dict) else None
  if not isinstance(weights, dict) or not weights:
    raise errors.UserError(f'{where} has no data.mixture; pass runs of launch.train.')
  bad = {k: v for k, v in weights.items() if isinstance(v, bool) or not isinstance(
      v, (int, float)) or not 0 <= v < math.inf}
  if bad or not sum(weights.values()) > 0:
    raise errors.UserError(f'{where}: data.mixture={weights} needs finite weights >= 0, one of '
                           'them positive; fix or leave the run out.')
  total = sum(weights.values())
  return {task: float(w) / total for task, w in weights.items()}


def target_value(run: report.Run, target: str) -> tuple[float | None, str]:
  """(the target at the run's last step, '') or (None, why the run is left out). A target of
  several metrics, comma-separated, is their mean (e.g. the mean loss over the domains)."""
  values = []
  for metric in target.split(','):
    steps = [step for step, logged in run.metrics.items() if metric in logged]
    if not steps:
      return None, f'no {metric}'
    last = run.config.get('train', {}).get('steps') if isinstance(run.config.get('train'),
                                                                  dict) else None
    if isinstance(last, int) and steps[-1] < last:
      return None, f'unfinished (last {metric} at step {steps[-1]} of {last})'
    values.append(run.metrics[steps[-1]][metric])
  value = float(np.mean(values))
  return (value, '') if math.isfinite(value) else (None, f'non-finite {target}')


def load_runs(path: str, target: str) -> Runs:
  """The runs of sweep directory `path` with their mixtures and the target; fails naming the path
  or --target when nothing, or too little, can be fitted."""
  runs = [report.load_run(run) for run in cli.sweep_runs(path)]
  mixtures = {run.name: mixture(run) for run in runs}
  tasks = list(dict.fromkeys(task for run in runs for task in mixtures[run.name]))
  names, rows, losses, skipped = [], [], [], {}
  for run in runs:
    value, why = target_value(run, target)
    if value is None:
      skipped.setdefault(why, []).append(run.name)
      continue
    names.append(run.name)
    rows.append([mixtures[run.name].get(task, 0.0) for task in tasks])
    losses.append(value)
  if not names and all(why.startswith('no ') for why in skipped):
    logged = sorted({key for run in runs for values in run.metrics.values() for key in values
                     if key.startswith('eval/') and key.endswith('/loss')})
    raise errors.UserError(f'--target={target}: no run in {path} logged it; the evaluation losses '
                           f'they log: {", ".join(logged) or "none"}.')
  if len(names) < len(tasks) + 1:
    raise errors.UserError(f'{path}: {len(names)} of {len(runs)} runs have a final {target}; '
                           f'fitting {len(tasks)} tasks ({", ".join(tasks)}) needs at least '
                           f'{len(tasks) + 1}. Finish more runs of the sweep (re-run '
                           'launch.sweep).')
  return Runs(tasks, names, np.array(rows), np.array(losses), skipped)


def token_counts(items: list[str], tasks: list[str]) -> dict[str, float] | None:
  """--token_counts as task -> count (None when not given); fails naming the flag."""
  if not items:
    return None
  counts = {}
  for item in items:
    task, _, count = item.partition('=')
    try:
      counts[task] = float(count)
    except ValueError:
      raise errors.UserError(f'--token_counts={",".join(items)}: {item!r} is not task=tokens, '
                             'e.g. stdlib_code=2.5e6.') from None
  unknown = sorted(set(counts) - set(tasks))
  missing = [t for t in tasks if t not in counts]
  if unknown or missing or not all(0 < c < math.inf for c in counts.values()):
    raise errors.UserError(f'--token_counts={",".join(items)} needs a positive count for each of '
                           f'the runs\' tasks {tasks} and no other (unknown: {unknown}, missing: '
                           f'{missing}).')
  return counts


def snippet(command: str, target: str, runs: Runs, model: regmix.Regression,
            best: regmix.Best, mixture_block: int) -> str:
  """F.py: comments on where the mixture comes from, then the config.data.mixture assignment,
  each weight a whole number of the `mixture_block` examples of a block (what the sampler draws
  exactly; a weight under half an example becomes 0, which drops the task)."""
  shares = sampler.block_shares(best.weights, mixture_block)
  observed = runs.losses_N
  entries = ''.join(f'    {task!r}: {w!r},  # {round(w * mixture_block)} / {mixture_block}\n'
                    for task, w in shares.items())
  return (f'# RegMix (Liu et al. 2024, arXiv 2407.01492): the mixture predicted to minimise '
          f'{target}.\n'
          f'# Made by: {command}\n'
          f'# Fitted on {model.num_runs} runs: ridge regression on {model.features} features '
          f'(penalty {model.penalty:.3g}); {model.cv_folds}-fold cross-validated Spearman '
          f'{model.cv_spearman:.3f}, RMSE {model.cv_rmse:.4f}.\n'
          f'# Predicted {target} here: {best.predicted_loss:.4f} (mean of the top {best.top_k} '
          f'candidates); the runs: best {observed.min():.4f}, median {np.median(observed):.4f}.\n'
          'import ml_collections\n\n'
          'config.data.mixture = ml_collections.ConfigDict({\n'
          f'{entries}'
          '})\n')


@cli.exits_on_user_error
def main(argv):
  paths, target, out = argv[1:], _TARGET.value, _OUT.value
  if len(paths) != 1:
    raise errors.UserError(f'Give one sweep directory (got {len(paths)}), as in python -m '
                           'launch.regmix DIR --target=eval/stdlib_code/loss --out=F.py.')
  if not target:
    raise errors.UserError('--target is required: the metric to minimise, e.g. '
                           '--target=eval/stdlib_code/loss.')
  if not out:
    raise errors.UserError('--out is required: the .py file the mixture is written to.')
  if _CANDIDATES.value < 1 or _TOP_K.value < 1 or _MIXTURE_BLOCK.value < 1:
    raise errors.UserError(f'--candidates={_CANDIDATES.value}, --top_k={_TOP_K.value} and '
                           f'--mixture_block={_MIXTURE_BLOCK.value} must be at least 1.')
  runs = load_runs(paths[0], target)
  counts = token_counts(_TOKEN_COUNTS.value, runs.tasks)
  for why, names in runs.skipped.items():
    print(f'left out, {why}: {", ".join(names)}')
  model = regmix.fit(runs.weights_NT, runs.losses_N, seed=_SEED.value)
  best = regmix.predict_best(model, runs.tasks, _CANDIDATES.value, _SEED.value, top_k=_TOP_K.value,
                             minimum=_MINIMUM.value, token_counts=counts)
  flags_given = [f'--target={target}', f'--out={out}', f'--candidates={_CANDIDATES.value}']
  for flag, default in ((_TOP_K, regmix.TOP_K), (_SEED, 0), (_MINIMUM, regmix.MINIMUM),
                        (_MIXTURE_BLOCK, 1024)):
    if flag.value != default:
      flags_given.append(f'--{flag.name}={flag.value}')
  if counts:
    flags_given.append(f'--token_counts={",".join(_TOKEN_COUNTS.value)}')
  command = 'python -m launch.regmix ' + shlex.join([paths[0], *flags_given])
  lowest = int(np.argmin(runs.losses_N))
  print(f'{len(runs.names)} runs over {", ".join(runs.tasks)}; {target}: best '
        f'{runs.losses_N[lowest]:.4f} ({runs.names[lowest]}), median '
        f'{np.median(runs.losses_N):.4f}.')
  print(f'fit: ridge on {model.features} features, penalty {model.penalty:.3g}; '
        f'{model.cv_folds}-fold cross-validated Spearman {model.cv_spearman:.3f}, '
        f'RMSE {model.cv_rmse:.4f}.')
  print(f'predicted best mixture (mean of the top {best.top_k} of {_CANDIDATES.value} '
        f'candidates): ' + ', '.join(f'{task}={w:.4f}' for task, w in best.weights.items())
        + f'; predicted {target} {best.predicted_loss:.4f}.')
  cli.write_atomically(out, snippet(command, target, runs, model, best, _MIXTURE_BLOCK.value))
  print(f'wrote {out}')


if __name__ == '__main__':
  cli.run(main)
