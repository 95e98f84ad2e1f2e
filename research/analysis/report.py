"""Comparison of training runs: their metrics merged by step, what differs between their configs,
a markdown summary table and matplotlib plots (the library under `python -m launch.report`).

A run directory holds `config.json` (the resolved config as nested JSON) and `metrics.jsonl` (one
JSON object a line with `step`; train lines carry `loss`, `learning_rate`, `tokens_seen`, ...,
eval lines `eval/<name>/loss`, where `<name>` is a task or a task and an example format such as
`stdlib_code/R3_15`), on tasks with answers `eval/<name>/answer_accuracy` and its groups
`eval/<name>/answer_accuracy/<key>_<value>` (`difficulty_2`, `augmented_true`), and in
span-denoising formats `eval/<name>/span_accuracy` (research/evaluate.py). Runs of
mixture-of-experts models also log their routing: train lines `moe/max_load`,
`moe/dropped_fraction`, ... and `moe/layer_<m>/expert_<e>`, eval lines
`eval/<task>/moe/layer_<m>/expert_<e>`, `eval/<task>/moe/load_entropy` and
`eval/<task>/moe/dropped_fraction` (research/objectives/load_balance.py). A step can have several
lines (a train and an eval line, and the lines a resumed run logs again); they merge metric by
metric, the later line winning.
"""

import collections
import dataclasses
import itertools
import json
import math
import os
import re
import statistics
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import matplotlib
import ml_collections
import numpy as np
from matplotlib import figure
from matplotlib import ticker

from research import appendable, defaults, errors, runs, schedules
from research.analysis import forgetting
from research.data import exposures

# Config keys that only say where things live or how they are saved, not what is trained:
# a key equal to one of these or under one (`checkpoint.every`) never counts as swept.
LOCATION_KEYS = ('workdir', 'data.store_dir', 'checkpoint', 'distributed', 'logging',
                 'code_version')

_MIXTURE_WEIGHT = re.compile(r'^data/(.+)/weight$')
_MOE_METRIC = re.compile(r'^(eval/.+/)?moe/')
_EXPERT_LOAD = re.compile(r'^eval/(.+)/moe/layer_(\d+)/expert_(\d+)$')
_UNSAFE_IN_FILE_NAMES = re.compile(r'[^\w.]+')  # in an eval name: '/' above all
_SUFFIXED_FROM = 1e4  # numbers this large are shown with a suffix: 40.96k, not 4.096e+04
_SUFFIXES = ((1e12, 'T'), (1e9, 'B'), (1e6, 'M'), (1e3, 'k'))
_MAX_MARKED_POINTS = 30  # a curve with at most this many points shows a marker at each
_LEGEND_WIDTH = 100  # characters a legend line holds before it wraps
_TITLE_WIDTH = 90  # characters a title line holds before it wraps (9-inch figures)
_LINE_STYLES = ('-', '--', ':')
_MAX_LABEL_KEYS = 4  # a run differing in more config values is labelled by its name


@dataclasses.dataclass(frozen=True)
class Run:
  """One run directory as read by `load_run`.

  Attributes:
    name: the directory's basename.
    path: the directory as given.
    config: config.json, nested dicts, with keys that moved since it was written at their new
      place (research/runs.moved_keys), so an old run and a new one compare key by key.
    metrics: step -> metric name -> value, steps ascending; the lines of a step merged, later lines
      winning. Non-finite values (written as "nan", "inf") are floats again.
    skipped_lines: 1-based numbers of the metrics.jsonl lines (or torn beginnings of lines) that
      were not read, counted through the file and then its parts.
    metrics_text: metrics.jsonl's text as read (a bucket run's parts joined), which `run_files`
      keeps; None for a run made in memory.
  """
  name: str
  path: str
  config: dict
  metrics: dict[int, dict[str, float]]
  skipped_lines: tuple[int, ...] = ()
  metrics_text: str | None = None


def _number(value: Any) -> float | None:
  """`value` as a float if it is a metric value (a number, or "nan"/"inf" as written), else None."""
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    return None
  try:
    return float(value)
  except ValueError:
    return None


def _parse(text: str) -> dict | None:
  """The JSON object in `text` when it is one with an integer `step`, else None."""
  try:
    record = json.loads(text)
  except json.JSONDecodeError:
    return None
  step = record.get('step') if isinstance(record, dict) else None
  return record if isinstance(step, int) and not isinstance(step, bool) else None


def merge_metrics(lines: Sequence[str]) -> tuple[dict[int, dict[str, float]], tuple[int, ...]]:
  """The metrics of metrics.jsonl `lines` by step (later lines winning), and skipped line numbers.

  A line that is not a whole JSON object with an integer `step` (a line torn by a kill mid-write)
  is skipped. A resumed run appends to the file, so a torn line can have the resumed run's first
  line glued to its end: the object from the line's last `{"step"` on is then read. Blank lines
  are ignored, and values that are not numbers are left out.
  """
  merged: dict[int, dict[str, float]] = {}
  skipped = []
  for number, line in enumerate(lines, start=1):
    text = line.strip()
    if not text:
      continue
    record = _parse(text)
    if record is None:
      skipped.append(number)
      start = text.rfind('{"step"')
      record = _parse(text[start:]) if start > 0 else None
    if record is None:
      continue
    values = {k: _number(v) for k, v in record.items() if k != 'step'}
    merged.setdefault(record['step'], {}).update(
        {k: v for k, v in values.items() if v is not None})
  return dict(sorted(merged.items())), tuple(skipped)


