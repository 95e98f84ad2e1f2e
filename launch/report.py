"""Compares training runs: a markdown summary table and PNG plots of their metrics.

  python -m launch.report DIR [DIR ...] --out=OUT [--log_x] [--keep_runs]

reads config.json and metrics.jsonl of every run directory DIR (the --workdir of launch.train, or
every run in DIR when DIR is the --workdir of launch.sweep; points of two sweeps that share a
name are named SWEEP:POINT) and writes OUT/report.md: the command
that made it, one table row per run (the config values that differ between the runs, the final
training loss, the final and best loss of every evaluation, the final answer accuracy where runs
score answers, tokens seen) and links to the plots next to it: training and every evaluation loss
by step and by tokens seen, answer accuracy by step, by tokens seen and by group (difficulty,
augmented), span accuracy, the learning rate by step (every step's, from the run's schedule) and
the mixture weights by step where they change (Skill-it's trajectory), all runs on one pair of axes
each (research/analysis/report.py); `--log_x` puts the loss plots on a log x axis. Runs swept over
at least 3 peak learning rates add each variant's LR sensitivity and final loss by learning rate,
and plots of the final loss and of the instability monitors against the learning rate
(research/analysis/stability.py). Runs of mixture-of-experts models add a routing table (largest
expert load, dropped assignments, each evaluation's expert load entropy and how differently the
evaluation tasks use the experts), the largest expert load and load entropies by step, and per
run a bar chart of each task's expert loads per MoE layer. Runs trained on a sequence of domains
(data.stages) and evaluated at each stage's end add their backward and forward transfer (GEM's
BWT and FWT, on losses). Runs with knowledge-injection probes (data.probes) add a table of each
probe's gap and its fitted forgetting exponent, and the gap by step. Runs whose configs differ
only in `seed` form an arm: where an arm has several seeds, a table gives each arm's mean ±
standard error over its seeds, and the plots a curve per arm (the mean, with a band of ± one
standard error).
`--keep_runs` also writes every run's config.json and metrics.jsonl (a bucket run's parts as one
file) to OUT/runs/<run>/, replacing an earlier OUT/runs, so a study can commit them and anyone can
recompute the report: python -m launch.report OUT/runs/* --out=OUT2. Everything is written to a
temporary directory in OUT first and renamed into place, report.md last, so a failed run leaves no
half-written report.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import collections
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence

from absl import flags

from research import appendable
from research import errors
from research.analysis import icl, report, stability

# Other commands define --out too; allow_override lets their modules load in one process (tests).
_OUT = flags.DEFINE_string('out', None, 'The directory report.md and the plots are written to '
                           '(created if missing).', allow_override=True)
_LOG_X = flags.DEFINE_bool('log_x', False, 'Plot the training and eval losses on a log x axis '
                           '(step, tokens seen): the early steps spread out.')
_KEEP_RUNS = flags.DEFINE_bool('keep_runs', False, 'Also copy every run\'s config.json and '
                               'metrics.jsonl to OUT/runs/<run>/ (replacing an earlier OUT/runs), '
                               'so a study can commit them and the report can be made from them '
                               'again.')

REPORT_FILE = 'report.md'
RUNS_DIR = 'runs'


def run_directories(path: str) -> list[str]:
  """[`path`] for a run directory; for a sweep directory (launch.sweep's --workdir), its
  sub-directories that hold a config.json, sorted. A directory with neither fails, saying so."""
  if not os.path.isdir(path) or any(
      appendable.exists(os.path.join(path, name)) for name in ('config.json', 'metrics.jsonl')):
    return [path]  # a run directory, or load_run names what is missing
  runs = report.sweep_runs(path)
  if not runs:
    raise errors.UserError(f'{path} holds no runs: neither it nor a sub-directory has a '
                           'config.json; pass the --workdir of launch.train runs or of a sweep.')
  return runs


def load_runs(paths: Sequence[str]) -> list[report.Run]:
  """The runs in `paths` (run directories, or sweep directories holding runs), each named by its
  directory's basename; where points of different sweeps share a name (`seed=0` of two sweeps),
  each is named `SWEEP:POINT` by its sweep directory's basename. Fails naming the directory when
  one holds no run, or when two runs still share a name."""
  if not paths:
    raise errors.UserError('No run directory given; pass one or more, as in python -m '
                           'launch.report DIR [DIR ...] --out=OUT.')
  found = [(path, report.load_run(run)) for path in paths for run in run_directories(path)]
  counts = collections.Counter(run.name for _, run in found)
  runs = [dataclasses.replace(run, name=f'{os.path.basename(os.path.normpath(path))}:{run.name}')
          if counts[run.name] > 1 and run.path != path else run for path, run in found]
  first_path = {}
  for run in runs:
    if run.name in first_path:
      raise errors.UserError(f'Run directories {first_path[run.name]} and {run.path} share the '
                             f'name {run.name!r}, which names a run in the report; pass '
                             'directories with distinct basenames (e.g. a symlink under another '
                             'name).')
    first_path[run.name] = run.path
  return runs


def format_report(command: str, runs: Sequence[report.Run], plot_files: Sequence[str],
                  kept_runs: bool = False) -> str:
  """report.md: the command, the runs' directories and code versions (with `kept_runs`, where their
  copies are), the summary table, the arm table where runs differ in seed alone, and the plots (file
  names relative to report.md)."""
  lines = ['# Training report', '', 'Made by:', '', f'    {command}', '', '## Runs', '']
  lines += [f'- `{run.name}`: `{run.path}`{report.code_label(run)}' for run in runs]
  lines += [f'- `{run.name}`: skipped unreadable lines of metrics.jsonl (torn writes): '
            f'{", ".join(map(str, run.skipped_lines))}' for run in runs if run.skipped_lines]
  if kept_runs:
    again = shlex.join([f'{RUNS_DIR}/{run.name}' for run in runs])
    lines += ['', f'Each run\'s config.json and metrics.jsonl are kept in `{RUNS_DIR}/<run>/`; in '
              f'this directory, `python -m launch.report {again} --out=OUT` makes this report '
              f'from them (`{RUNS_DIR}/*`: with the rows in name order).']
  lines += ['', '## Summary', '', report.summary_table(runs), '',
            'Columns: the config values that differ between the runs; `step`, the last step '
            'logged; the final value of each metric (`loss` is the training loss); `best`, the '
            'lowest value of an evaluation loss.']
  sections = (
      ('Arms (mean ± standard error over seeds)', report.arm_table(runs),
       'An arm is the runs whose configs differ only in `seed`; `n`, its runs (seeds). Each cell '
       'is the mean of the seeds\' final values ± SE, the standard error of that mean (the sample '
       'standard deviation over the seeds / sqrt(n)); a value alone where n = 1, and `(n=k)` where '
       'only k seeds logged the metric. A difference between two arms smaller than about twice '
       'their combined SE, sqrt(SE1^2 + SE2^2), is within the noise between seeds.'),
      ('Forgetting and adaptation', report.continual_table(runs),
       'Runs started from a checkpoint (`init.path`): each evaluation loss before the first step '
       'and at the end. Upstream tasks (the starting run\'s mixture): a rise is forgetting; '
       'downstream tasks: a fall is adaptation.'),
      ('Transfer over a domain sequence', report.transfer_table(runs),
       'Runs trained on a sequence of domains (the stages of `data.mixture` and `data.stages`), '
       'evaluated at the end of every stage, per arm, mean ± SE over the `n` seeds, with R[i, j] '
       'the eval loss on domain j (the mean over a stage\'s tasks) at the end of stage i: `BWT`, '
       'the mean over the earlier domains of the final loss less the loss at the end of their own '
       'stage (> 0: forgetting); `FWT`, the mean over the later domains of the loss before their '
       'stage began less the loss before any training (the step-0 evaluation, else ln V, the '
       'uniform prediction\'s; < 0: the earlier domains helped); `final loss`, the mean final '
       'loss over the domains. Lopez-Paz & Ranzato 2017 (GEM, arXiv 1706.08840) define them on '
       'accuracies, so the signs are reversed here.'),
      ('Stability gap', report.stability_gap_table(runs),
       'Runs started from a checkpoint and evaluated at step 0, per arm and evaluation, mean ± SE '
       'over the `n` seeds: the value at step 0; `dip depth`, how much worse than it the worst '
       'later evaluation is (a drop of accuracy, a rise of loss; 0: none worse); `dip step`, the '
       'step of that evaluation; `steps to recover`, the first step after it back at the step-0 '
       'value or better (0 without a dip). `(n=k)`: only k seeds dipped, or got back; `-`: none '
       '(Guo et al. 2024, arXiv 2406.14833).'),
      ('Knowledge probes', report.forgetting_table(runs),
       'Runs with knowledge-injection probes (`data.probes`). The gap is the control documents\' '
       'eval loss minus the injected documents\' (nats per token); `baseline gap`, its mean over '
       'the 5 evaluations before the first exposure; `added`, the gap less the baseline at the '
       'first evaluation after the last exposure and at the end; `retained`, their ratio; '
       '`exponent b` and `r2`, the power law a t^-b fitted to the added gap after the last '
       'exposure (t = steps since it; larger b = forgotten faster); `r2 (exponential)`, of an '
       'exponential decay a exp(-t / tau) fitted to the same points: the higher r2 is the form '
       'the decay follows.'),
      ('Expert routing', report.routing_table(runs),
       'Runs of mixture-of-experts models, final values: `moe/max_load`, N_E times the largest '
       'expert load averaged over layers (1 = balanced); `moe/dropped_fraction`, the share of '
       'assignments over capacity; `load_entropy`, the entropy (nats) of an evaluation\'s expert '
       'loads (ln N_E = spread evenly); `domain divergence`, the Jensen-Shannon divergence (nats, '
       'at most ln 2) between the tasks\' expert loads at the last evaluation, averaged over task '
       'pairs and MoE layers: higher, the tasks use more different experts (more '
       'specialisation).'),
      ('Learning-rate sensitivity', stability.sensitivity_table(runs),
       'Runs swept over `schedule.peak_lr`, grouped by their other swept values (the variant): '
       'the final loss (the mean final eval loss over the training tasks) at each peak learning '
       'rate, mean ± SE over seeds, nan where the run diverged; `LR sensitivity`, E_lr[min(loss, '
       'l0)] - min_lr loss (Wortsman et al. 2023, arXiv 2309.14322), l0 = ln(vocab_size), the '
       'loss at initialisation, capping diverged runs (research/analysis/stability.py): 0 when '
       'every learning rate reaches the best loss.'),
      ('In-context regression', icl.regression_table(runs),
       'Runs with an icl_regression task: final answer accuracy on held-out tasks (and on the '
       'pool\'s tasks), overall and by number of context pairs n, mean ± SE over seeds, against '
       'ridge regression and the Bayes estimator under the training prior (Raventós et al. 2023, '
       'arXiv 2306.15063; research/analysis/icl.py).'))
  for title, table, caption in sections:  # each only where some run has its data
    if table:
      lines += ['', f'## {title}', '', table, '', caption]
  if plot_files:
    lines += ['', '## Plots', '']
    lines += [f'![{os.path.splitext(name)[0]}]({name})\n' for name in plot_files]
  return '\n'.join(lines).rstrip('\n') + '\n'


def write_report(out: str, command: str, runs: Sequence[report.Run], log_x: bool = False,
                 keep_runs: bool = False) -> str:
  """Writes report.md and the plots (`log_x`: the losses on a log x axis) into `out`, with
  `keep_runs` every run's `report.run_files` into `out`/runs/<run>/ in place of an earlier
  `out`/runs (all or nothing, report.md last), and returns report.md's path."""
  def write(staging):
    names = []
    if keep_runs:
      for run in runs:
        os.makedirs(os.path.join(staging, RUNS_DIR, run.name))
        for name, text in report.run_files(run).items():
          with open(os.path.join(staging, RUNS_DIR, run.name, name), 'w', encoding='utf-8') as f:
            f.write(text)
      names.append(RUNS_DIR)
    plot_files = [os.path.basename(path) for path in report.plot_runs(runs, staging, log_x)]
    for name, fig in stability.figures(runs):
      fig.savefig(os.path.join(staging, name), dpi=120)
      plot_files.append(name)
    with open(os.path.join(staging, REPORT_FILE), 'w', encoding='utf-8') as f:
      f.write(format_report(command, runs, plot_files, keep_runs))
    if keep_runs and os.path.lexists(os.path.join(out, RUNS_DIR)):
      # The earlier copies move into the staging directory, which is removed after the renames.
      os.replace(os.path.join(out, RUNS_DIR), os.path.join(staging, f'old-{RUNS_DIR}'))
    return [*names, *plot_files, REPORT_FILE]
  cli.write_directory(out, write, 'report.md, the plots and the kept runs' if keep_runs else
                      'report.md and the plots')
  return os.path.join(out, REPORT_FILE)


@cli.exits_on_user_error
def main(argv):
  out, paths = _OUT.value, argv[1:]
  if not out:
    raise errors.UserError('--out is required: the directory report.md and the plots are '
                           'written to, as in python -m launch.report DIR [DIR ...] --out=OUT.')
  runs = load_runs(paths)
  for run in runs:
    if run.skipped_lines:
      print(f'warning: skipped unreadable lines {list(run.skipped_lines)} of '
            f'{os.path.join(run.path, "metrics.jsonl")} (torn writes)', file=sys.stderr)
  command = 'python -m launch.report ' + shlex.join(
      [*paths, f'--out={out}', *(['--log_x'] if _LOG_X.value else []),
       *(['--keep_runs'] if _KEEP_RUNS.value else [])])
  print(write_report(out, command, runs, _LOG_X.value, _KEEP_RUNS.value))


if __name__ == '__main__':
  cli.run(main)
