"""Trains an experiment; re-running the same command resumes from the latest checkpoint.

  python -m launch.train --config=experiments/quickstart.py --workdir=/tmp/quickstart \
      [--config.train.steps=2000 ...]

The `--config.KEY=VALUE` overrides are the run's hyperparameters in TensorBoard (DIR/tb, hparams).
"""

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
  train.train(config, _WORKDIR.value, hparams=config_lib.command_line_overrides(sys.argv, config))


if __name__ == '__main__':
  cli.run(main)