def load_run(path: str) -> Run:
  """Reads the run directory `path`, local or gs://: its config.json (research/runs.py) and
  metrics.jsonl (see `merge_metrics`), the latter as a file, as the parts a run in a bucket writes,
  or both (research/appendable.py)."""
  where = f'Run directory {path}'
  if not runs.is_directory(path, where):
    raise errors.UserError(f'{where} does not exist or is not a directory; pass the --workdir of '
                           'launch.train runs.')
  config = runs.read_config(path, where)
  metrics_path = os.path.join(path, 'metrics.jsonl')
  if not appendable.exists(metrics_path):
    raise errors.UserError(f'{where} has no metrics.jsonl; pass the --workdir of a launch.train '
                           'run, which holds config.json and metrics.jsonl.')
  try:
    text = appendable.read_text(metrics_path)
  except OSError as e:
    raise errors.UserError(f'Cannot read {metrics_path} ({e.strerror}); make it readable or leave '
                           'the run out.') from e
  metrics, skipped = merge_metrics(text.split('\n'))
  return Run(os.path.basename(runs.workdir(path)), path, config, metrics, skipped, text)


def run_files(run: Run) -> dict[str, str]:
  """File name -> text of `run`'s config.json and metrics.jsonl as read, for a study to keep and
  report on again: the config (keys that moved at their new place, in its order) as indented JSON,
  and metrics.jsonl's text (a bucket run's parts as one file); a run made in memory gets a line per
  step of its merged metrics."""
  metrics = run.metrics_text
  if metrics is None:
    metrics = ''.join(json.dumps({'step': step, **values}) + '\n'
                      for step, values in run.metrics.items())
  return {'config.json': json.dumps(run.config, indent=2) + '\n', 'metrics.jsonl': metrics}


def sweep_runs(directory: str) -> list[str]:
  """The sub-directories of `directory` that hold a config.json (the runs of a sweep), sorted."""
  return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                if os.path.isfile(os.path.join(directory, name, 'config.json')))


