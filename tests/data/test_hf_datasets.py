"""Hugging Face datasets as a task source (source='hf', research/data/sources.py), offline: a
directory save_to_disk wrote and local JSONL through data_files, streamed, read through the store
into training batches; and the one-line errors."""

import json
import os
import sys

os.environ['HF_DATASETS_OFFLINE'] = '1'  # read when datasets is imported: never reach the Hub
os.environ['HF_HUB_OFFLINE'] = '1'

import ml_collections  # noqa: E402  (after the environment on purpose)
import pytest  # noqa: E402

from research import errors  # noqa: E402
from research.data import pipeline, tasks, vocabularies  # noqa: E402
from research.data import store as store_lib  # noqa: E402

datasets = pytest.importorskip('datasets')


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
  """datasets prepares data_files in a cache inside tmp_path."""
  monkeypatch.setattr(datasets.config, 'HF_DATASETS_CACHE', str(tmp_path / 'hf_cache'))


def _saved(tmp_path) -> str:
  """A DatasetDict on disk: 40 train and 5 test examples with a text, a score and a list."""
  split = lambda name, count: datasets.Dataset.from_dict({
      'body': [f'{name} essay {i} about hf' for i in range(count)],
      'quality': list(range(count)), 'tags': [[i] for i in range(count)]})
  path = str(tmp_path / 'saved')
  datasets.DatasetDict({'train': split('train', 40), 'test': split('test', 5)}).save_to_disk(path)
  return path


def _jsonl(tmp_path, count: int) -> str:
  path = tmp_path / 'lines.jsonl'
  path.write_text(''.join(json.dumps({'text': f'json line {i}', 'n': i}) + '\n'
                          for i in range(count)), encoding='utf-8')
  return str(path)


def _texts(store: store_lib.DocumentStore) -> list[str]:
  byte = vocabularies.make_vocabulary('byte')
  return [byte.decode(store.document(i).tolist()) for i in range(store.num_documents)]


def test_hf_tasks_from_disk_and_streamed_data_files_reach_the_training_batches(data_config,
                                                                                tmp_path):
  saved, lines = _saved(tmp_path), _jsonl(tmp_path, 30)
  data_config.tasks = ml_collections.ConfigDict({
      'essays': {'source': 'hf', 'disk': saved, 'text_field': 'body', 'validation_split': 'test'},
      'lines': {'source': 'hf', 'name': 'json', 'data_files': lines, 'streaming': True},
  })
  data_config.mixture = {'essays': 0.5, 'lines': 0.5}
  data_config.seq_len = 64
  data = pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=10)
  load = lambda task, split: store_lib.load_store(task, split, 'byte', data_config.store_dir)
  essays = load('essays', 'train')
  assert _texts(essays) == [f'train essay {i} about hf' for i in range(40)]
  assert list(essays.doc_ids) == [f'{saved}/train/{i}' for i in range(40)]
  assert list(essays.metadata) == [{'quality': i} for i in range(40)]  # the list is dropped
  assert _texts(load('essays', 'validation')) == [f'test essay {i} about hf' for i in range(5)]
  # Without validation_split: the md5 holdout of the train split, every line in one of the two.
  held_out = {doc_id: text for split in tasks.SPLITS
              for doc_id, text in zip(load('lines', split).doc_ids, _texts(load('lines', split)))}
  assert held_out == {f'json/train/{i}': f'json line {i}' for i in range(30)}
  byte = vocabularies.make_vocabulary('byte')
  rows = [byte.decode([t for t in row.tolist() if t > 1]) for row in data.batch(0)['targets']]
  assert all('essay' in row or 'json line' in row for row in rows)
  assert any('essay' in row for row in rows) and any('json line' in row for row in rows)


def test_the_fingerprint_follows_the_data_files_and_not_streaming(tmp_path):
  spec = {'source': 'hf', 'name': 'json', 'data_files': _jsonl(tmp_path, 3)}
  before = tasks.spec_from_config('t', spec).fingerprint()
  assert tasks.spec_from_config('t', {**spec, 'streaming': True}).fingerprint() == before
  _jsonl(tmp_path, 4)
  assert tasks.spec_from_config('t', spec).fingerprint() != before
  assert tasks.spec_from_config('t', spec).source_bytes() == os.path.getsize(spec['data_files'])


@pytest.mark.parametrize('spec, match', [
    ({'name': 'x', 'disk': '/d'}, r'^data\.tasks\.t needs one of name .* or disk .*, not both or '
     r'neither\.$'),
    ({'name': 'x', 'text_key': 'body'}, r"^data\.tasks\.t has unknown keys \['text_key'\]"),
    ({'name': 'x', 'validation_split': 'test', 'validation_fraction': 0.1},
     r'^data\.tasks\.t sets both validation_split and validation_fraction'),
])
def test_bad_hf_specs_name_the_key(spec, match):
  with pytest.raises(errors.UserError, match=match):
    tasks.spec_from_config('t', {'source': 'hf', **spec})


def _first(spec: dict, split: str = 'train'):
  return next(tasks.spec_from_config('t', {'source': 'hf', **spec}).documents(split))


def test_unreadable_hf_datasets_are_one_line_naming_the_key(tmp_path):
  saved = _saved(tmp_path)
  with pytest.raises(errors.UserError, match=r"^data\.tasks\.t\.validation_split='dev' is not a "
                     rf"split of the dataset in {saved}; its splits are \['train', 'test'\]\.$"):
    _first({'disk': saved, 'validation_split': 'dev'}, 'validation')
  with pytest.raises(errors.UserError, match=r"^Example .*/train/0 has no string field 'text' "
                     r"\(its fields: \['body', 'quality', 'tags'\]\); set "
                     r"data\.tasks\.t\.text_field"):
    _first({'disk': saved})
  missing = str(tmp_path / 'missing')
  with pytest.raises(errors.UserError, match=rf"^data\.tasks\.t\.disk='{missing}' is not a "
                     'directory that datasets save_to_disk wrote'):
    _first({'disk': missing})
  with pytest.raises(errors.UserError, match=r"^datasets\.load_dataset could not load "
                     r"data\.tasks\.t\.name='someone/absent' \(config '', train_split 'train', "
                     r"data_files None\): Couldn't reach 'someone/absent' on the Hub"):
    _first({'name': 'someone/absent'})
  with pytest.raises(errors.UserError, match=r"^datasets\.load_dataset could not load "
                     r"data\.tasks\.t\.name='json' .*: Unable to find"):
    _first({'name': 'json', 'data_files': str(tmp_path / 'none.jsonl')})


def test_without_the_datasets_package_an_hf_task_says_pip_install_datasets(monkeypatch):
  monkeypatch.setitem(sys.modules, 'datasets', None)  # `import datasets` raises ImportError
  with pytest.raises(errors.UserError, match=r"^A data task with source='hf' needs the Hugging "
                     r'Face datasets package, which is not installed; pip install datasets\.$'):
    tasks.spec_from_config('t', {'source': 'hf', 'name': 'json'})
