"""The tokenized document store: one task split, tokenized once, addressable by document index.

A store lives in `<cache_dir>/<task>/<split>/<vocabulary>/<fingerprint hash>/`:

    tokens.npy     1-D uint16 (int32 for vocabularies over 65536 ids): every document's tokens,
                   EOS included, concatenated in corpus order; opened as a memory map
    offsets.npy    int64 [num_documents + 1]: document i is tokens[offsets[i]:offsets[i + 1]]
    doc_ids.json   the documents' ids, in store order
    metadata.jsonl each document's metadata (skill, difficulty, ...), one JSON object a line
    manifest.json  task, split, vocabulary, vocab_size, counts, python_version, the task's
                   fingerprint, format_version

It is built by iterating the seqio Task (no shuffling, no length limit) into a temporary sibling
directory that is renamed into place only once every file is written, so a build killed midway
never leaves a directory that looks complete, and a store whose files are damaged or of an older
format is detected when opened and built again, never used. Two processes building at once both succeed: the one
that loses the rename race discards its copy and opens the winner's.
"""

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from research import errors
from research.data import corpora
from research.data import tasks, vocabularies

FORMAT_VERSION = 2
_TOKENS, _OFFSETS = 'tokens.npy', 'offsets.npy'
_DOC_IDS, _MANIFEST, _METADATA = 'doc_ids.json', 'manifest.json', 'metadata.jsonl'


@dataclasses.dataclass(frozen=True)
class DocumentStore:
  """The tokens of one (task, split, vocabulary), with per-document offsets."""
  tokens: np.ndarray  # [num_tokens] uint16 or int32, memory-mapped
  offsets: np.ndarray  # [num_documents + 1] int64
  doc_ids: list[str]
  manifest: dict[str, Any]
  directory: str
  # Per-token loss weights of a store derived by an objective (research/objectives/documents.py);
  # None: every token weighs 1.
  weights: np.ndarray | None = None

  @functools.cached_property
  def metadata(self) -> list[dict[str, Any]]:
    """Each document's metadata (skill, difficulty, ...), read on first use."""
    with open(os.path.join(self.directory, _METADATA), encoding='utf-8') as f:
      return [json.loads(line) for line in f]

  @property
  def num_documents(self) -> int:
    return len(self.doc_ids)

  def document(self, index: int) -> np.ndarray:
    """The tokens of document `index`, EOS included."""
    return self.tokens[self.offsets[index]:self.offsets[index + 1]]


def resolve_cache_dir(cache_dir: str) -> str:
  """`cache_dir`, or when it is '' then $RESEARCH_DATA_DIR or ~/.cache/research/data."""
  if not cache_dir:
    cache_dir = os.environ.get('RESEARCH_DATA_DIR') or '~/.cache/research/data'
  return os.path.abspath(os.path.expanduser(cache_dir))


def _vocabulary_key(vocabulary_name: str) -> str:
  """A path component for a vocabulary: its name, or for a SentencePiece model or a Hugging Face
  tokenizer.json the file's md5 (a changed file at the same path gives new stores)."""
  for prefix, tag in ((vocabularies.SPM_PREFIX, 'spm'), (vocabularies.HF_PREFIX, 'hf')):
    if vocabulary_name.startswith(prefix):
      with tf.io.gfile.GFile(vocabulary_name[len(prefix):], 'rb') as f:
        return f'{tag}-' + hashlib.md5(f.read()).hexdigest()[:16]
  return vocabulary_name


def store_dir(task_name: str, split: str, vocabulary_name: str, cache_dir: str) -> str:
  """Where the store of (task, split, vocabulary) lives: the task's fingerprint is in the path.

  A change to anything that changes the tokens (the task's source, parameters or files, the
  interpreter version of the stdlib corpora, the vocabulary's model) gives another directory, so a
  stale store is never read.
  """
  fingerprint = hashlib.md5(tasks.fingerprint(task_name).encode('utf-8')).hexdigest()[:16]
  return os.path.join(resolve_cache_dir(cache_dir), task_name, split,
                      _vocabulary_key(vocabulary_name), fingerprint)


def _token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def _write_file(path: str, write) -> None:
  """Writes with `write(file)` and flushes to disk before returning."""
  with open(path, 'wb') as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())


