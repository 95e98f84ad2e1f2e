"""A run's console, kept: what `train` prints also goes to WORKDIR/train.log, and a console that
goes away (`... | tee log` whose reader died at a Ctrl-C: EPIPE) never stops the run or its stop
checkpoint.

`kept(workdir)` swaps sys.stdout and sys.stderr for `Tee`s while a run trains. Where the console
already is WORKDIR/train.log (the sweep runner sends each point's output there), the run's lines
are not written twice. Output written below Python (C++ logging) reaches the console only.
"""

import contextlib
import os
import re
import sys
from collections.abc import Iterator

from research import appendable

LOG_FILE = 'train.log'
_CONTROL = re.compile(r'\033\[[0-9;]*[A-Za-z]')  # the progress bar's terminal control sequences


class Tee:
  """A text stream writing to `stream` (until it fails: a closed pipe, a lost terminal) and, by
  whole lines, to `log` (an appendable.Appender, or None)."""

  def __init__(self, stream, log: appendable.Appender | None):
    self.stream, self.log, self.pending = stream, log, ''
    self.lost = False  # the console failed once; later writes go to the log only

  def write(self, text: str) -> int:
    if not self.lost:
      try:
        self.stream.write(text)
      except OSError:
        self.lost = True
    if self.log is not None:
      lines = (self.pending + text).split('\n')
      self.pending = lines.pop()
      self._log(lines)
    return len(text)

  def _log(self, lines: list[str]) -> None:
    """Appends whole `lines` to the log; a progress bar redraws its line after '\r', and the log
    keeps the last drawing."""
    if lines:
      self.log.write(''.join(_CONTROL.sub('', line).rsplit('\r', 1)[-1] + '\n' for line in lines))

  def close_log(self) -> None:
    """Appends the line cut short, if any (the log itself is closed by its owner)."""
    if self.log is not None and self.pending:
      self._log([self.pending])
      self.pending = ''

  def flush(self) -> None:
    if not self.lost:
      try:
        self.stream.flush()
      except OSError:
        self.lost = True

  def isatty(self) -> bool:
    return not self.lost and self.stream.isatty()

  def fileno(self) -> int:
    return self.stream.fileno()

  def __getattr__(self, name):  # encoding, errors, ...: the console's
    return getattr(self.stream, name)


def _is_file(stream, path: str) -> bool:
  """Whether `stream` writes to the local file `path`."""
  try:
    return os.path.exists(path) and os.path.samestat(os.fstat(stream.fileno()), os.stat(path))
  except (OSError, ValueError, AttributeError):  # no descriptor (a notebook's stream, StringIO)
    return False


def _silence(stream) -> None:
  """Points the descriptor of `stream`, a console that failed, at /dev/null, so that the
  interpreter's last flush at exit does not fail (exit status 120) on it."""
  with contextlib.suppress(OSError, ValueError, AttributeError):
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, stream.fileno())
    os.close(null)


@contextlib.contextmanager
def kept(workdir: str, enabled: bool = True) -> Iterator[None]:
  """sys.stdout and sys.stderr also written to WORKDIR/train.log (a local directory or a bucket)
  and safe to lose, inside the block; `enabled` False (processes other than the first) only makes
  them safe to lose."""
  path = os.path.join(workdir, LOG_FILE)
  log = None
  if enabled and not any(_is_file(s, path) for s in (sys.stdout, sys.stderr)):
    log = appendable.Appender(path)
  streams = sys.stdout, sys.stderr
  sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)
  try:
    yield
  finally:
    tees = sys.stdout, sys.stderr
    for tee in tees:
      tee.flush()
      tee.close_log()
    sys.stdout, sys.stderr = streams
    for tee, stream in zip(tees, streams):
      if tee.lost:
        _silence(stream)
    if log is not None:
      log.close()

