"""Trains an experiment; re-running the same command resumes from the latest checkpoint.

  python -m launch.train --config=experiments/quickstart.py --workdir=/tmp/quickstart \
      [--config.train.steps=2000 ...]

The `--config.KEY=VALUE` overrides are the run's hyperparameters in TensorBoard (DIR/tb, hparams).
"""

import os
import sys

from launch import cli  # first: sets TensorFlow's log level before research imports it

from absl import flags

from research import config as config_lib, train

_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and config.json.')
flags.mark_flags_as_required(['config', 'workdir'])


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  config = cli.CONFIG.value
  try:
    train.train(config, _WORKDIR.value, hparams=config_lib.command_line_overrides(sys.argv, config))
  except KeyboardInterrupt:
    # The second Ctrl-C (research/preemption.py): stop now. os._exit skips the interpreter's
    # shutdown, which would wait on an asynchronous save still being written; orbax commits a
    # checkpoint only once it is complete, so the last complete one is what a re-run resumes from.
    print(f'Interrupted. Re-run the same command to resume from the last complete checkpoint in '
          f'{_WORKDIR.value}.', file=sys.stderr, flush=True)
    os._exit(130)  # 128 + SIGINT, as a shell reports a Ctrl-C


if __name__ == '__main__':
  cli.run(main)
