"""Averages, adds or subtracts checkpoints of one model: weight averaging and task arithmetic.

  python -m launch.merge --checkpoint=A,B[,C...] [--weights=0.5,0.5] --out=DIR
  python -m launch.merge --task_vector=FT,BASE [--scale=1] [--onto=TARGET] --out=DIR

The first form writes sum_i w_i * A_i, the weights any real numbers (default: the uniform average,
a model soup); `--checkpoint=BASE,FT,BASE --weights=1,1,-1` is BASE + (FT - BASE). The second is its
shorthand for a task vector: TARGET + s * (FT - BASE), TARGET defaulting to BASE (so --scale=0.5
interpolates between BASE and FT). Every checkpoint is a launch.train workdir (its latest
checkpoint), one checkpoint WORKDIR/checkpoints/<step>, or a launch.convert output, local or gs://;
all must have the same parameter tree and shapes. DIR (new or empty, local) gets the first
checkpoint's config.json, with a `merge` record of the inputs, their steps and the weights, and the
merged parameters as checkpoints/0, in the stored dtype (summed in float32): launch.generate,
launch.score and init.path read it as any checkpoint. It appears only when complete.
research/merge.py has the arithmetic and the papers.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import math

from absl import flags

from research import errors, merge

# --checkpoint is launch.generate's and launch.score's too, with the same type and default, and
# --out other commands': allow_override lets the commands load in one process (tests).
_CHECKPOINT = cli.define_paths('checkpoint', None, 'The checkpoints to sum (workdirs, checkpoint '
                               'directories or launch.convert outputs).', allow_override=True)
_WEIGHTS = flags.DEFINE_list('weights', None, 'One real weight per --checkpoint (default: '
                             '1/N each, the average).')
_TASK_VECTOR = cli.define_paths('task_vector', None, 'FT,BASE: add --scale * (FT - BASE) to '
                                '--onto, instead of --checkpoint.')
_SCALE = flags.DEFINE_float('scale', 1.0, 'The factor of the --task_vector.')
_ONTO = flags.DEFINE_string('onto', None, 'The checkpoint the --task_vector is added to (default: '
                            'its BASE).')
_OUT = flags.DEFINE_string('out', None, 'The directory to write (new or empty).',
                           allow_override=True)


def _weights(count: int) -> list[float]:
  """The --weights, one finite real per checkpoint; 1/count each without the flag."""
  if _WEIGHTS.value is None:
    return [1 / count] * count
  try:
    weights = [float(w) for w in _WEIGHTS.value]
  except ValueError:
    weights = []
  if len(weights) != count or not all(math.isfinite(w) for w in weights):
    raise errors.UserError(f'--weights={",".join(_WEIGHTS.value)}: give one finite number per '
                           f'--checkpoint ({count} of them).')
  return weights


def _inputs() -> tuple[list[str], list[float]]:
  """(the checkpoints, their weights) that the flags ask to sum."""
  if _TASK_VECTOR.value is None:
    if not _CHECKPOINT.value or _ONTO.value is not None:
      raise errors.UserError('Give --checkpoint=A,B[,...] (with --weights) or '
                             '--task_vector=FT,BASE (with --scale and --onto).')
    return _CHECKPOINT.value, _weights(len(_CHECKPOINT.value))
  if _CHECKPOINT.value or _WEIGHTS.value is not None:
    raise errors.UserError('--task_vector=FT,BASE replaces --checkpoint and --weights; give one or '
                           'the other.')
  if len(_TASK_VECTOR.value) != 2 or not math.isfinite(_SCALE.value):
    raise errors.UserError(f'--task_vector={",".join(_TASK_VECTOR.value)} --scale={_SCALE.value}: '
                           'give two checkpoints FT,BASE and a finite scale.')
  fine_tuned, base = _TASK_VECTOR.value
  return [_ONTO.value or base, fine_tuned, base], [1.0, _SCALE.value, -_SCALE.value]


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  if not _OUT.value:
    raise errors.UserError('Give --out=DIR: the new directory the merged checkpoint goes to.')
  paths, weights = _inputs()
  notes = merge.merge(paths, weights, _OUT.value)
  print(f'Wrote {_OUT.value}: ' + ' '.join(f'{w:+g} * {p}' for p, w in zip(paths, weights)))
  for note in notes:
    print(f'note: {note}')


if __name__ == '__main__':
  cli.run(main)
