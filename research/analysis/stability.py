"""Learning-rate sensitivity of training runs swept over the peak learning rate (Wortsman et al.
2023, "Small-scale proxies for large-scale Transformer training instabilities", arXiv 2309.14322).

Runs that differ in `schedule.peak_lr` (and `seed`) and otherwise in the same config values form a
`Variant` (plain, qk-layernorm, z-loss, ...). A run's final loss is the mean of its final
evaluation losses over the training tasks (its final training loss where it has none). The paper's
LR sensitivity of a variant is E_lr[min(loss(lr), l0)] - min_lr loss(lr) over the swept learning
rates, l0 the loss at initialisation, which caps a diverged run: 0 when every learning rate reaches
the best loss, l0 minus the best when only one does. Here l0 is ln(model.vocab_size), the loss of
the uniform prediction that the initialisation's near-zero logits make.
"""

import dataclasses
import math
import statistics
from collections.abc import Iterator, Mapping, Sequence

from matplotlib import figure

from research.analysis import report

LR_KEY = 'schedule.peak_lr'
MONITORS = ('monitor/attention_logit_max', 'monitor/output_logit_mean',
            'monitor/output_logit_abs_max')  # research/train.make_train_step
_MIN_RATES = 3  # fewer swept learning rates make no sensitivity


def capped(loss: float | None, initial_loss: float) -> float:
  """min(loss, initial_loss), a diverged run's non-finite (or missing) loss counting as
  initial_loss."""
  return initial_loss if loss is None or not math.isfinite(loss) else min(loss, initial_loss)


def lr_sensitivity(losses: Mapping[float, Sequence[float | None]], initial_loss: float) -> float:
  """E_lr[min(loss(lr), l0)] - min_lr min(loss(lr), l0) (Wortsman et al. 2023): `losses` maps each
  learning rate to its runs' final losses (seeds), averaged after capping at `initial_loss` l0."""
  means = [statistics.fmean(capped(loss, initial_loss) for loss in values)
           for values in losses.values()]
  return statistics.fmean(means) - min(means)


def final_loss(run: report.Run) -> float | None:
  """The run's final evaluation loss over its training tasks, else its final training loss."""
  loss = report.final_eval_loss(run)
  return report.final_value(run, 'loss') if loss is None else loss


@dataclasses.dataclass(frozen=True)
class Variant:
  """The runs of one setting over the swept learning rates.

  Attributes:
    label: the swept config values other than the learning rate and seed, as the report writes them.
    runs: learning rate -> its runs (seeds), learning rates ascending.
  """
  label: str
  runs: dict[float, tuple[report.Run, ...]]

  def values(self, metric=final_loss) -> dict[float, list[float | None]]:
    """Learning rate -> `metric` of each of its runs."""
    return {lr: [metric(run) for run in runs] for lr, runs in self.runs.items()}

  def sensitivity(self) -> float:
    return lr_sensitivity(self.values(), report.initial_loss(next(iter(self.runs.values()))[0]))


def variants(runs: Sequence[report.Run]) -> list[Variant]:
  """`runs` grouped into `Variant`s in the order they first appear; [] unless they sweep the peak
  learning rate over at least 3 values."""
  swept = report.swept_values(runs)
  rates = {run.name: swept[run.name].get(LR_KEY) for run in runs}
  if len({lr for lr in rates.values() if lr is not None}) < _MIN_RATES:
    return []
  found = []
  for arm in report.arms(runs, ignore=(LR_KEY, 'seed')):
    by_lr: dict[float, list[report.Run]] = {}
    for run in arm.runs:
      by_lr.setdefault(rates[run.name], []).append(run)
    found.append((arm.label, {lr: tuple(by_lr[lr]) for lr in sorted(by_lr)}))
  return [Variant(label if len(found) > 1 else 'all runs', by_lr) for label, by_lr in found]


def sensitivity_table(runs: Sequence[report.Run]) -> str:
  """A markdown table, one row per `variants` variant: its label, LR sensitivity, the learning rate
  with the lowest mean capped final loss, then at every learning rate the final loss, mean ± SE
  over its seeds (the value alone for one seed). '' when the runs do not sweep the learning
  rate."""
  found = variants(runs)
  if not found:
    return ''
  rates = sorted({lr for variant in found for lr in variant.runs})
  rows = []
  for variant in found:
    losses = variant.values()
    means = {lr: statistics.fmean(capped(v, report.initial_loss(variant.runs[lr][0]))
                                  for v in values)
             for lr, values in losses.items()}
    rows.append([variant.label, report.format_number(variant.sensitivity()),
                 report.format_value(min(means, key=means.get)),
                 *(report.mean_cell(losses[lr]) if lr in losses else '-' for lr in rates)])
  return report.markdown_table(
      ['variant', 'LR sensitivity', 'best lr', *(f'lr={report.format_value(lr)}' for lr in rates)],
      ['---'] + ['---:'] * (2 + len(rates)), rows)


def _curves(found: Sequence[Variant], metric) -> list[tuple]:
  """(label, learning rates, means, SEs or None) of every variant with values of `metric`."""
  curves = []
  for variant in found:
    points = [(lr, report.mean_and_error(kept)) for lr, values in variant.values(metric).items()
              if (kept := [v for v in values if v is not None])]
    if points:
      errors = [e for _, (_, e) in points]
      curves.append((variant.label, [lr for lr, _ in points], [m for _, (m, _) in points],
                     None if all(e is None for e in errors) else [e or 0.0 for e in errors]))
  return curves


def figures(runs: Sequence[report.Run]) -> Iterator[tuple[str, figure.Figure]]:
  """final_loss_vs_learning_rate.png (each variant's mean final loss ± SE against the peak
  learning rate, log x, the initial loss l0 dashed) and, for every monitor of `MONITORS` the runs
  logged, <monitor>_vs_learning_rate.png (its final value, the mean of the last logged window; the
  maxima on a log y axis); nothing unless the runs sweep the learning rate."""
  found = variants(runs)
  if not found:
    return
  loss = report.line_figure(
      _curves(found, final_loss), 'Final loss vs peak learning rate (mean ± SE over seeds; '
      'dashed: the initial loss ln V, which caps diverged runs in the LR sensitivity)',
      'peak learning rate', 'final loss', log_x=True)
  loss.axes[0].axhline(report.initial_loss(runs[0]), color='gray', linestyle='--', linewidth=1)
  yield 'final_loss_vs_learning_rate.png', loss
  for key in MONITORS:
    curves = _curves(found, lambda run, key=key: report.final_value(run, key))
    if curves:
      fig = report.line_figure(curves, f'{key} at the last step (mean ± SE over seeds)',
                               'peak learning rate', key, log_x=True)
      if key != 'monitor/output_logit_mean':  # maxima, positive: growth over orders of magnitude
        fig.axes[0].set_yscale('log')
      yield f'{key.replace("/", "-")}_vs_learning_rate.png', fig
