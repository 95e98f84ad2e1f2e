"""Test set-up: 8 simulated CPU devices (set before jax is imported) and one data cache per session."""

import os

os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

import pytest  # noqa: E402  (after XLA_FLAGS on purpose)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A document-store cache shared by the whole session (the stores are built once)."""
  return str(tmp_path_factory.mktemp('data_cache'))
