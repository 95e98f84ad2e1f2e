"""The canary-order test: was a checkpoint trained in a given data order?

  python -m launch.order_test --checkpoint=DIR [--order_of=RUN] [--steps=A:B] \
      [--permutations=1000] [--seed=0] [--out=F.json] [--store_dir=D]

DIR is a launch.train workdir (its latest checkpoint) or one checkpoint WORKDIR/checkpoints/<step>
of a decoder. RUN is a launch.train workdir (default: DIR's own run) whose config.json gives the
training order tested: the examples (packed rows) of its steps [A, B) (0 <= A < B <= its
train.steps), which research/data/pipeline.py rebuilds from the config alone; its data.store_dir
holds the document stores unless --store_dir is given. The default range is the last epoch's worth
of steps before DIR's step (the steps that read as many examples as the run's tasks have packed
rows), from step 0 when the checkpoint has seen fewer: the examples the model saw last, if it was
trained in that order. A small model forgets within a few steps, so a range of its last few steps
can show the relation where a whole run's does not; steps from DIR's step on are examples the
model has not seen.

research/analysis/canary.py computes DIR's mean token loss on each example, the Spearman correlation
between the examples' steps and their losses, and the one-sided permutation-test p-value of a
negative correlation (examples of later steps have lower loss, as in a model trained in that
order): --permutations random permutations seeded by --seed. The p-value is exact when the order is
a random shuffle; a warning names each setting of RUN that makes the examples change with their
step otherwise (research/canary.order_confounds). It prints the number of examples, rho and p;
--out gets JSON (written atomically): checkpoint and step, order_of and its seed, steps [A, B],
examples, spearman, p_value, permutations, seed, alternative, confounds (the warnings), and the
per-example `positions` (step * train.batch_size + row) and `losses` (nats per token).
"""

import json
import math
import os
import re

from launch import cli  # first: sets TensorFlow's log level before research imports it

import jax
from absl import flags

from research import errors, finished, runs
from research.analysis import canary

# --checkpoint, --seed, --out and --store_dir are other commands' too (launch.membership, ...) with
# the same types and defaults: allow_override lets the commands load in one process (tests).
_CHECKPOINT = cli.define_paths('checkpoint', None, 'The workdir or checkpoint directory to test.',
                               allow_override=True)
_ORDER_OF = flags.DEFINE_string('order_of', None, 'The launch.train workdir whose training order '
                                'is tested (default: --checkpoint\'s run).')
_STEPS = flags.DEFINE_string('steps', None, 'A:B, the training steps [A, B) whose examples are '
                             'tested (default: the last epoch\'s worth before the checkpoint\'s '
                             'step).')
_PERMUTATIONS = flags.DEFINE_integer('permutations', 1000, 'Random permutations of the examples\' '
                                     'steps in the permutation test.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the permutations.', allow_override=True)
_OUT = flags.DEFINE_string('out', None, 'The JSON file the result is written to.',
                           allow_override=True)
_STORE_DIR = flags.DEFINE_string('store_dir', None, 'Document-store cache (default: the order '
                                 'run\'s data.store_dir).', allow_override=True)
_MIN_EXAMPLES = 3


def _check_flags() -> tuple[str, tuple[int, int] | None]:
  """The checkpoint path and --steps as (A, B) (None: the default), after checking every flag that
  needs no file."""
  checkpoint = cli.one_checkpoint(_CHECKPOINT.value, 'test')
  if _PERMUTATIONS.value < 1:
    raise errors.UserError(f'--permutations={_PERMUTATIONS.value} must be at least 1 (1000 '
                           'resolves p-values down to 0.001).')
  if _SEED.value < 0:
    raise errors.UserError(f'--seed={_SEED.value} must be a non-negative integer.')
  steps = None
  if _STEPS.value is not None:
    match = re.fullmatch(r'\s*(\d+)\s*:\s*(\d+)\s*', _STEPS.value)
    if not match or int(match[1]) >= int(match[2]):
      raise errors.UserError(f'--steps={_STEPS.value} must be A:B, the training steps [A, B) with '
                             '0 <= A < B, e.g. --steps=900:1000.')
    steps = int(match[1]), int(match[2])
  if _OUT.value and os.path.isdir(_OUT.value):
    raise errors.UserError(f'--out={_OUT.value} is a directory; give the path of the JSON file to '
                           'write.')
  return checkpoint, steps


