"""The tokenized document store: contents, caching, atomic builds and cache-dir errors."""

import json
import os
import shutil

import numpy as np
import pytest

from research import errors
from research.data import corpora
from research.data import store as store_lib
from research.data import tasks, vocabularies

# The smallest split, for tests that must build a store of their own.
_SMALL = ('stdlib_prose', 'validation', 'byte')


@pytest.mark.parametrize('task', ['stdlib_code', 'stdlib_prose'])
@pytest.mark.parametrize('split', ['train', 'validation'])
def test_store_holds_every_document_with_eos(stores, task, split):
  store = stores[task, split]
  documents = tasks.split_documents(task, split)
  assert store.doc_ids == [doc_id for doc_id, _ in documents]
  # The byte vocabulary has one token per UTF-8 byte, plus EOS per document.
  lengths = [len(text.encode('utf-8')) + 1 for _, text in documents]
  assert store.manifest['num_tokens'] == sum(lengths) == store.tokens.size
  np.testing.assert_array_equal(np.diff(store.offsets), lengths)
  assert isinstance(store.tokens, np.memmap) and store.offsets.dtype == np.int64
  assert store.manifest == {
      'fingerprint': f'{task} python {corpora.PYTHON_VERSION}',
      'task': task, 'split': split, 'vocabulary': 'byte', 'vocab_size': 259,
      'num_documents': len(documents), 'num_tokens': sum(lengths), 'token_dtype': 'uint16',
      'python_version': corpora.PYTHON_VERSION, 'format_version': store_lib.FORMAT_VERSION}


def test_document_tokens_match_the_vocabulary(stores):
  store = stores['stdlib_code', 'train']
  index = store.doc_ids.index('json/decoder.py')
  text = dict(corpora.stdlib_code_documents())['json/decoder.py']
  vocabulary = vocabularies.make_vocabulary('byte')
  np.testing.assert_array_equal(store.document(index), vocabulary.encode(text) + [1])


def test_second_load_reads_the_cache(stores, data_dir, monkeypatch):
  del stores  # built already
  monkeypatch.setattr(store_lib, '_build', lambda *args: pytest.fail('rebuilt a cached store'))
  store = store_lib.load_store('stdlib_code', 'train', 'byte', data_dir)
  assert store.manifest['task'] == 'stdlib_code'


def test_half_written_build_dir_is_ignored(tmp_path):
  final_dir = store_lib.store_dir(*_SMALL, str(tmp_path))
  leftover = os.path.join(os.path.dirname(final_dir), '.building-killed')
  os.makedirs(leftover)
  with open(os.path.join(leftover, 'tokens.npy'), 'wb') as f:
    f.write(b'\x93NUMPY half')
  store = store_lib.load_store(*_SMALL, str(tmp_path))
  assert store.num_documents == len(tasks.split_documents('stdlib_prose', 'validation'))
  assert os.path.exists(leftover)  # never mistaken for the store


def test_failed_build_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
  def interrupted(*args):
    raise KeyboardInterrupt
  monkeypatch.setattr(store_lib, '_publish', interrupted)
  with pytest.raises(KeyboardInterrupt):
    store_lib.load_store(*_SMALL, str(tmp_path))
  final_dir = store_lib.store_dir(*_SMALL, str(tmp_path))
  assert not os.path.exists(final_dir)
  assert os.listdir(os.path.dirname(final_dir)) == []
  monkeypatch.undo()
  assert store_lib.load_store(*_SMALL, str(tmp_path)).num_documents > 0


def test_losing_the_rename_race_keeps_the_winner(tmp_path):
  winner = store_lib.load_store(*_SMALL, str(tmp_path))
  final_dir = store_lib.store_dir(*_SMALL, str(tmp_path))
  loser = final_dir + '.loser'
  shutil.copytree(final_dir, loser)
  store_lib._publish(loser, final_dir)
  assert not os.path.exists(loser)
  assert store_lib.load_store(*_SMALL, str(tmp_path)).doc_ids == winner.doc_ids


def test_cache_dir_that_is_a_file_names_the_config_key(tmp_path):
  path = tmp_path / 'not_a_dir'
  path.write_text('')
  with pytest.raises(errors.UserError, match=r'data\.cache_dir'):
    store_lib.load_store(*_SMALL, str(path))


def test_empty_cache_dir_means_env_or_home(monkeypatch, tmp_path):
  monkeypatch.setenv('RESEARCH_DATA_DIR', str(tmp_path))
  assert store_lib.resolve_cache_dir('') == str(tmp_path)
  monkeypatch.delenv('RESEARCH_DATA_DIR')
  assert store_lib.resolve_cache_dir('') == os.path.expanduser('~/.cache/research/data')


def test_store_of_other_format_version_is_rebuilt(tmp_path):
  store_lib.load_store(*_SMALL, str(tmp_path))
  manifest_path = os.path.join(store_lib.store_dir(*_SMALL, str(tmp_path)), 'manifest.json')
  with open(manifest_path) as f:
    manifest = json.load(f)
  with open(manifest_path, 'w') as f:
    json.dump({**manifest, 'format_version': 0}, f)
  assert store_lib.load_store(*_SMALL, str(tmp_path)).manifest == manifest


@pytest.mark.parametrize('damage', ['truncate_tokens', 'garble_manifest', 'drop_offsets'])
def test_damaged_store_is_rebuilt_not_used(tmp_path, damage):
  good = store_lib.load_store(*_SMALL, str(tmp_path))
  expected = np.array(good.tokens)
  directory = store_lib.store_dir(*_SMALL, str(tmp_path))
  if damage == 'truncate_tokens':
    with open(os.path.join(directory, 'tokens.npy'), 'r+b') as f:
      f.truncate(1000)
  elif damage == 'garble_manifest':
    with open(os.path.join(directory, 'manifest.json'), 'w') as f:
      f.write('{"task": ')
  else:
    os.remove(os.path.join(directory, 'offsets.npy'))
  rebuilt = store_lib.load_store(*_SMALL, str(tmp_path))
  np.testing.assert_array_equal(rebuilt.tokens, expected)
  assert rebuilt.doc_ids == good.doc_ids
