"""seqio task registration, vocabularies and the md5 train/validation split."""

import importlib

import numpy as np
import pytest
import seqio

from research import errors
from research.data import tasks

# md5-based split of these synthetic ids, fixed so that a change to the split shows up here.
_GOLDEN_VALIDATION = ['doc111', 'doc174', 'doc29', 'doc52', 'doc90']


@pytest.mark.parametrize('corpus', ['stdlib_code', 'stdlib_prose'])
def test_split_is_disjoint_complete_and_about_five_percent(corpus):
  train = [doc_id for doc_id, _ in tasks.split_documents(corpus, 'train')]
  validation = [doc_id for doc_id, _ in tasks.split_documents(corpus, 'validation')]
  assert not set(train) & set(validation)
  assert train == [doc_id for doc_id, _ in tasks.split_documents(corpus, 'train')]
  num_docs = len(train) + len(validation)
  assert 0.03 <= len(validation) / num_docs <= 0.08


def test_split_does_not_depend_on_the_process():
  ids = [f'doc{i}' for i in range(200)]
  assert sorted(i for i in ids if tasks.is_validation(i)) == sorted(_GOLDEN_VALIDATION)


def test_registration_is_idempotent():
  tasks.register_tasks()
  importlib.reload(tasks)
  tasks.register_tasks()
  assert {'stdlib_code', 'stdlib_prose'} <= set(seqio.TaskRegistry.names())


def test_unknown_task_names_config_key_and_registered_tasks():
  with pytest.raises(errors.UserError, match=r'data\.mixture.*stdlib_code.*stdlib_prose'):
    tasks.get_task('stdlib_cod')


def test_unknown_vocabulary_names_config_key():
  with pytest.raises(errors.UserError, match=r"data\.vocabulary='spm'.*\['byte'\]"):
    tasks.get_vocabulary('spm')


def test_task_pipeline_tokenizes_with_eos():
  dataset = tasks.get_task('stdlib_code').get_dataset(
      split='validation', shuffle=False, sequence_length=None)
  example = next(dataset.as_numpy_iterator())
  doc_id, text = tasks.split_documents('stdlib_code', 'validation')[0]
  assert example['id'].decode() == doc_id
  vocabulary = tasks.get_vocabulary('byte')
  np.testing.assert_array_equal(example['targets'],
                                vocabulary.encode(text) + [vocabulary.eos_id])


def test_token_bytes_counts_utf8_bytes():
  vocabulary = tasks.get_vocabulary('byte')
  table = tasks.token_bytes(vocabulary)
  assert table.shape == (vocabulary.vocab_size,)
  assert table[[vocabulary.pad_id, vocabulary.eos_id, vocabulary.unk_id]].tolist() == [0, 0, 0]
  text = 'naïve → bytes'
  ids = np.array(vocabulary.encode(text) + [vocabulary.eos_id])
  assert table[ids].sum() == len(text.encode('utf-8'))