def _order_config(config):
  """The config of the run whose order is tested and its workdir, checked to share --checkpoint's
  vocabulary."""
  if _ORDER_OF.value is None:
    return config, runs.workdir(_CHECKPOINT.value[0])
  order = finished.checkpoint_config(_ORDER_OF.value, '--order_of')
  for key in ('vocabulary', 'extra_ids'):
    if order.data[key] != config.data[key]:
      raise errors.UserError(f'--order_of={_ORDER_OF.value} has data.{key}={order.data[key]!r} but '
                             f'--checkpoint={_CHECKPOINT.value[0]} has {config.data[key]!r}; the '
                             'model must read the order\'s examples in its own vocabulary.')
  return order, runs.workdir(_ORDER_OF.value)


def _range_end(steps, order, checkpoint_step: int) -> int:
  """B of --steps, checked against the order run's train.steps, or by default the checkpoint's
  step (at most train.steps)."""
  total = order.train.steps
  if steps is not None:
    if steps[1] > total:
      raise errors.UserError(f'--steps={_STEPS.value} ends past the order run\'s train.steps='
                             f'{total}; give a range within [0, {total}].')
    return steps[1]
  if checkpoint_step == 0:
    raise errors.UserError(f'--checkpoint={_CHECKPOINT.value[0]} is at step 0 and has seen no '
                           'training example; give --steps=A:B.')
  return min(checkpoint_step, total)


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  path, steps = _check_flags()
  config = finished.checkpoint_config(path, '--checkpoint')
  order, order_dir = _order_config(config)
  if _STORE_DIR.value is not None:
    order.data.store_dir = _STORE_DIR.value
  last = _range_end(steps, order, runs.find_checkpoint(path, f'--checkpoint={path}')[1])
  data = canary.training_data(order, order_dir, last)
  confounds = canary.order_confounds(order)
  first = steps[0] if steps else max(0, last - canary.epoch_steps(data, order.train.batch_size))
  count = (last - first) * order.train.batch_size
  if count < _MIN_EXAMPLES:
    raise errors.UserError(f'--steps={first}:{last} holds {count} examples; the test needs at '
                           f'least {_MIN_EXAMPLES}: widen the range.')
  loaded = finished.load_checkpoint(path, config)
  examples = canary.example_losses(loaded, data, first, last)
  rho = canary.spearman(examples.steps, examples.losses)
  p_value = canary.permutation_p_value(examples.steps, examples.losses, _PERMUTATIONS.value,
                                           _SEED.value)
  order_name = _ORDER_OF.value or 'its own run'
  print(f'Canary-order test of {path} (step {loaded.step}) against the training order of '
        f'{order_name} (seed {order.seed}), steps {first}:{last}:')
  for confound in confounds:
    print(f'warning: {confound} The p-value assumes a random order.')
  print(f'n={len(examples.losses)} examples, Spearman rho={rho:.4f}, p={p_value:.4g} (one-sided, '
        f'rho < 0: later steps\' examples have lower loss; {_PERMUTATIONS.value} permutations)')
  if _OUT.value and jax.process_index() == 0:
    result = {'checkpoint': path, 'step': loaded.step, 'order_of': _ORDER_OF.value or path,
              'order_seed': order.seed, 'steps': [first, last], 'examples': len(examples.losses),
              'spearman': rho if math.isfinite(rho) else None, 'p_value': p_value,
              'permutations': _PERMUTATIONS.value, 'seed': _SEED.value, 'alternative': 'less',
              'confounds': confounds, 'positions': examples.positions.tolist(),
              'losses': examples.losses.tolist()}
    cli.write_atomically(_OUT.value, json.dumps(result, indent=2) + '\n')
    print(f'Wrote {_OUT.value}.')


if __name__ == '__main__':
  cli.run(main)
