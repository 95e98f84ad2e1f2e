"""Where metrics go: DIR/metrics.jsonl, TensorBoard event files under DIR/tb/, and the terminal.

metrics.jsonl holds one JSON object per logged step with at least `step` (DESIGN.md contracts).
It is written through research/appendable.py: on a local disk each line is one `os.write` to a file
opened with O_APPEND, so a kill never leaves half a line behind the last complete one (a full disk
can still cut one short; launch.report skips a torn line). In a bucket lines are kept and written
at most every 30 seconds, each time as one new object under metrics.jsonl.parts/ (rewriting the
whole file instead would cost the square of the run); `appendable.read_text` reads either layout.
"""

import json
import math
import os
import sys
import time

import numpy as np

from research import appendable


def _plain(value):
  value = np.asarray(value).item() if hasattr(value, 'dtype') else value
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)
  return value


def _hparam(value):
  """A value TensorBoard's hparams plugin takes (bool, int, float, str); others as their repr."""
  value = np.asarray(value).item() if hasattr(value, 'dtype') else value
  return value if isinstance(value, (bool, int, float, str)) else repr(value)


class MetricsWriter:
  """Appends metric lines to metrics.jsonl and TensorBoard. Only the main process writes.

  `hparams` ({config key: value}, the run's command-line overrides) go to TensorBoard's hparams
  plugin once, when the writer opens (each start of a resumed run writes them again).
  """

  def __init__(self, workdir: str, enabled: bool = True, hparams: dict | None = None):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    self._metrics = appendable.Appender(os.path.join(workdir, 'metrics.jsonl'))
    from flax.metrics import tensorboard  # imports TensorFlow: only where it is needed
    self._tb = tensorboard.SummaryWriter(os.path.join(workdir, 'tb'))
    if hparams:
      self._tb.hparams({key: _hparam(value) for key, value in hparams.items()})
      self._tb.flush()

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    line = {'step': int(step), **{k: _plain(v) for k, v in metrics.items()}}
    self._metrics.write(json.dumps(line) + '\n')
    for name, value in line.items():
      if name != 'step' and isinstance(value, (int, float)):
        self._tb.scalar(name, value, step)

  def close(self) -> None:
    if self.enabled:
      self._metrics.close()
      self._tb.close()


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
  """A progress bar with ETA on an interactive terminal; plain lines (one per log) otherwise."""

  def __init__(self, total_steps: int, first_step: int, stream=sys.stderr, enabled: bool = True):
    self.total, self.first = total_steps, first_step
    self.stream, self.enabled = stream, enabled
    self.interactive = enabled and stream.isatty()
    self.start = time.monotonic()

  def update(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    done = step - self.first
    elapsed = time.monotonic() - self.start
    eta = elapsed / done * (self.total - step) if done > 0 else float('nan')
    shown = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items() if isinstance(v, (int, float)))
    text = (f'step {step}/{self.total} [{_duration(elapsed)}<'
            f'{_duration(eta) if math.isfinite(eta) else "?"}] {shown}')
    if self.interactive:
      width = 24
      filled = int(width * step / max(self.total, 1))
      self.stream.write(f'\r[{"#" * filled}{"." * (width - filled)}] {text}\033[K')
    else:
      self.stream.write(text + '\n')
    self.stream.flush()

  def message(self, text: str) -> None:
    """A line that stays above the bar (evaluation results, checkpoints)."""
    if self.enabled:
      self.stream.write(('\r\033[K' if self.interactive else '') + text + '\n')
      self.stream.flush()

  def close(self) -> None:
    if self.interactive:
      self.stream.write('\n')
