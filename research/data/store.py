"""The tokenized document store: one task split, tokenized once, addressable by document index.

A store lives in `<cache_dir>/<task>/<split>/<vocabulary>/`:

    tokens.npy     1-D uint16 (int32 for vocabularies over 65536 ids): every document's tokens,
                   EOS included, concatenated in corpus order; opened as a memory map
    offsets.npy    int64 [num_documents + 1]: document i is tokens[offsets[i]:offsets[i + 1]]
    doc_ids.json   the documents' ids, in store order
    manifest.json  task, split, vocabulary, vocab_size, counts, python_version, format_version

It is built by iterating the seqio Task (no shuffling, no length limit) into a temporary sibling
directory that is renamed into place only once every file is written, so a build killed midway
never leaves a directory that looks complete. Two processes building at once both succeed: the one
that loses the rename race discards its copy and opens the winner's.
"""

import dataclasses
import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from research import errors
from research.data import corpora
from research.data import tasks

FORMAT_VERSION = 1
_TOKENS, _OFFSETS = 'tokens.npy', 'offsets.npy'
_DOC_IDS, _MANIFEST = 'doc_ids.json', 'manifest.json'


@dataclasses.dataclass(frozen=True)
class DocumentStore:
  """The tokens of one (task, split, vocabulary), with per-document offsets."""
  tokens: np.ndarray  # [num_tokens] uint16 or int32, memory-mapped
  offsets: np.ndarray  # [num_documents + 1] int64
  doc_ids: list[str]
  manifest: dict[str, Any]

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


def store_dir(task_name: str, split: str, vocabulary_name: str, cache_dir: str) -> str:
  """Where the store of (task, split, vocabulary) lives."""
  return os.path.join(resolve_cache_dir(cache_dir), task_name, split, vocabulary_name)


def _token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def _write_file(path: str, write) -> None:
  """Writes with `write(file)` and flushes to disk before returning."""
  with open(path, 'wb') as f:
    write(f)
    f.flush()
    os.fsync(f.fileno())


def _tokenize_split(task_name: str, split: str, vocab_size: int):
  """(tokens [T], offsets [D + 1], doc_ids) of a task split, read through its seqio pipeline."""
  dataset = tasks.get_task(task_name).get_dataset(split=split, shuffle=False, sequence_length=None)
  pieces, doc_ids = [], []
  for example in dataset.as_numpy_iterator():
    pieces.append(example['targets'])
    doc_ids.append(example['id'].decode('utf-8'))
  lengths = np.array([len(p) for p in pieces], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
  tokens = np.concatenate(pieces) if pieces else np.zeros([0], np.int32)
  return tokens.astype(_token_dtype(vocab_size)), offsets, doc_ids


def _build(directory: str, task_name: str, split: str, vocabulary_name: str) -> None:
  """Writes every file of a store into `directory`, the manifest last."""
  vocab_size = tasks.get_vocabulary(vocabulary_name).vocab_size
  tokens, offsets, doc_ids = _tokenize_split(task_name, split, vocab_size)
  manifest = {
      'task': task_name, 'split': split, 'vocabulary': vocabulary_name, 'vocab_size': vocab_size,
      'num_documents': len(doc_ids), 'num_tokens': int(tokens.size),
      'token_dtype': tokens.dtype.name, 'python_version': corpora.PYTHON_VERSION,
      'format_version': FORMAT_VERSION,
  }
  _write_file(os.path.join(directory, _TOKENS), lambda f: np.save(f, tokens))
  _write_file(os.path.join(directory, _OFFSETS), lambda f: np.save(f, offsets))
  _write_file(os.path.join(directory, _DOC_IDS), lambda f: f.write(json.dumps(doc_ids).encode()))
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
    raise errors.UserError(f'Document store {directory} has format version '
                           f'{manifest.get("format_version")}, this code reads {FORMAT_VERSION}; '
                           'delete that directory and it will be rebuilt.')
  tokens = np.load(os.path.join(directory, _TOKENS), mmap_mode='r')
  offsets = np.load(os.path.join(directory, _OFFSETS))
  with open(os.path.join(directory, _DOC_IDS)) as f:
    doc_ids = json.load(f)
  if tokens.size != manifest['num_tokens'] or len(offsets) != len(doc_ids) + 1:
    raise errors.UserError(f'Document store {directory} is corrupt (its files disagree with '
                           'manifest.json); delete that directory and it will be rebuilt.')
  return DocumentStore(tokens=tokens, offsets=offsets, doc_ids=doc_ids, manifest=manifest)


def _check_vocabulary(task_name: str, vocabulary_name: str) -> None:
  """Fails unless the task tokenizes with vocabulary `vocabulary_name`."""
  vocabulary = tasks.get_vocabulary(vocabulary_name)
  task_vocabulary = tasks.get_task(task_name).output_features['targets'].vocabulary
  if task_vocabulary != vocabulary:
    raise errors.UserError(f'Task {task_name!r} in data.mixture tokenizes with '
                           f'{type(task_vocabulary).__name__}, not with '
                           f'data.vocabulary={vocabulary_name!r}; set data.vocabulary to match.')


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
  _check_vocabulary(task_name, vocabulary_name)
  if split not in tasks.SPLITS:
    raise errors.UserError(f'Unknown split {split!r}; use one of {list(tasks.SPLITS)}.')
  final_dir = store_dir(task_name, split, vocabulary_name, cache_dir)
  if not os.path.exists(os.path.join(final_dir, _MANIFEST)):
    tmp_dir = _make_build_dir(os.path.dirname(final_dir), cache_dir)
    try:
      _build(tmp_dir, task_name, split, vocabulary_name)
      _publish(tmp_dir, final_dir)
    except BaseException:
      shutil.rmtree(tmp_dir, ignore_errors=True)
      raise
  return _open(final_dir)
