"""Where metrics go: DIR/metrics.jsonl, TensorBoard event files under DIR/tb/, Weights & Biases
when `logging.wandb.project` is set (research/wandb_log.py), and the terminal.

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

import ml_collections
import numpy as np
from flax.metrics import tensorboard

from research import appendable, wandb_log


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
  """Appends metric lines to metrics.jsonl, TensorBoard and W&B. Only the main process writes.

  `hparams` ({config key: value}, the run's command-line overrides) go to TensorBoard's hparams
  plugin once, when the writer opens (each start of a resumed run writes them again). `config`,
  the run's resolved config, opens (or resumes) the W&B run its `logging.wandb` names, if any.
  """

  def __init__(self, workdir: str, enabled: bool = True, hparams: dict | None = None,
               config: ml_collections.ConfigDict | None = None):
    self.enabled = enabled
    self._tb = None
    if not enabled:
      return
    self._wandb = wandb_log.open_run(config, workdir) if config is not None else None
    self._metrics = appendable.Appender(os.path.join(workdir, 'metrics.jsonl'))
    self._tb = tensorboard.SummaryWriter(os.path.join(workdir, 'tb'))
    if hparams:
      self._tb.hparams({key: _hparam(value) for key, value in hparams.items()})
      self._tb.flush()

  def write(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    line = {'step': int(step), **{k: _plain(v) for k, v in metrics.items()}}
    self._metrics.write(json.dumps(line) + '\n')
    scalars = {name: value for name, value in line.items()
               if name != 'step' and isinstance(value, (int, float))}
    for name, value in scalars.items():
      self._tb.scalar(name, value, step)
    if self._wandb is not None:
      self._wandb.write(int(step), scalars)

  def close(self) -> None:
    if self.enabled:
      self._metrics.close()
      self._tb.close()
      if self._wandb is not None:
        self._wandb.close()


def _duration(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
  """A progress bar with ETA on an interactive terminal; plain lines (one per log) otherwise."""

  def __init__(self, total_steps: int, first_step: int, stream=None, enabled: bool = True):
    self.total, self.first = total_steps, first_step
    self.stream = sys.stderr if stream is None else stream  # now's: research/console.py swaps it
    self.enabled = enabled
    self.interactive = enabled and self.stream.isatty()
    self.start = time.monotonic()

  def update(self, step: int, metrics: dict) -> None:
    if not self.enabled:
      return
    shown = ' '.join(f'{k}={v:.4g}' for k, v in metrics.items() if isinstance(v, (int, float)))
    text = (f'step {step}/{self.total} [{_duration(time.monotonic() - self.start)}<'
            f'{self.eta(step)}] {shown}')
    if self.interactive:
      width = 24
      filled = int(width * step / max(self.total, 1))
      self.stream.write(f'\r[{"#" * filled}{"." * (width - filled)}] {text}\033[K')
    else:
      self.stream.write(text + '\n')
    self.stream.flush()

  def eta(self, step: int) -> str:
    """The time left after `step`, at this call's pace so far ('?' before its first step)."""
    done = step - self.first
    if done <= 0:
      return '?'
    return _duration((time.monotonic() - self.start) / done * (self.total - step))

  def message(self, text: str) -> None:
    """A line that stays above the bar (evaluation results, checkpoints)."""
    if self.enabled:
      self.stream.write(('\r\033[K' if self.interactive else '') + text + '\n')
      self.stream.flush()

  def close(self) -> None:
    if self.interactive:
      self.stream.write('\n')


def eval_summary(results: dict[str, float], tasks_shown: int = 8) -> str:
  """The console's line for an evaluation's `results` (research/evaluate.py's eval/<task>/...):
  the mean loss and bits per byte over the tasks of the training objective and each task's loss;
  every metric stays in metrics.jsonl and TensorBoard."""
  losses = {key.split('/')[1]: value for key, value in results.items()
            if key.startswith('eval/') and key.count('/') == 2 and key.endswith('/loss')}
  bits = [value for key, value in results.items()
          if key.startswith('eval/') and key.count('/') == 2 and key.endswith('/bits_per_byte')]
  if not losses:
    return f'{len(results)} metrics'
  tasks = ' '.join(f'{task}={loss:.4f}' for task, loss in list(losses.items())[:tasks_shown])
  more = f' +{len(losses) - tasks_shown} tasks' if len(losses) > tasks_shown else ''
  shown = f'loss={sum(losses.values()) / len(losses):.4f} ({tasks}{more})'
  if bits:
    shown += f' bits_per_byte={sum(bits) / len(bits):.4f}'
  return f'{shown}; {len(results)} metrics in metrics.jsonl'
