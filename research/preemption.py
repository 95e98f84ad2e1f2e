"""Preemption: SIGTERM (what TPU VMs send) or SIGINT ends training at a step boundary, saved.

The first signal asks the loop to stop after the current step; the loop then writes a checkpoint,
flushes its metrics and returns, so the command exits 0 and re-running it resumes with no step
lost. A second SIGINT stops at once: a KeyboardInterrupt, on which launch.train exits with status
130 without waiting for a save in flight; orbax commits checkpoints atomically, so the last
complete one stays intact. With several processes, JAX's preemption service (started by
jax.distributed) catches the notice and `reached_preemption_sync_point` makes every host stop at
the same step, as MaxText and t5x do; a Ctrl-C to one of them is passed on to that service as a
SIGTERM.
"""

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils


class StopSignal:
  """Catches SIGTERM and SIGINT while installed; `should_stop(step)` says when to stop."""

  def __init__(self):
    self.requested = False
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.requested and signum == signal.SIGINT:
      raise KeyboardInterrupt  # the second Ctrl-C: stop now
    self.requested = True
    if jax.process_count() > 1:  # a Ctrl-C: pass it on as the notice every process agrees on
      os.kill(os.getpid(), signal.SIGTERM)

  def __enter__(self) -> 'StopSignal':
    if threading.current_thread() is threading.main_thread():
      signals = (signal.SIGINT,) if jax.process_count() > 1 else (signal.SIGTERM, signal.SIGINT)
      self._previous = {s: signal.signal(s, self._handle) for s in signals}
    return self

  def __exit__(self, *exc_info) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def should_stop(self, step: int) -> bool:
    """True at the step where this process (all processes, when there are several) must stop."""
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(step)
    return self.requested
