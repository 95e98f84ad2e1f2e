"""The document store: contents, Beam builds (the same bytes with any number of workers), stopped
and resumed builds, refusals of large stores, and damaged or mismatched stores."""

import json
import os

import ml_collections
import numpy as np
import pytest

from research import errors
from research.data import build, corpora, records
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
  assert store.tokens.dtype == np.uint16 and store.offsets.dtype == np.int64
  shards = store.manifest.pop('shards')
  assert store.manifest == {
      'fingerprint': f'{task} python {corpora.PYTHON_VERSION}',
      'task': task, 'split': split, 'vocabulary': 'byte', 'vocab_size': 259,
      'num_documents': len(documents), 'num_tokens': sum(lengths), 'token_dtype': 'uint16',
      'python_version': corpora.PYTHON_VERSION, 'format_version': records.FORMAT_VERSION}
  store.manifest['shards'] = shards
  assert [s['file'] for s in shards] == ['documents-00000-of-00001.array_record']
  assert shards[0]['num_documents'] == len(documents)


def test_document_tokens_match_the_vocabulary(stores):
  store = stores['stdlib_code', 'train']
  index = store.doc_ids.index('json/decoder.py')
  text = dict(corpora.stdlib_code_documents())['json/decoder.py']
  vocabulary = vocabularies.make_vocabulary('byte')
  np.testing.assert_array_equal(store.document(index), vocabulary.encode(text) + [1])


def test_second_load_reads_the_store(stores, data_dir, monkeypatch):
  del stores  # built already
  monkeypatch.setattr(build, 'build', lambda *args: pytest.fail('rebuilt a built store'))
  store = store_lib.load_store('stdlib_code', 'train', 'byte', data_dir)
  assert store.manifest['task'] == 'stdlib_code'


