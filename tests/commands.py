"""Running a launch command's main in-process, as the command-line tests do."""

import contextlib
import io
from collections.abc import Callable

from absl import flags
from absl.testing import flagsaver


def run_main(main: Callable[[list[str]], None], **flag_values) -> str:
  """Calls `main` with these flag values set; returns what it printed. Every flag is restored
  afterwards.

  The values are assigned directly rather than through flagsaver's keyword arguments. Those run
  every validator of a flag, including another command's "required" mark on a flag of the same
  name (--config, --task, --out), which a None here would fail.
  """
  flags.FLAGS.mark_as_parsed()
  printed = io.StringIO()
  with flagsaver.flagsaver(), contextlib.redirect_stdout(printed):
    for name, value in flag_values.items():
      flags.FLAGS[name].value = value
    main(['command'])
  return printed.getvalue()