def _tokenize_split(task_name: str, split: str, vocabulary):
  """(tokens [T], offsets [D + 1], doc_ids, metadata lines) of a task split, through seqio."""
  dataset = tasks.get_task(task_name, vocabulary).get_dataset(
      split=split, shuffle=False, sequence_length=None)
  pieces, doc_ids, metadata = [], [], []
  for example in dataset.as_numpy_iterator():
    pieces.append(example['targets'])
    doc_ids.append(example['id'].decode('utf-8'))
    metadata.append(example['metadata'].decode('utf-8'))
  lengths = np.array([len(p) for p in pieces], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  tokens = np.concatenate(pieces) if pieces else np.zeros([0], np.int32)
  return tokens.astype(_token_dtype(vocabulary.vocab_size)), offsets, doc_ids, metadata


def _build(directory: str, task_name: str, split: str, vocabulary_name: str) -> None:
  """Writes every file of a store into `directory`, the manifest last."""
  vocabulary = vocabularies.make_vocabulary(vocabulary_name)
  vocab_size = vocabulary.vocab_size
  tokens, offsets, doc_ids, metadata = _tokenize_split(task_name, split, vocabulary)
  manifest = {
      'fingerprint': tasks.fingerprint(task_name),
      'task': task_name, 'split': split, 'vocabulary': vocabulary_name, 'vocab_size': vocab_size,
      'num_documents': len(doc_ids), 'num_tokens': int(tokens.size),
      'token_dtype': tokens.dtype.name, 'python_version': corpora.PYTHON_VERSION,
      'format_version': FORMAT_VERSION,
  }
  _write_file(os.path.join(directory, _TOKENS), lambda f: np.save(f, tokens))
  _write_file(os.path.join(directory, _OFFSETS), lambda f: np.save(f, offsets))
  _write_file(os.path.join(directory, _DOC_IDS), lambda f: f.write(json.dumps(doc_ids).encode()))
  _write_file(os.path.join(directory, _METADATA),
              lambda f: f.write(''.join(line + '\n' for line in metadata).encode()))
  _write_file(os.path.join(directory, _MANIFEST),
              lambda f: f.write(json.dumps(manifest, indent=2).encode()))


def _publish(tmp_dir: str, final_dir: str) -> None:
  """Renames the finished `tmp_dir` to `final_dir`; keeps the other copy if one got there first."""
  try:
    os.rename(tmp_dir, final_dir)
  except OSError:
    if not os.path.exists(os.path.join(final_dir, _MANIFEST)):
      raise
    shutil.rmtree(tmp_dir, ignore_errors=True)


def _open(directory: str) -> DocumentStore:
  """Opens a complete store directory (tokens memory-mapped)."""
  with open(os.path.join(directory, _MANIFEST)) as f:
    manifest = json.load(f)
  if manifest.get('format_version') != FORMAT_VERSION:
    raise ValueError(f'format version {manifest.get("format_version")}, this code reads '
                     f'{FORMAT_VERSION}')
  tokens = np.load(os.path.join(directory, _TOKENS), mmap_mode='r')
  offsets = np.load(os.path.join(directory, _OFFSETS))
  with open(os.path.join(directory, _DOC_IDS)) as f:
    doc_ids = json.load(f)
  if tokens.size != manifest['num_tokens'] or len(offsets) != len(doc_ids) + 1:
    raise ValueError('its files disagree with manifest.json')
  return DocumentStore(tokens=tokens, offsets=offsets, doc_ids=doc_ids, manifest=manifest,
                       directory=directory)


def _make_build_dir(parent: str, cache_dir: str) -> str:
  """A fresh temporary directory under `parent`, or a clear error naming data.cache_dir."""
  try:
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix='.building-', dir=parent)
  except OSError as e:
    raise errors.UserError(f'Cannot write the document store under {parent} ({e.strerror}): '
                           f'data.cache_dir={cache_dir!r} must name a writable directory (or be '
                           "'' for $RESEARCH_DATA_DIR or ~/.cache/research/data).") from e


def load_store(task_name: str, split: str, vocabulary_name: str, cache_dir: str) -> DocumentStore:
  """The document store of (task, split, vocabulary), built and cached on first use."""
  if split not in tasks.SPLITS:
    raise errors.UserError(f'Unknown split {split!r}; use one of {list(tasks.SPLITS)}.')
  final_dir = store_dir(task_name, split, vocabulary_name, cache_dir)
  if os.path.exists(os.path.join(final_dir, _MANIFEST)):
    try:
      return _open(final_dir)
    except (OSError, ValueError) as error:  # a damaged or older-format store: build it again
      logging.warning('Rebuilding the document store %s: %s', final_dir, error)
      shutil.rmtree(final_dir, ignore_errors=True)
  tmp_dir = _make_build_dir(os.path.dirname(final_dir), cache_dir)
  try:
    _build(tmp_dir, task_name, split, vocabulary_name)
    _publish(tmp_dir, final_dir)
  except BaseException:
    shutil.rmtree(tmp_dir, ignore_errors=True)
    raise
  return _open(final_dir)
