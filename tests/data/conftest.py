"""Fixtures for the data tests: stores and packed rows built once per session in `data_dir`."""

import ml_collections
import pytest

from experiments import base
from research.data import corpora
from research.data import packing
from research.data import store as store_lib
from research.data import tasks


@pytest.fixture
def data_config(data_dir) -> ml_collections.ConfigDict:
  """A fresh, editable copy of the default `config.data`, caching in the session's `data_dir`."""
  config = ml_collections.ConfigDict(base.get_config().data.to_dict())
  config.store_dir = data_dir
  return config


@pytest.fixture(scope='session')
def stores(data_dir) -> dict[tuple[str, str], store_lib.DocumentStore]:
  """Every (task, split) store of the built-in tasks, byte vocabulary."""
  return {(task, split): store_lib.load_store(task, split, 'byte', data_dir)
          for task in ('stdlib_code', 'stdlib_prose') for split in ('train', 'validation')}


@pytest.fixture(scope='session')
def code_packed(stores) -> dict:
  """The code corpus's train split packed into rows of 256 tokens."""
  return packing.pack_documents(stores['stdlib_code', 'train'], 256, seed=0)


@pytest.fixture(scope='session')
def prose_documents() -> list[tuple[str, str]]:
  return list(corpora.stdlib_prose_documents())


@pytest.fixture
def small_parts(monkeypatch):
  monkeypatch.setattr(tasks, 'PART_BYTES', 1)  # every file a part of its own, so a shard
