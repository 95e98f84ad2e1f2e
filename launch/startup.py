"""A quiet start: what TensorFlow (under seqio and tfds) and Beam print on every command, and which
concerns no user, stays off the console unless the command asks for verbose logs (`--verbosity=N`
or `-v N`).

That is TensorFlow's oneDNN and CUDA notices from C++ at import, the `cuInit` error of its first
GPU probe, absl's "before absl::InitializeLog()" warning, and Beam's warning that BigQuery's client
libraries are missing. `quiet()` (launch/cli.py calls it first) wraps the import of TensorFlow,
which stays lazy, in a redirect of file descriptor 2 to /dev/null, and keeps TensorFlow off GPUs
there: it only reads data, and the GPUs belong to JAX (as in t5x and MaxText).
"""

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator

_BEAM_NOTICE = 'apitools not found, and bigquery client libraries are not available'


def verbose(argv: list[str]) -> bool:
  """Whether the command line asks for absl's verbose logs."""
  return any(a.startswith('-') and a.lstrip('-').split('=')[0] in ('verbosity', 'v') for a in argv)


@contextlib.contextmanager
def _stderr_to_null() -> Iterator[None]:
  """File descriptor 2 (where C++ logs) points at /dev/null inside the block."""
  sys.stderr.flush()
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  os.close(null)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


class _QuietLoader(importlib.abc.Loader):
  """TensorFlow's own loader, run with stderr silenced; then TensorFlow's GPU probe, silenced."""

  def __init__(self, loader: importlib.abc.Loader):
    self.loader = loader

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module) -> None:
    with _stderr_to_null():
      self.loader.exec_module(module)
      module.config.set_visible_devices([], 'GPU')


class _QuietTensorFlow(importlib.abc.MetaPathFinder):
  """Finds `tensorflow` once, with `_QuietLoader` around its loader."""

  def find_spec(self, name, path=None, target=None):
    if name != 'tensorflow':
      return None
    sys.meta_path.remove(self)
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.loader is not None:
      spec.loader = _QuietLoader(spec.loader)
    return spec


def quiet(argv: list[str]) -> None:
  """Keeps the start-up notices off the console, unless `argv` asks for verbose logs."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # TensorFlow's later C++ logs: errors only
  if verbose(argv) or 'tensorflow' in sys.modules:
    return
  sys.meta_path.insert(0, _QuietTensorFlow())
  logging.getLogger().addFilter(lambda record: not record.getMessage().startswith(_BEAM_NOTICE))
