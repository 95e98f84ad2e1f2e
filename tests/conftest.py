"""Test set-up: 8 simulated CPU devices (set before jax is imported) and one data cache per session."""

import atexit
import os
import shutil
import tempfile

# XLA's CPU backend without LLVM's optimisations: the suite's models are tiny, so compiling them
# costs far more than running them (tests/test_model.py took 97 s instead of 165 s here).
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8'
                           ' --xla_backend_optimization_level=0').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
# One persistent compilation cache for the session, its subprocesses included: the suite compiles
# the same tiny models over and over (it halved tests/test_faults.py's time here).
_COMPILATION_CACHE = tempfile.mkdtemp(prefix='jax_compilation_cache_')
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', _COMPILATION_CACHE)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')

import pytest  # noqa: E402  (after XLA_FLAGS on purpose)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A document-store cache shared by the whole session, its xdist workers included (the stores
  are built once; workers that build one at the same time write the same bytes, each shard by an
  atomic rename, as the hosts of a job do: research/data/store.py)."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get('PYTEST_XDIST_WORKER'):
    root = root.parent  # the session's directory, above each worker's own
  path = root / 'data_cache'
  path.mkdir(exist_ok=True)
  return str(path)
