"""seqio Tasks over the built-in corpora, vocabularies by name, and the train/validation split.

Tasks `stdlib_code` and `stdlib_prose` (see corpora.py) each have a `train` and a `validation`
split. A document is in validation when the md5 hash of its id falls in the lowest
`VALIDATION_FRACTION` of the hash range, so the split is the same on every machine and in every
process (Python's own `hash` is salted per process and is not used).

Importing this module registers the tasks; `register_tasks()` is idempotent.
"""

import functools
import hashlib
from collections.abc import Callable, Iterable

import numpy as np
import seqio
import tensorflow as tf

from research import errors
from research.data import corpora

VALIDATION_FRACTION = 0.05
SPLITS = ('train', 'validation')

_VOCABULARIES: dict[str, Callable[[], seqio.Vocabulary]] = {'byte': seqio.ByteVocabulary}
_CORPORA: dict[str, Callable[[], Iterable[tuple[str, str]]]] = {
    'stdlib_code': corpora.stdlib_code_documents,
    'stdlib_prose': corpora.stdlib_prose_documents,
}
_TASK_VOCABULARY = 'byte'


def get_vocabulary(name: str) -> seqio.Vocabulary:
  """The vocabulary called `name` (config key `data.vocabulary`)."""
  if name not in _VOCABULARIES:
    raise errors.UserError(f'data.vocabulary={name!r} is not a known vocabulary; set it to one of '
                           f'{sorted(_VOCABULARIES)}.')
  return _VOCABULARIES[name]()


def token_bytes(vocabulary: seqio.Vocabulary) -> np.ndarray:
  """int32 [vocab_size]: the number of UTF-8 bytes each token id stands for.

  Evaluation divides summed negative log-likelihood (nats) by `ln 2 * sum(token_bytes[targets])`
  to report bits per byte. For the byte vocabulary each byte token is 1 byte and the special ids
  (pad, EOS, UNK) and extra ids are 0.
  """
  if not isinstance(vocabulary, seqio.ByteVocabulary):
    raise NotImplementedError(f'No token byte table for {type(vocabulary).__name__}; add one in '
                              'research/data/tasks.py:token_bytes.')
  table = np.zeros(vocabulary.vocab_size, np.int32)
  first_byte_id = vocabulary.unk_id + 1
  table[first_byte_id:first_byte_id + 256] = 1
  return table


def is_validation(doc_id: str) -> bool:
  """True when document `doc_id` belongs to the validation split (stable md5 hash)."""
  digest = hashlib.md5(doc_id.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') < VALIDATION_FRACTION * 2**64


@functools.cache
def _documents(corpus: str) -> tuple[tuple[str, str], ...]:
  """All (doc_id, text) pairs of a corpus, read once per process (the prose corpus parses ASTs)."""
  return tuple(_CORPORA[corpus]())


def split_documents(corpus: str, split: str) -> list[tuple[str, str]]:
  """The (doc_id, text) pairs of `corpus` that fall in `split` ('train' or 'validation')."""
  if split not in SPLITS:
    raise errors.UserError(f'Unknown split {split!r} of task {corpus!r}; use one of '
                           f'{list(SPLITS)}.')
  want_validation = split == 'validation'
  return [(i, t) for i, t in _documents(corpus) if is_validation(i) == want_validation]


def _dataset_fn(corpus: str) -> Callable[..., tf.data.Dataset]:
  """A seqio dataset function yielding {'id', 'text'} for one split of `corpus`."""

  def dataset_fn(split: str, shuffle_files: bool) -> tf.data.Dataset:
    del shuffle_files  # Documents are always produced in corpus order; sampling is seeded later.
    documents = split_documents(corpus, split)
    return tf.data.Dataset.from_generator(
        lambda: ({'id': i, 'text': t} for i, t in documents),
        output_signature={'id': tf.TensorSpec([], tf.string),
                          'text': tf.TensorSpec([], tf.string)})

  return dataset_fn


def _add_task(name: str) -> None:
  seqio.TaskRegistry.add(
      name,
      source=seqio.FunctionDataSource(_dataset_fn(name), splits=SPLITS),
      output_features={
          'targets': seqio.Feature(get_vocabulary(_TASK_VOCABULARY), add_eos=True),
      },
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey, key_map={'id': 'id', 'targets': 'text'}),
          functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
          seqio.preprocessors.append_eos_after_trim,
      ])


def register_tasks() -> None:
  """Registers the built-in tasks with seqio; calling it again does nothing."""
  registered = set(seqio.TaskRegistry.names())
  for name in _CORPORA:
    if name not in registered:
      _add_task(name)


def check_task(name: str) -> None:
  """Fails with the registered names unless seqio Task `name` (a key of `data.mixture`) exists."""
  names = sorted(seqio.TaskRegistry.names())
  if name not in names:
    raise errors.UserError(f'data.mixture names an unknown task {name!r}; the registered tasks are '
                           f'{names}.')


def get_task(name: str) -> seqio.Task:
  """The registered seqio Task `name` (a key of config `data.mixture`)."""
  check_task(name)
  return seqio.TaskRegistry.get(name)


register_tasks()