def flatten_config(config: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """Nested config dicts as one dict of dotted keys ('model.architecture'); {} is a value."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, Mapping) and value:
      flat.update(flatten_config(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = value
  return flat


def _is_location_key(key: str) -> bool:
  return any(key == k or key.startswith(k + '.') for k in LOCATION_KEYS)


def _swept(runs: Sequence[Run]) -> tuple[list[str], list[dict[str, Any]],
                                        list[dict[str, str | None]]]:
  """The keys swept between `runs` (`swept_values`), in config order; each run's flat config; and
  each run's value of every swept key as compared: JSON of its own value, else of the default
  unless the run has keys below it (a free section such as data.tasks that it filled), else None."""

  default_values = flatten_config(defaults.get_config().to_dict())

  def value(values: dict[str, Any], key: str) -> str | None:
    if key not in values and (key not in default_values
                              or any(k.startswith(key + '.') for k in values)):
      return None
    return json.dumps(values[key] if key in values else default_values[key], sort_keys=True)

  flat = [flatten_config(run.config) for run in runs]
  keys = dict.fromkeys(key for values in flat for key in values if not _is_location_key(key))
  swept = [key for key in keys if len({value(values, key) for values in flat}) > 1]
  return swept, flat, [{key: value(values, key) for key in swept} for values in flat]


def swept_values(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
  """Run name -> the config values (dotted keys, config order) that differ between `runs`.

  A key counts when its value differs between two runs or some run lacks it; a run lacking it has
  no entry for it. A run that lacks a key of research/defaults.py's schema predates the key, and
  counts as having its default (new keys default to the old behaviour). Keys of `LOCATION_KEYS`
  never count. One run has nothing swept.
  """
  swept, flat, _ = _swept(runs)
  return {run.name: {key: values[key] for key in swept if key in values}
          for run, values in zip(runs, flat)}


def format_value(value: Any) -> str:
  """A config value as the table and legends show it: strings bare, the rest as JSON."""
  return value if isinstance(value, str) else json.dumps(value)


def _labels(names: Sequence[str], swept: Sequence[Mapping[str, Any]]) -> list[str]:
  """`run_labels` of runs (or arms) with these names and swept values."""
  labels = [', '.join(f'{k}={format_value(v)}' for k, v in values.items())
            if 0 < len(values) <= _MAX_LABEL_KEYS else name for name, values in zip(names, swept)]
  return [f'{name}: {label}' if labels.count(label) > 1 and label != name else label
          for name, label in zip(names, labels)]


def run_labels(runs: Sequence[Run]) -> list[str]:
  """Each run's legend label: its swept values (`objective.name=ul2, model.architecture=decoder`),
  or its name when nothing differs or more than `_MAX_LABEL_KEYS` values do (runs of different
  experiments: the summary table lists them); a label that several runs share is prefixed with
  the name."""
  swept = swept_values(runs)
  return _labels([run.name for run in runs], [swept[run.name] for run in runs])


@dataclasses.dataclass(frozen=True)
class Arm:
  """Runs whose configs differ only in `seed`: one setting, trained with several seeds (`arms`).

  Attributes:
    label: the swept values other than `seed` that set the arm apart, as `run_labels` writes them;
      where there are none or too many, its runs' names.
    runs: its runs, in the order given.
  """
  label: str
  runs: tuple[Run, ...]


def arms(runs: Sequence[Run], ignore: Sequence[str] = ('seed',)) -> list[Arm]:
  """`runs` grouped into `Arm`s (configs equal but for `seed`, or for every key of `ignore`,
  compared as `swept_values` compares them: `LOCATION_KEYS` ignored, a missing key as its
  default), in the order their runs first appear."""
  swept, flat, compared = _swept(runs)
  members: dict[tuple, list[int]] = {}
  for index, values in enumerate(compared):
    members.setdefault(tuple(v for k, v in values.items() if k not in ignore), []).append(index)
  groups = list(members.values())
  labels = _labels([', '.join(runs[i].name for i in group) for group in groups],
                   [{k: flat[group[0]][k] for k in swept if k not in ignore and k in flat[group[0]]}
                    for group in groups])
  return [Arm(label, tuple(runs[i] for i in group)) for label, group in zip(labels, groups)]


def mean_and_error(values: Sequence[float]) -> tuple[float, float | None]:
  """The mean of `values` and its standard error, the sample standard deviation / sqrt(n) (None
  for one value); nan where a value is not finite."""
  n = len(values)
  mean = math.fsum(values) / n
  if n == 1:
    return mean, None
  return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1) / n)


def series(run: Run, key: str, x: str = 'step') -> tuple[list[float], list[float]]:
  """The values of metric `key` against `x` (`step` or another metric) at the steps with both."""
  points = [(step if x == 'step' else values[x], values[key])
            for step, values in run.metrics.items()
            if key in values and (x == 'step' or x in values)]
  return [p[0] for p in points], [p[1] for p in points]


def final_value(run: Run, key: str) -> float | None:
  """Metric `key` at the last step that logged it; None when no step did."""
  values = series(run, key)[1]
  return values[-1] if values else None


def best_value(run: Run, key: str) -> float | None:
  """The lowest finite value of metric `key` (nan when none is finite); None when never logged."""
  values = series(run, key)[1]
  finite = [v for v in values if math.isfinite(v)]
  return min(finite) if finite else (math.nan if values else None)


def eval_names(runs: Sequence[Run], metric: str = 'loss') -> list[str]:
  """The sorted `<name>`s of the `eval/<name>/<metric>` metrics any of `runs` logged."""
  pattern = re.compile(rf'^eval/(.+)/{re.escape(metric)}$')
  return sorted({match[1] for run in runs for values in run.metrics.values() for key in values
                 if (match := pattern.match(key))})


def format_number(value: float | None) -> str:
  """4 significant digits, from 10^4 on with a suffix k, M, B or T (40960: '40.96k'); None: '-'."""
  if value is None:
    return '-'
  if not math.isfinite(value):
    return str(value)
  rounded = float(f'{value:.4g}')
  if abs(rounded) >= _SUFFIXED_FROM:
    scale, suffix = next((scale, suffix) for scale, suffix in _SUFFIXES if abs(rounded) >= scale)
    return f'{rounded / scale:.4g}{suffix}'
  return f'{rounded:.4g}'


def _cell(text: str) -> str:
  return text.replace('|', r'\|').replace('\n', ' ')


def markdown_table(header: Sequence[str], align: Sequence[str], rows) -> str:
  """A markdown table: the `header` row, the `align` row ('---', '---:'), then `rows`."""
  return '\n'.join('| ' + ' | '.join(_cell(c) for c in row) + ' |'
                   for row in [header, align, *rows])


def _final_metrics(runs: Sequence[Run]) -> list[str]:
  """The metrics whose final values the tables show: train `loss`, then of every eval name its
  `eval/<name>/loss` and, where it scores answers, its `eval/<name>/answer_accuracy`."""
  answered = eval_names(runs, 'answer_accuracy')
  keys = ['loss']
  for name in eval_names(runs):
    keys.append(f'eval/{name}/loss')
    if name in answered:
      keys.append(f'eval/{name}/answer_accuracy')
  return keys


def summary_table(runs: Sequence[Run]) -> str:
  """A markdown table, one row per run: run, swept values, last step, final train `loss`, final and
  best (lowest) `eval/<name>/loss` of every eval name, the final `eval/<name>/answer_accuracy` of
  every eval name that scores answers, final `tokens_seen`."""
  swept = swept_values(runs)
  keys = list(dict.fromkeys(key for values in swept.values() for key in values))
  metrics = []
  for key in _final_metrics(runs):
    metrics.append((key, final_value, key))
    if key.startswith('eval/') and key.endswith('/loss'):
      metrics.append((f'best {key}', best_value, key))
  metrics.append(('tokens_seen', final_value, 'tokens_seen'))
  header = ['run', *keys, 'step', *(title for title, _, _ in metrics)]
  align = ['---'] * (1 + len(keys)) + ['---:'] * (1 + len(metrics))
  rows = [[run.name,
           *(format_value(swept[run.name][k]) if k in swept[run.name] else '-' for k in keys),
           str(max(run.metrics)) if run.metrics else '-',
           *(format_number(value(run, key)) for _, value, key in metrics)]
          for run in runs]
  return markdown_table(header, align, rows)


def arm_table(runs: Sequence[Run]) -> str:
  """A markdown table, one row per `arms` arm: its label, n (its runs: seeds), and for every metric
  of `summary_table`'s final values but tokens seen, `mean ± SE` over the seeds that logged it
  (`mean_and_error`; the value alone where one did, with `(n=k)` where k < n did). '' when no arm
  has two runs."""
  groups = arms(runs)
  if all(len(arm.runs) < 2 for arm in groups):
    return ''
  keys = _final_metrics(runs)
  return markdown_table(['arm', 'n', *keys], ['---'] + ['---:'] * (1 + len(keys)),
                        [[arm.label, str(len(arm.runs)),
                          *(mean_cell([final_value(run, key) for run in arm.runs])
                            for key in keys)] for arm in groups])


def mean_cell(values: Sequence[float | None]) -> str:
  """`mean ± SE` of the values that are not None (`mean_and_error`; the value alone where one is),
  with `(n=k)` where only k of them are; '-' where none is."""
  found = [v for v in values if v is not None]
  if not found:
    return '-'
  mean, error = mean_and_error(found)
  text = format_number(mean) + ('' if error is None else f' ± {format_number(error)}')
  return text + (f' (n={len(found)})' if len(found) < len(values) else '')


def eval_loss_keys(run: Run) -> list[str]:
  """`run`'s `eval/<task>/loss` keys of the training objective's tasks (names without a '/': not a
  task in another example format, nor a probe), whose mean is the run's eval loss."""
  return [f'eval/{name}/loss' for name in eval_names([run]) if '/' not in name]


def final_eval_loss(run: Run) -> float | None:
  """The mean of `run`'s final `eval_loss_keys` values; None when it logged none."""
  values = [final_value(run, key) for key in eval_loss_keys(run)]
  return statistics.fmean(values) if values else None


def final_loss_table(runs: Sequence[Run]) -> str:
  """A markdown table, one row per run that logged metrics, lowest `final_eval_loss` first (then
  lowest final training `loss`; a missing or nan value last): run, last step, final training loss,
  final eval loss. '' when no run logged metrics."""
  def last(value: float | None) -> tuple[bool, float]:
    return (value is None or math.isnan(value), 0.0 if value is None else value)

  rows = sorted(((run, final_value(run, 'loss'), final_eval_loss(run)) for run in runs
                 if run.metrics), key=lambda row: (*last(row[2]), *last(row[1])))
  if not rows:
    return ''
  return markdown_table(['run', 'step', 'loss', 'eval loss'], ['---', '---:', '---:', '---:'],
                        [[run.name, str(max(run.metrics)), format_number(loss),
                          format_number(eval_loss)] for run, loss, eval_loss in rows])


def code_label(run: Run) -> str:
  """' (code COMMIT)' with ', uncommitted changes in code.diff' when the run's checkout was dirty,
  from its config.json's code_version (research/provenance.py); '' when it records none."""
  version = run.config.get('code_version') or {}
  if 'git_commit' not in version:
    return ''
  dirty = ', uncommitted changes in code.diff' if version.get('git_dirty') else ''
  return f' (code {version["git_commit"][:12]}{dirty})'


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
  """The Jensen-Shannon divergence of distributions `p` and `q` in nats,
  JS(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2 and KL(p || m) = sum_i p_i ln(p_i /
  m_i) (a term with p_i = 0 is 0): 0 for equal distributions, ln 2 for disjoint ones."""
  m = [(a + b) / 2 for a, b in zip(p, q)]
  return sum(a * math.log(a / c) for x in (p, q) for a, c in zip(x, m) if a > 0) / 2


def expert_loads(run: Run) -> tuple[int, dict[str, list[list[float]]]] | None:
  """The expert loads of `run`'s last evaluation that logged them: (its step, task -> MoE layer m ->
  expert e -> `eval/<task>/moe/layer_<m>/expert_<e>`, the share of the task's assignments in layer
  m that went to expert e), tasks sorted; None when no evaluation logged them (a dense model)."""
  for step, values in reversed(run.metrics.items()):
    found = [(match[1], int(match[2]), int(match[3]), value) for key, value in values.items()
             if (match := _EXPERT_LOAD.match(key))]
    if found:
      layers, experts = (1 + max(entry[i] for entry in found) for i in (1, 2))
      loads = {task: [[0.0] * experts for _ in range(layers)]
               for task in sorted({task for task, _, _, _ in found})}
      for task, layer, expert, value in found:
        loads[task][layer][expert] = value
      return step, loads
  return None


def domain_divergence(loads: Mapping[str, Sequence[Sequence[float]]]) -> float | None:
  """How differently tasks use the experts: the `js_divergence` of two tasks' expert loads in an
  MoE layer (`expert_loads`' task -> layer -> expert), averaged over the pairs of tasks and the
  layers; 0 when all tasks route alike, ln 2 when no two share an expert (Qiu et al. 2025, arXiv
  2501.11873). None with fewer than two tasks."""
  pairs = list(itertools.combinations(loads.values(), 2))
  return statistics.fmean(js_divergence(p, q) for a, b in pairs
                          for p, q in zip(a, b)) if pairs else None


def routing_table(runs: Sequence[Run]) -> str:
  """For runs of mixture-of-experts models, a markdown table, one row per such run: final
  `moe/max_load` and `moe/dropped_fraction`, the final `eval/<task>/moe/load_entropy` of every
  task, and the `domain_divergence` of the last evaluation's expert loads. '' when no run routes."""
  routed = [run for run in runs if any(_MOE_METRIC.match(key) for values in run.metrics.values()
                                       for key in values)]
  if not routed:
    return ''
  keys = ['moe/max_load', 'moe/dropped_fraction',
          *(f'eval/{name}/moe/load_entropy' for name in eval_names(routed, 'moe/load_entropy'))]
  header = ['run', *keys, 'domain divergence']
  align = ['---'] + ['---:'] * (len(keys) + 1)
  rows = [[run.name, *(format_number(final_value(run, key)) for key in keys),
           format_number(domain_divergence(loads[1]) if (loads := expert_loads(run)) else None)]
          for run in routed]
  return markdown_table(header, align, rows)


def forgetting_table(runs: Sequence[Run]) -> str:
  """For runs with knowledge-injection probes (config data.probes, research/data/probes.py), a
  markdown table, one row per `arms` arm and probe: its exposures and last exposure step, and from
  `eval/probe/<name>/gap` (control loss minus probe loss) by research/forgetting.forgetting_fit,
  mean ± SE over the arm's seeds: the baseline gap before the first exposure, the gap the exposures
  added at the first evaluation after the last one and at the end, the share of it left at the end,
  the power law a t^-b fitted to its decay and the r2 of an exponential decay fitted beside it.
  '' when no run has probes."""
  probed = [run for run in runs if run.config.get('data', {}).get('probes')]
  rows = []
  for arm in arms(probed) if probed else []:
    config = arm.runs[0].config
    for name, spec in sorted(config['data']['probes'].items()):
      shown = exposures.exposure_steps(spec, name, config.get('train', {}).get('steps', 0))
      fits = [fit for run in arm.runs if (fit := forgetting.forgetting_fit(
          *series(run, f'eval/probe/{name}/gap'), shown))]
      if not fits:
        continue
      for fit in fits:
        fit['retained'] = fit['final'] / fit['after'] if fit['after'] > 0 else None
      rows.append([arm.label, str(len(fits)), name, str(len(shown)), str(shown[-1]),
                   *(mean_cell([fit[key] for fit in fits]) for key in (
                       'baseline', 'after', 'final', 'retained', 'b', 'r2', 'r2_exponential'))])
  if not rows:
    return ''
  header = ['arm', 'n', 'probe', 'exposures', 'last exposure', 'baseline gap', 'added after',
            'added at end', 'retained', 'exponent b', 'r2 (log-log)', 'r2 (exponential)']
  align = ['---', '---:', '---'] + ['---:'] * 9
  return markdown_table(header, align, rows)


def _upstream_tasks(run: Run) -> set[str] | None:
  """The tasks of the mixture of the run that `run` started from (its config's init.path), or
  None when `run` did not start from a run whose config.json can be read."""
  init = run.config.get('init', {}).get('path', '')
  if not init:
    return None
  try:  # a relative path: to where the report runs, as to training
    data = runs.read_config(init, f'init.path={init} of {run.path}')['data']
    return set(data['mixture']) | set(data.get('replay', {}).get('mixture', {}))
  except (errors.UserError, KeyError, TypeError, AttributeError):
    return None


def continual_table(runs: Sequence[Run]) -> str:
  """For runs that started from a checkpoint (config init.path), a markdown table: each
  evaluation's loss at the run's first evaluation (before its first step) and at its last, and the
  change. A task of the starting run's mixture is `upstream` (a rise is forgetting), any other
  `downstream` (a fall is adaptation), as in continual pretraining studies (Gupta et al. 2023,
  arXiv 2308.04014; Ibrahim et al. 2024, arXiv 2403.08763). '' when no run started from one."""
  rows = []
  for run in runs:
    if not run.config.get('init', {}).get('path'):
      continue
    upstream = _upstream_tasks(run)
    for name in eval_names([run]):
      values = series(run, f'eval/{name}/loss')[1]
      task = name.split('/')[0]
      role = '-' if upstream is None else 'upstream' if task in upstream else 'downstream'
      rows.append([run.name, name, role, format_number(values[0]), format_number(values[-1]),
                   f'{values[-1] - values[0]:+.4g}'])
  if not rows:
    return ''
  header = ['run', 'eval', 'role', 'loss at start', 'final loss', 'change']
  align = ['---'] * 3 + ['---:'] * 3
  return markdown_table(header, align, rows)


def initial_loss(run: Run) -> float:
  """ln(model.vocab_size): the loss of a uniform prediction over the model's outputs, which the
  initialisation's near-zero logits make."""
  return math.log(run.config.get('model', {}).get('vocab_size', 384))


def domain_sequence(run: Run) -> list[tuple[int, list[str]]] | None:
  """The stages of `run`'s mixture schedule (data.mixture, then data.stages) by start step: (start,
  the tasks it trains); None with fewer than 2 stages."""
  data, total = run.config.get('data', {}), run.config.get('train', {}).get('steps', 0)
  stages = [(0, data.get('mixture', {}))] + [
      (schedules.start_step(stage, f'data.stages.{name}', total), stage.get('mixture', {}))
      for name, stage in data.get('stages', {}).items()]
  if len(stages) < 2:
    return None
  return [(start, sorted(name for name, weight in mixture.items() if weight > 0))
          for start, mixture in sorted(stages, key=lambda stage: stage[0])]


def transfer(run: Run) -> dict[str, float] | None:
  """Backward and forward transfer over `run`'s domain sequence (`domain_sequence`; a stage's loss
  is the mean eval loss of its tasks): R[i, j] from the evaluation at the end of stage i (the next
  stage's start step, train.steps for the last), the FWT reference from the evaluation at step 0
  where the run logged one (a continual run), else `initial_loss` (research/analysis/forgetting.py).
  Returns {'bwt', 'fwt', 'final' (mean final loss over the domains)}; None without 2 stages or an
  evaluation of every domain at every stage's end."""
  stages = domain_sequence(run)
  if not stages:
    return None
  ends = [start for start, _ in stages[1:]] + [run.config['train']['steps']]
  keys = [[f'eval/{task}/loss' for task in tasks] for _, tasks in stages]

  def losses(step: int) -> list[float] | None:
    values = run.metrics.get(step, {})
    if not all(key in values for domain in keys for key in domain):
      return None
    return [statistics.fmean(values[key] for key in domain) for domain in keys]

  table = [losses(end) for end in ends]
  if not all(table):
    return None
  reference = losses(0) or [initial_loss(run)] * len(stages)
  return {'bwt': forgetting.backward_transfer(table),
          'fwt': forgetting.forward_transfer(table, reference),
          'final': statistics.fmean(table[-1])}


def transfer_table(runs: Sequence[Run]) -> str:
  """For runs trained on a sequence of domains (2 or more mixture stages) and evaluated at the end
  of each, a markdown table, one row per `arms` arm: the sequence, and mean ± SE over its seeds of
  `transfer`'s backward transfer, forward transfer and final loss (GEM's BWT, FWT and ACC, Lopez-Paz
  & Ranzato 2017, arXiv 1706.08840, on losses). '' when no run has them."""
  sequenced = [run for run in runs if run.config.get('data', {}).get('stages')]
  rows = []
  for arm in arms(sequenced) if sequenced else []:
    found = [result for run in arm.runs if (result := transfer(run))]
    if found:
      sequence = ' -> '.join('+'.join(tasks) for _, tasks in domain_sequence(arm.runs[0]))
      rows.append([arm.label, str(len(found)), sequence,
                   *(mean_cell([result[key] for result in found])
                     for key in ('bwt', 'fwt', 'final'))])
  if not rows:
    return ''
  header = ['arm', 'n', 'domains', 'BWT (loss; > 0 forgot)', 'FWT (loss; < 0 helped)',
            'final loss (mean over domains)']
  return markdown_table(header, ['---'] * 3 + ['---:'] * 3, rows)


def stability_gap_table(runs: Sequence[Run]) -> str:
  """For runs that started from a checkpoint (config init.path) and evaluated from step 0, a
  markdown table, one row per `arms` arm and evaluation metric (the eval metrics of `arm_table`):
  over its seeds, the mean ± SE of the metric at step 0 and of research/forgetting.stability_gap's
  dip depth (how much worse than at step 0 the worst evaluation is), the step of that worst
  evaluation and the steps to recover (back at the step-0 value), `(n=k)` where only k seeds have
  one: the stability gap of continual pretraining (Guo et al. 2024, arXiv 2406.14833). '' when no
  run started from a checkpoint and evaluated at step 0."""
  continual = [run for run in runs if run.config.get('init', {}).get('path')
               and any(key.startswith('eval/') for key in run.metrics.get(0, {}))]
  keys = [key for key in _final_metrics(continual) if key.startswith('eval/')]
  rows = []
  for arm in arms(continual) if continual else []:
    for key in keys:
      gaps = [forgetting.stability_gap(*series(run, key), not key.endswith('loss'))
              for run in arm.runs]
      gaps = [gap for gap in gaps if gap]
      if gaps:
        rows.append([arm.label, str(len(gaps)), key,
                     *(mean_cell([gap[field] for gap in gaps])
                       for field in ('start', 'depth', 'dip_step', 'recovered_step'))])
  if not rows:
    return ''
  header = ['arm', 'n', 'eval', 'at step 0', 'dip depth', 'dip step', 'steps to recover']
  return markdown_table(header, ['---'] * 3 + ['---:'] * 4, rows)


def learning_rate_curve(run: Run) -> tuple[list[float], list[float]]:
  """The learning rate of `run` at every step from 1 to its last logged step, from its config's
  schedule as research/train.py builds it (`schedules.make_run_schedule`; schedule keys the config
  lacks take research/defaults.py's defaults). Step s has the rate of the update that completed it,
  the schedule at s - 1, as metrics.jsonl's `learning_rate` has. Where the config does not give the
  schedule (it cannot be built, or a run started from a checkpoint with only one of
  init.step='keep' and init.schedule='continue' moves the schedule off the step by the
  checkpoint's step), the logged values instead: one every train.log_every steps."""

  logged = series(run, 'learning_rate')
  try:
    init = run.config.get('init', {})
    if init.get('path') and (init.get('step') == 'keep') != (init.get('schedule') == 'continue'):
      return logged
    schedule = schedules.make_run_schedule(
        ml_collections.ConfigDict({**defaults.get_config().schedule.to_dict(),
                                   **run.config['schedule']}),
        ml_collections.ConfigDict(run.config.get('phases', {})), run.config['train']['steps'])
    steps = np.arange(1, max(run.metrics, default=0) + 1)
    rates = np.asarray(schedule(steps - 1))
  except (errors.UserError, KeyError, TypeError, ValueError, AttributeError):
    return logged
  return steps.tolist(), rates.tolist()


def arm_curves(groups: Sequence[Arm], curve: Callable[[Run], tuple[list[float], list[float]]]):
  """(label, xs, ys, SEs) of every arm in `groups` from `curve` (a run's xs and ys): for an arm with
  one run that has data, its curve and SEs None; with several, at the xs all of them have, the mean
  of their ys and its standard error (`mean_and_error`), the label saying so. An arm whose runs
  have no data (or no x in common) is left out."""
  found = []
  for arm in groups:
    curves = [points for run in arm.runs if (points := curve(run))[0]]
    if len(curves) == 1:
      found.append((arm.label, *curves[0], None))
    elif curves:
      values = [dict(zip(xs, ys)) for xs, ys in curves]
      xs = sorted(set(values[0]).intersection(*values[1:]))
      means = [mean_and_error([v[x] for v in values]) for x in xs]
      if xs:
        found.append((f'{arm.label} (mean of {len(curves)} seeds ± SE)', xs,
                      [m for m, _ in means], [e for _, e in means]))
  return found


def line_figure(curves: Sequence[tuple], title: str, x: str, y: str,
                 log_x: bool = False) -> figure.Figure:
  """Every (label, xs, ys) curve on one pair of axes, the legend below them; with `log_x` on a log
  x axis, which leaves out the points at x <= 0 (the evaluation before the first step). A curve
  (label, xs, ys, SEs) with SEs not None (`arm_curves`) is a mean with a band of ± one standard
  error around it, shaded in its colour.

  Up to 10 curves take matplotlib's default colours, up to 20 the tab20 map; beyond that the line
  style changes too, so every curve stays distinguishable.
  """
  curves = [(label, xs, ys, rest[0] if rest else None) for label, xs, ys, *rest in curves]
  if log_x:
    def kept(xs, values):
      return None if values is None else [v for a, v in zip(xs, values) if a > 0]
    curves = [(label, kept(xs, xs), kept(xs, ys), kept(xs, ses)) for label, xs, ys, ses in curves]
  labels = [textwrap.fill(label, _LEGEND_WIDTH) for label, _, _, _ in curves]
  legend_lines = sum(label.count('\n') + 1 for label in labels)
  fig = figure.Figure(figsize=(9, 5 + 0.2 * legend_lines), layout='constrained')
  ax = fig.subplots()
  colors = matplotlib.colormaps['tab10' if len(curves) <= 10 else 'tab20'].colors
  for index, ((_, xs, ys, ses), label) in enumerate(zip(curves, labels)):
    color = colors[index % len(colors)]
    ax.plot(xs, ys, label=label, linewidth=1.5, markersize=3, color=color,
            linestyle=_LINE_STYLES[index // len(colors) % 3],
            marker='o' if len(xs) <= _MAX_MARKED_POINTS else None)
    if ses is not None:
      ax.fill_between(xs, [m - e for m, e in zip(ys, ses)], [m + e for m, e in zip(ys, ses)],
                      color=color, alpha=0.2, linewidth=0)
  if log_x:
    ax.set_xscale('log')
  ax.set_title(textwrap.fill(title, _TITLE_WIDTH), fontsize=13)  # a long title wraps, not clips
  ax.set_xlabel(x + (' (log scale)' if log_x else ''), fontsize=11)
  ax.set_ylabel(y, fontsize=11)
  ax.grid(alpha=0.3)
  fig.legend(loc='outside lower center', fontsize='small', ncols=1 if len(curves) > 6 else 2)
  return fig


def _expert_loads_figure(loads: Mapping[str, Sequence[Sequence[float]]],
                         title: str) -> figure.Figure:
  """`expert_loads`' task -> layer -> expert shares: a subplot per MoE layer (two a row), grouped
  bars with the expert on the x axis and a bar per task, the legend below."""
  tasks = list(loads)
  layers, experts = len(loads[tasks[0]]), len(loads[tasks[0]][0])
  columns = min(layers, 2)
  rows = math.ceil(layers / columns)
  fig = figure.Figure(figsize=(9, 1 + 3 * rows + 0.2 * len(tasks)), layout='constrained')
  axes = fig.subplots(rows, columns, squeeze=False, sharey=True).flatten()
  colors = matplotlib.colormaps['tab10' if len(tasks) <= 10 else 'tab20'].colors
  width = 0.8 / len(tasks)
  for layer, ax in enumerate(axes[:layers]):
    for index, task in enumerate(tasks):
      ax.bar([e - 0.4 + width * (index + 0.5) for e in range(experts)], loads[task][layer], width,
             label=task if layer == 0 else None, color=colors[index % len(colors)])
    ax.set_title(f'MoE layer {layer}', fontsize=11)
    ax.set_xlabel('expert', fontsize=11)
    ax.set_ylabel('share of assignments', fontsize=11)
    ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    ax.grid(axis='y', alpha=0.3)
  for ax in axes[layers:]:
    ax.set_visible(False)  # the empty cell of an odd number of layers
  fig.suptitle(textwrap.fill(title, _TITLE_WIDTH), fontsize=13)
  fig.legend(loc='outside lower center', fontsize='small', ncols=1 if len(tasks) > 6 else 2)
  return fig


def figures(runs: Sequence[Run], log_x: bool = False) -> Iterator[tuple[str, figure.Figure]]:
  """The plots of `runs`, (file name, figure) one at a time, in this order:

  train_loss_vs_step.png, train_loss_vs_tokens_seen.png, eval_<name>_loss_vs_step.png and
  eval_<name>_loss_vs_tokens_seen.png for every eval name (its slashes as '-'), the same two of
  `answer_accuracy` and eval_<name>_answer_accuracy_by_<key>_vs_step.png for every eval name that
  scores answers and every metadata key its accuracy is grouped by (difficulty, augmented), the same
  two of `span_accuracy` and of a knowledge probe's `gap`, learning_rate_vs_step.png (every step's
  rate from the run's schedule, `learning_rate_curve`), for mixture-of-experts runs
  moe_max_load_vs_step.png and eval_<task>_moe_load_entropy_vs_step.png for every task and
  monitor-<task>-pathway_<metric>_vs_step.png for every pathway metric logged, when some
  run's mixture changes, mixture_weights_vs_step.png, and <run>_expert_loads.png for every run
  with `expert_loads` (the per-expert metrics get no curves of their own). Every run is a curve on
  one pair of axes, labelled by `run_labels` (by a key: a curve per run and value of the key); a
  plot no run has data for is left out. Where some arm (`arms`) has several runs (seeds), the plots
  of metrics and learning rates (not the accuracy groups, mixture weights and expert loads) have a
  curve per arm instead: the mean of its seeds with a band of ± one standard error (`arm_curves`).
  `log_x` puts the training and eval loss plots on a log x axis (early steps spread out, late ones
  compressed). Matplotlib's Figure API renders with Agg
  and leaves pyplot's global state alone.
  """
  specs = [('train_loss_vs_step', 'Training loss vs step', 'step', 'loss'),
           ('train_loss_vs_tokens_seen', 'Training loss vs tokens seen', 'tokens_seen', 'loss'),
           *((f'eval_{_UNSAFE_IN_FILE_NAMES.sub("-", name)}_{metric}_vs_{x}',
              f'Eval {metric.replace("_", " ")} on {name} (eval/{name}/{metric}) vs '
              f'{x.replace("_", " ")}', x, f'eval/{name}/{metric}')
             for metric in ('loss', 'answer_accuracy', 'span_accuracy', 'gap')
             for name in eval_names(runs, metric)
             for x in ('step', 'tokens_seen')),
           ('learning_rate_vs_step', 'Learning rate vs step (the schedule of each run\'s config)',
            'step', 'learning_rate'),
           ('moe_max_load_vs_step', 'MoE largest expert load (moe/max_load, 1 = balanced) vs step',
            'step', 'moe/max_load'),
           *((f'eval_{_UNSAFE_IN_FILE_NAMES.sub("-", name)}_moe_load_entropy_vs_step',
              f'Expert load entropy on {name} (eval/{name}/moe/load_entropy, ln N_E = balanced) '
              'vs step', 'step', f'eval/{name}/moe/load_entropy')
             for name in eval_names(runs, 'moe/load_entropy')),
           *((f'{_UNSAFE_IN_FILE_NAMES.sub("-", key)}_vs_step',
              f'{"Expert pathways of training rows" if "pathway" in key else "Monitor"} ({key}) '
              'vs step', 'step', key)
             for key in sorted({key for run in runs for values in run.metrics.values()
                                for key in values if key.startswith('monitor/')}))]
  labels = run_labels(runs)
  groups = arms(runs)
  if all(len(arm.runs) < 2 for arm in groups):  # no seeds to average: a curve per run
    groups = [Arm(label, (run,)) for run, label in zip(runs, labels)]
  for stem, title, x, y in specs:
    curves = arm_curves(groups, lambda run, x=x, y=y: (
        learning_rate_curve(run) if y == 'learning_rate' else series(run, y, x)))
    if curves:
      yield f'{stem}.png', line_figure(curves, title, x, y,
                                        log_x and (y == 'loss' or y.endswith('/loss')))
  for name in eval_names(runs, 'answer_accuracy'):
    for key, curves in group_curves(runs, labels, name).items():
      stem = f'eval_{_UNSAFE_IN_FILE_NAMES.sub("-", name)}_answer_accuracy_by_{key}_vs_step'
      yield f'{stem}.png', line_figure(
          curves, f'Answer accuracy on {name} by {key} (eval/{name}/answer_accuracy/{key}_<value>)',
          'step', 'answer accuracy')
  mixture = mixture_curves(runs, labels)
  if mixture:
    yield 'mixture_weights_vs_step.png', line_figure(
        mixture, 'Mixture weights (data/<task>/weight) vs step', 'step', 'share of the batch')
  for run, step, loads in [(run, *found) for run in runs if (found := expert_loads(run))]:
    yield f'{_UNSAFE_IN_FILE_NAMES.sub("-", run.name)}_expert_loads.png', _expert_loads_figure(
        loads, f'Expert loads of {run.name} at step {step}: the share of each task\'s assignments '
        'in an MoE layer per expert (eval/<task>/moe/layer_<m>/expert_<e>)')


def plot_runs(runs: Sequence[Run], out_dir: str, log_x: bool = False) -> list[str]:
  """Writes the `figures` of `runs` (`log_x`: loss plots on a log x axis) into `out_dir` as PNGs
  and returns their paths."""
  paths = []
  for name, fig in figures(runs, log_x):
    paths.append(os.path.join(out_dir, name))
    fig.savefig(paths[-1], dpi=120)
  return paths


def group_curves(runs: Sequence[Run], labels: Sequence[str], name: str) -> dict[str, list]:
  """key -> (label: key value, steps, accuracies) of every series
  `eval/<name>/answer_accuracy/<key>_<value>` (the value follows the last '_'), by run, then by
  value (numeric values in numeric order); difficulty first, then the other keys sorted."""
  pattern = re.compile(rf'^eval/{re.escape(name)}/answer_accuracy/(.+)_([^_]+)$')
  groups = collections.defaultdict(list)
  for run, label in zip(runs, labels):
    found = {match.groups() for values in run.metrics.values() for key in values
             if (match := pattern.match(key))}
    for key, value in sorted(found, key=lambda kv: (kv[0], _number(kv[1]) is None,
                                                    _number(kv[1]) or 0, kv[1])):
      steps, accuracies = series(run, f'eval/{name}/answer_accuracy/{key}_{value}')
      groups[key].append((f'{label}: {key} {value}', steps, accuracies))
  return {key: groups[key] for key in sorted(groups, key=lambda key: (key != 'difficulty', key))}


def mixture_curves(runs: Sequence[Run], labels: Sequence[str]):
  """(label, steps, weights) of every `data/<task>/weight` series that changes during its run.

  Runs with the same schedule give one curve per task, labelled by the task; a task whose
  schedules differ gets a curve per schedule, labelled by the task and the runs that share it.
  """
  found = {}  # (task, steps, weights) -> labels of the runs with that curve
  for run, label in zip(runs, labels):
    tasks = sorted({match[1] for values in run.metrics.values() for key in values
                    if (match := _MIXTURE_WEIGHT.match(key))})
    for task in tasks:
      steps, weights = series(run, f'data/{task}/weight')
      if len(set(weights)) > 1:
        found.setdefault((task, tuple(steps), tuple(weights)), []).append(label)
  curves_per_task = collections.Counter(task for task, _, _ in found)
  return [(task if curves_per_task[task] == 1 else f'{task} ({"; ".join(run_labels)})',
           list(steps), list(weights))
          for (task, steps, weights), run_labels in found.items()]
