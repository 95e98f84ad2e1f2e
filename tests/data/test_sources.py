"""Document sources: text and JSONL files, and a TFDS dataset built locally and offline."""

import json
import re

import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from research import errors
from research.data import sources

_TFDS_NAME = 'tiny_docs'
_TFDS_TEXTS = [f'Document {i}: {"naïve café " * (i % 4)}ends here.\n' for i in range(20)]


@pytest.fixture(scope='module')
def tfds_dir(tmp_path_factory) -> str:
  """A prepared 20-document TFDS dataset `tiny_docs` (train split) in a fresh directory."""
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  features = tfds.features.FeaturesDict({
      'content': tfds.features.Text(),
      'n': tf.int64,
      'source': tfds.features.Text(),
      'tags': tfds.features.Sequence(tf.int64),
  })
  examples = [(i, {'content': text, 'n': i, 'source': f'src{i % 3}', 'tags': [i, i + 1]})
              for i, text in enumerate(_TFDS_TEXTS)]
  tfds.dataset_builders.store_as_tfds_dataset(
      name=_TFDS_NAME, version='1.0.0', features=features, split_datasets={'train': examples},
      data_dir=data_dir, disable_shuffling=True)
  return data_dir


def test_tfds_round_trip_keeps_ids_texts_and_scalar_metadata(tfds_dir):
  documents = list(sources.tfds_documents(_TFDS_NAME, 'train', 'content', data_dir=tfds_dir))
  assert [d['id'] for d in documents] == [f'tiny_docs/train/{i}' for i in range(20)]
  assert [d['text'] for d in documents] == _TFDS_TEXTS
  assert documents[7] == {'id': 'tiny_docs/train/7', 'text': _TFDS_TEXTS[7], 'n': 7,
                          'source': 'src1'}  # the non-scalar 'tags' is dropped


def test_tfds_version_and_split_slices(tfds_dir):
  documents = list(sources.tfds_documents(f'{_TFDS_NAME}:1.0.0', 'train[:5]', 'content',
                                          data_dir=tfds_dir))
  assert [d['text'] for d in documents] == _TFDS_TEXTS[:5]
  assert documents[4]['id'] == 'tiny_docs:1.0.0/train[:5]/4'


@pytest.mark.parametrize('name', ['absent_docs', 'mnist', f'{_TFDS_NAME}:2.0.0'])
def test_tfds_unprepared_dataset_names_data_dir_and_how_to_prepare(tfds_dir, name):
  with pytest.raises(errors.UserError) as raised:
    sources.tfds_documents(name, 'train', 'text', data_dir=tfds_dir, task_name='web')
  message = str(raised.value)
  assert f'{name!r} is not prepared in {tfds_dir}' in message
  assert 'data.tasks.web.data_dir' in message and f'tfds build {name}' in message


def test_tfds_unprepared_dataset_names_the_resolved_default_data_dir(tmp_path, monkeypatch):
  monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path))
  with pytest.raises(errors.UserError,
                     match=rf"not prepared in {re.escape(str(tmp_path))} .*data_dir=''"):
    sources.tfds_documents('absent_docs', 'train', 'text')


def test_tfds_missing_text_key_names_the_features(tfds_dir):
  with pytest.raises(errors.UserError, match=r"data\.tasks\.web\.text_key='text' .*"
                     r"\['content', 'n', 'source', 'tags'\]"):
    sources.tfds_documents(_TFDS_NAME, 'train', 'text', data_dir=tfds_dir, task_name='web')


def test_tfds_non_string_text_key_is_refused(tfds_dir):
  with pytest.raises(errors.UserError, match=r"text_key='n' names a feature .* not a string"):
    sources.tfds_documents(_TFDS_NAME, 'train', 'n', data_dir=tfds_dir)


def test_tfds_missing_split_names_the_splits(tfds_dir):
  with pytest.raises(errors.UserError, match=r"split='train\+test' .*\['train'\]"):
    sources.tfds_documents(_TFDS_NAME, 'train+test', 'content', data_dir=tfds_dir)