def _notes(tmp_path, count=120, files=4) -> str:
  """A files task `notes` of `files` JSONL files (one part each when PART_BYTES is small)."""
  for f in range(files):
    with open(tmp_path / f'notes{f}.jsonl', 'w', encoding='utf-8') as out:
      for i in range(count // files):
        out.write(json.dumps({'text': f'note {f}-{i} ' + 'x' * (i % 7), 'rank': i}) + '\n')
  tasks.register(tasks.spec_from_config('notes', ml_collections.ConfigDict(
      {'source': 'files', 'pattern': str(tmp_path / 'notes*.jsonl'), 'format': 'jsonl'})))
  return 'notes'


def _files(directory: str) -> dict[str, bytes]:
  files = {}
  for root, _, names in os.walk(directory):
    for name in names:
      with open(os.path.join(root, name), 'rb') as f:
        files[os.path.relpath(os.path.join(root, name), directory)] = f.read()
  return files


def test_one_and_two_workers_build_the_same_bytes(tmp_path, small_parts):
  (tmp_path / 'source').mkdir()
  task = _notes(tmp_path / 'source')
  requests = [(task, 'train'), (task, 'validation')]
  for workers in (1, 2):
    build.build(requests, 'byte', str(tmp_path / f'workers{workers}'),
                build.pipeline_options('DirectRunner', num_workers=workers))
  one, two = _files(str(tmp_path / 'workers1')), _files(str(tmp_path / 'workers2'))
  assert one == two
  assert sum(name.endswith('.array_record') for name in one) == 8  # 4 parts x 2 splits
  store = store_lib.load_store(task, 'train', 'byte', str(tmp_path / 'workers2'))
  assert store.doc_ids == [doc_id for doc_id, _ in tasks.split_documents(task, 'train')]
  assert store.metadata[0]['rank'] == 0 and len(store.manifest['shards']) == 4


def test_stopped_build_leaves_no_manifest_and_a_rerun_keeps_complete_shards(
    tmp_path, small_parts, monkeypatch):
  task = _notes(tmp_path)
  root = str(tmp_path / 'stores')
  build.build([(task, 'train')], 'byte', root)
  directory = records.store_path(task, 'train', 'byte', root)
  expected = _files(directory)
  # A build stopped while it wrote shard 2: no manifest, no summary of shard 2, no stray file.
  os.remove(os.path.join(directory, records.MANIFEST))
  os.remove(os.path.join(directory, records.summary_of(records.shard_name(2, 4))))
  os.remove(os.path.join(directory, records.shard_name(2, 4)))
  kept = {name: os.stat(os.path.join(directory, name)).st_mtime_ns for name in os.listdir(directory)}
  written = []
  monkeypatch.setattr(build, 'ShardWriter', _recording(build.ShardWriter, written))
  store = store_lib.load_store(task, 'train', 'byte', root)  # small: built on first use
  assert written == [records.shard_name(2, 4)]  # only the missing shard was built again
  assert {n: os.stat(os.path.join(directory, n)).st_mtime_ns for n in kept} == kept
  assert _files(directory) == expected and store.num_documents > 0


def test_a_prefix_reads_only_the_first_shards_that_hold_what_is_asked(tmp_path, small_parts):
  task, root = _notes(tmp_path), str(tmp_path / 'stores')
  whole = store_lib.load_store(task, 'train', 'byte', root)
  first = whole.manifest['shards'][0]
  one = store_lib.load_prefix(task, 'train', 'byte', root, tokens=first['num_tokens'])
  two = store_lib.load_prefix(task, 'train', 'byte', root, documents=first['num_documents'] + 1)
  every = store_lib.load_prefix(task, 'train', 'byte', root, tokens=10**12)
  assert [len(s.manifest['shards']) for s in (one, two, every)] == [1, 2, 4]
  assert one.num_documents == one.manifest['num_documents'] == first['num_documents']
  assert two.doc_ids == whole.doc_ids[:two.num_documents]
  np.testing.assert_array_equal(every.tokens, whole.tokens)


def _recording(writer_class, written: list):
  class Recording(writer_class):
    def __init__(self, directory, name, count_key):
      written.append(name)
      super().__init__(directory, name, count_key)
  return Recording


def test_a_failing_source_leaves_nothing_that_looks_complete(tmp_path, small_parts):
  task = _notes(tmp_path)
  with open(tmp_path / 'notes2.jsonl', 'a', encoding='utf-8') as f:
    f.write('{"text": \n')  # a bad line in part 2
  root = str(tmp_path / 'stores')
  with pytest.raises(errors.UserError, match=r'notes2\.jsonl line 31 is not valid JSON'):
    store_lib.load_store(task, 'train', 'byte', root)
  directory = records.store_path(task, 'train', 'byte', root)
  names = os.listdir(directory)
  assert records.MANIFEST not in names and records.shard_name(2, 4) not in names
  assert not [n for n in names if n.startswith('.')]  # no staging file left behind


@pytest.mark.parametrize('damage, message', [
    ('truncate', r'has \d+ bytes, its manifest says \d+'),
    ('garble', r'cannot be read'),
    ('remove', r'is missing'),
])
def test_damaged_shard_is_named_with_the_command_that_rebuilds_it(tmp_path, damage, message):
  store_lib.load_store(*_SMALL, str(tmp_path))
  directory = store_lib.store_path(*_SMALL, str(tmp_path))
  shard = os.path.join(directory, records.shard_name(0, 1))
  before = _files(directory)
  if damage == 'truncate':
    with open(shard, 'r+b') as f:
      f.truncate(1000)
  elif damage == 'garble':
    with open(shard, 'r+b') as f:
      f.seek(2000)
      f.write(b'\xff' * 64)
  else:
    os.remove(shard)
  with pytest.raises(errors.UserError, match=r'Shard documents-00000-of-00001\.array_record of '
                     rf'the store .*{message}.*launch\.build_data'):
    store_lib.load_store(*_SMALL, str(tmp_path))
  # launch.build_data's rerun finds the damage (size or sha256) and rebuilds just that shard.
  build.build([_SMALL[:2]], 'byte', str(tmp_path))
  assert _files(directory) == before


def _edit_manifest(tmp_path, **changes) -> dict:
  """Builds the small store, then rewrites its manifest with `changes`; returns the original."""
  store_lib.load_store(*_SMALL, str(tmp_path))
  path = os.path.join(store_lib.store_path(*_SMALL, str(tmp_path)), records.MANIFEST)
  with open(path) as f:
    manifest = json.load(f)
  with open(path, 'w') as f:
    json.dump({**manifest, **changes}, f)
  return manifest


def test_manifest_of_another_vocabulary_is_named(tmp_path):
  _edit_manifest(tmp_path, vocabulary='spm:/m.model')
  with pytest.raises(errors.UserError, match=r"built for vocabulary 'spm:/m.model', but the "
                     r"experiment reads vocabulary 'byte'"):
    store_lib.load_store(*_SMALL, str(tmp_path))


def test_training_never_builds_a_large_store(tmp_path, monkeypatch):
  task = _notes(tmp_path)
  monkeypatch.setattr(store_lib, 'AUTO_BUILD_BYTES', 100)
  monkeypatch.setattr('sys.argv', ['launch.train', '--config=experiments/x.py', '--workdir=/w',
                                   '--config.data.store_dir=/s'])
  with pytest.raises(errors.UserError, match=r'stores of notes \(train\) are not built .* run '
                     r'`python -m launch\.build_data --config=experiments/x\.py '
                     r'--config\.data\.store_dir=/s` first'):
    store_lib.load_store(task, 'train', 'byte', str(tmp_path / 'stores'))
  assert not os.path.exists(tmp_path / 'stores')


def test_an_older_format_store_is_built_again(tmp_path):
  manifest = _edit_manifest(tmp_path, format_version=2)
  assert store_lib.load_store(*_SMALL, str(tmp_path)).manifest == manifest


def test_a_bucket_without_credentials_says_how_to_authenticate():
  with pytest.raises(errors.UserError, match=r'Cannot read gs://no-such-bucket/.*gcloud auth '
                     'application-default login'):
    records.read_json('gs://no-such-bucket/stores/manifest.json')


def test_store_dir_that_is_a_file_names_the_config_key(tmp_path):
  path = tmp_path / 'not_a_dir'
  path.write_text('')
  with pytest.raises(errors.UserError, match=r'data\.store_dir'):
    store_lib.load_store(*_SMALL, str(path))


def test_empty_store_dir_means_env_or_home(monkeypatch, tmp_path):
  monkeypatch.setenv('RESEARCH_DATA_DIR', str(tmp_path))
  assert store_lib.resolve_store_root('') == str(tmp_path)
  monkeypatch.delenv('RESEARCH_DATA_DIR')
  assert store_lib.resolve_store_root('') == os.path.expanduser('~/.cache/research/data')
  assert store_lib.resolve_store_root('gs://bucket/stores/') == 'gs://bucket/stores'
