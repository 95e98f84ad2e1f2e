"""Extrapolates a run's learning curve after each evaluation, and says where early stopping by it
would have stopped.

  python -m launch.learning_curve --run=DIR [--metric=KEY] [--horizon=STEP] [--threshold=0.01] \
      [--min_points=4]

DIR is a launch.train workdir, local or gs://, finished or still training (its config.json and
metrics.jsonl are read). KEY is a metric of metrics.jsonl, by default the run's evaluation loss:
the mean of its eval/<task>/loss over the training tasks, at the steps that logged them all. The
horizon defaults to the run's train.steps. After each evaluation from the --min_points-th on,
research/analysis/learning_curve.py fits L(t) = E + A / t^gamma to the evaluations so far and
prints the fit, its loss predicted at the horizon and the gain it promises from there; then the
first evaluation that promised less than --threshold nats (where training would have stopped) and,
when the run logged KEY at the horizon, the loss it reached there.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import statistics

from absl import flags

from research import errors
from research.analysis import learning_curve, report

_RUN = flags.DEFINE_string('run', None, 'The launch.train workdir whose curve is extrapolated.')
# --metric is launch.scaling_fit's and launch.skill_graph's too: allow_override lets the commands
# load in one process (tests).
_METRIC = flags.DEFINE_string('metric', None, 'The metrics.jsonl key (default: the mean of the '
                              'eval/<task>/loss over the training tasks).', allow_override=True)
_HORIZON = flags.DEFINE_integer('horizon', None, 'The step the curve is extrapolated to (default: '
                                'the run\'s train.steps).')
_THRESHOLD = flags.DEFINE_float('threshold', 0.01, 'Stop at the first evaluation whose curve '
                                'promises less than this gain (nats) by the horizon.')
_MIN_POINTS = flags.DEFINE_integer('min_points', learning_curve.MIN_POINTS, 'The evaluations the '
                                   'first fit sees (at least 4).')
flags.mark_flags_as_required(['run'])


def curve(run: report.Run, metric: str | None) -> tuple[str, list[float], list[float]]:
  """(its name, the steps > 0, the values) of `metric` in `run`; None: the mean of the run's
  eval/<task>/loss over its training tasks, at the steps that logged every one."""
  if metric:
    steps, values = report.series(run, metric)
    name = metric
  else:
    keys = report.eval_loss_keys(run)
    logged = [(step, [values[key] for key in keys]) for step, values in run.metrics.items()
              if keys and all(key in values for key in keys)]
    steps, values = [step for step, _ in logged], [statistics.fmean(v) for _, v in logged]
    name = f'the eval loss (the mean of {", ".join(keys)})'
  kept = [(step, value) for step, value in zip(steps, values) if step > 0]
  if not kept:
    raise errors.UserError(f'{run.path} logged no {metric or "eval/<task>/loss"} after step 0; '
                           'pass --metric=KEY, a metric in its metrics.jsonl.')
  return name, [step for step, _ in kept], [value for _, value in kept]


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  run = report.load_run(_RUN.value)
  horizon = _HORIZON.value or run.config.get('train', {}).get('steps')
  if not horizon or horizon <= 0:
    raise errors.UserError(f'--horizon={horizon} must be a step > 0 (default: the run\'s '
                           'train.steps).')
  if _MIN_POINTS.value < learning_curve.MIN_POINTS:
    raise errors.UserError(f'--min_points={_MIN_POINTS.value} must be at least '
                           f'{learning_curve.MIN_POINTS}: the curve has 3 constants.')
  name, steps, values = curve(run, _METRIC.value)
  reached = dict(zip(steps, values)).get(horizon)
  before = [(step, value) for step, value in zip(steps, values) if step < horizon]
  found = learning_curve.extrapolations([step for step, _ in before],
                                        [value for _, value in before], horizon, _MIN_POINTS.value)
  print(f'Learning curve of {name} in {run.path}, extrapolated to step {horizon}:')
  for e in found:
    print(f'  after step {e.step} ({e.points} evaluations): L(t) = {e.fit.E:.4g} + '
          f'{e.fit.A:.4g} / t^{e.fit.gamma:.3g}; at step {horizon} {e.predicted:.4f}, a gain of '
          f'{e.gain:.4f}')
  stop = learning_curve.stopping_point(found, _THRESHOLD.value)
  print(f'Stop at step {stop.step}: the curve promises {stop.gain:.4f} < --threshold='
        f'{_THRESHOLD.value:g} by step {horizon}.' if stop else
        f'No stop: every fit promises at least --threshold={_THRESHOLD.value:g} by step {horizon}.')
  if reached is not None:
    print(f'The run reached {reached:.4f} at step {horizon}.')


if __name__ == '__main__':
  cli.run(main)