def test_tfds_bad_name_is_named(tfds_dir):
  with pytest.raises(errors.UserError, match=r"data\.tasks\.web\.name='tiny docs!'"):
    sources.tfds_documents('tiny docs!', 'train', 'content', data_dir=tfds_dir, task_name='web')


def test_text_files_one_document_per_file_in_path_order(tmp_path):
  (tmp_path / 'b.txt').write_text('second\nfile', encoding='utf-8')
  (tmp_path / 'a.txt').write_text('first → file', encoding='utf-8')
  (tmp_path / 'skip.md').write_text('not matched', encoding='utf-8')
  documents = list(sources.file_documents(str(tmp_path / '*.txt'), 'text'))
  assert documents == [{'id': str(tmp_path / 'a.txt'), 'text': 'first → file'},
                       {'id': str(tmp_path / 'b.txt'), 'text': 'second\nfile'}]


def test_jsonl_lines_with_metadata(tmp_path):
  path = tmp_path / 'docs.jsonl'
  lines = [json.dumps({'body': 'héllo', 'url': 'u1', 'score': 0.5, 'n': 3, 'ok': True,
                       'tags': ['x'], 'meta': {'a': 1}, 'none': None, 'id': 'theirs'}),
           '',
           json.dumps({'body': 'world'})]
  path.write_text('\n'.join(lines) + '\n', encoding='utf-8')
  documents = list(sources.file_documents(str(path), 'jsonl', text_field='body'))
  assert documents == [
      {'id': f'{path}:1', 'text': 'héllo', 'url': 'u1', 'score': 0.5, 'n': 3, 'ok': True},
      {'id': f'{path}:3', 'text': 'world'},
  ]


def test_no_matching_file_names_the_pattern(tmp_path):
  pattern = str(tmp_path / '*.jsonl')
  with pytest.raises(errors.UserError,
                     match=rf"data\.tasks\.web\.pattern='{re.escape(pattern)}' matches no"):
    sources.file_documents(pattern, 'jsonl', task_name='web')


def test_unknown_format_names_the_key(tmp_path):
  with pytest.raises(errors.UserError, match=r"data\.tasks\.web\.format='csv' .*'text', 'jsonl'"):
    sources.file_documents(str(tmp_path / '*'), 'csv', task_name='web')


def test_non_utf8_text_file_names_file_and_byte_offset(tmp_path):
  path = tmp_path / 'latin1.txt'
  path.write_bytes('café'.encode('latin-1'))
  expected = rf'{re.escape(str(path))} is not valid UTF-8 at byte offset 3; re-encode'
  with pytest.raises(errors.UserError, match=expected):
    list(sources.file_documents(str(path), 'text'))


def test_non_utf8_jsonl_line_names_the_offset_in_the_file(tmp_path):
  path = tmp_path / 'docs.jsonl'
  first, second = b'{"text": "fine"}\n', b'{"text": "caf\xe9"}\n'
  path.write_bytes(first + second)
  offset = len(first) + second.index(b'\xe9')
  with pytest.raises(errors.UserError, match=rf'{re.escape(str(path))} is not valid UTF-8 at byte '
                     rf'offset {offset} \(line 2\);'):
    list(sources.file_documents(str(path), 'jsonl'))


@pytest.mark.parametrize('line, expected', [
    ('{"text": "unterminated', r'line 2 is not valid JSON'),
    ('["text"]', r'line 2 is a JSON list, not an object'),
    ('{"body": "no text field"}', r"line 2 has no string field 'text' \(its fields: \['body'\]\); "
                                  r'set data\.tasks\.web\.text_field'),
])
def test_bad_jsonl_line_names_file_and_line(tmp_path, line, expected):
  path = tmp_path / 'docs.jsonl'
  path.write_text('{"text": "fine"}\n' + line + '\n', encoding='utf-8')
  documents = sources.file_documents(str(path), 'jsonl', task_name='web')
  assert next(documents)['text'] == 'fine'
  with pytest.raises(errors.UserError, match=rf'{re.escape(str(path))} {expected}'):
    next(documents)
