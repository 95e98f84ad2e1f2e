"""Trains an experiment; re-running the same command resumes from the latest checkpoint.

  python -m launch.train --config=experiments/quickstart.py --workdir=/tmp/quickstart \
      [--config.train.steps=2000 ...]
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow (under seqio) is quiet

from absl import app, flags, logging
from ml_collections import config_flags

from research import errors, train

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment file (experiments/NAME.py[:ARG]).',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and config.json.')
flags.mark_flags_as_required(['config', 'workdir'])


def parse_flags(argv: list[str]) -> list[str]:
  """absl flag parsing, with an unknown `--config.KEY` reported as one line naming the key."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:  # ConfigDict's "no such key", raised by an override
    cause = error.args[0] if error.args and isinstance(error.args[0], KeyError) else error
    missing, _, hint = str(cause.args[0]).partition('\n')  # "'key'" and "Did you mean ...?"
    overrides = [a[2:].split('=')[0] for a in argv if a.startswith('--config.')]
    named = [o for o in overrides if missing.strip("'") in o.split('.')[1:]] or overrides
    sys.exit(f'error: unknown config key {named[0][len("config."):]!r} in --{named[0]}. '
             f'{hint + " " if hint else ""}experiments/base.py lists every key.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO; --verbosity=0 shows it
  try:
    train.train(_CONFIG.value, _WORKDIR.value)
  except errors.UserError as error:  # the message names the key and the fix: no traceback
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
