"""The tokenized document store of one task split, addressable by document index.

Stores are sharded ArrayRecord files with a manifest (research/data/records.py), built by Apache
Beam (research/data/build.py): `python -m launch.build_data --config=...` builds every store an
experiment reads, on this machine or on Dataflow into a bucket. A store whose source is small (the
built-in corpora, the synthetic generators, files or a TFDS dataset of at most AUTO_BUILD_BYTES) is
built on first use instead, by the DirectRunner in this process; processes that build the same
store at once write the same bytes, each shard by an atomic rename. Training never builds a large
store: a missing or stale one stops it with the command that builds it.

`load_store` reads a store into memory (`DocumentStore`: tokens, offsets, ids, metadata). A shard
that is missing, cut short or unreadable is an error naming it and the command that rebuilds it
(a small store is rebuilt); a manifest of another task, fingerprint or vocabulary is an error
naming the mismatch. Nothing is deleted or overwritten on any of these.
"""

import dataclasses
import functools
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging
from array_record.python import array_record_module

from research import errors
from research.data import build, records, tasks

AUTO_BUILD_BYTES = 64 * 2**20  # sources up to this size are built on first use

# The path of a store; kept here for the callers that address stores.
store_path = records.store_path
resolve_store_root = records.resolve_store_root
FORMAT_VERSION = records.FORMAT_VERSION


@dataclasses.dataclass(frozen=True)
class DocumentStore:
  """The tokens of one (task, split, vocabulary), with per-document offsets."""
  tokens: np.ndarray  # [num_tokens] uint16 or int32
  offsets: np.ndarray  # [num_documents + 1] int64
  doc_ids: list[str]
  manifest: dict[str, Any]
  directory: str
  # Per-token loss weights of a store derived by an objective (research/objectives/documents.py);
  # None: every token weighs 1.
  weights: np.ndarray | None = None
  metadata_json: Sequence[str] = ()  # each document's metadata, a JSON object

  @functools.cached_property
  def metadata(self) -> list[dict[str, Any]]:
    """Each document's metadata (skill, difficulty, ...), parsed on first use."""
    return [json.loads(line) for line in self.metadata_json]

  @property
  def num_documents(self) -> int:
    return len(self.doc_ids)

  def document(self, index: int) -> np.ndarray:
    """The tokens of document `index`, EOS included."""
    return self.tokens[self.offsets[index]:self.offsets[index + 1]]

  def body(self, index: int, eos_id: int) -> np.ndarray:
    """The tokens of document `index` without its final EOS (if it ends with one)."""
    tokens = self.document(index)
    return tokens[:-1] if len(tokens) and tokens[-1] == eos_id else tokens

  def text(self, index: int, vocabulary) -> str:
    """Document `index` as text: its tokens decoded by `vocabulary`, without the final EOS."""
    return vocabulary.decode(np.asarray(self.body(index, vocabulary.eos_id)).tolist())

  def texts(self, vocabulary) -> list[str]:
    """Every document's `text`, in store order."""
    return [self.text(i, vocabulary) for i in range(self.num_documents)]


class DocumentReader:
  """The documents of a store read one at a time by index (`records.ShardedRecords`): a few
  documents of a store of any size, without reading the rest."""

  def __init__(self, directory: str, manifest: dict):
    self._dtype = np.dtype(manifest['token_dtype'])
    self._records = records.ShardedRecords(
        [os.path.join(directory, s['file']) for s in manifest['shards']],
        [s['num_documents'] for s in manifest['shards']])

  def __getitem__(self, index: int) -> tuple[str, dict[str, Any], np.ndarray]:
    """(id, metadata, tokens) of document `index`."""
    record, = self._records.read([index])
    doc_id, metadata_json, tokens = records.decode_document(record, self._dtype)
    return doc_id, json.loads(metadata_json), tokens


def _rebuild_hint(directory: str) -> str:
  return (f'rebuild it with `{records.build_command()}` (a rerun keeps the shards that are '
          f'complete), or delete {directory} to build it from scratch')


def _read_shard(path: str, summary: dict, directory: str):
  """The records of one shard, checked against its summary in the manifest."""
  name = summary['file']
  if not tf.io.gfile.exists(path):
    raise errors.UserError(f'Shard {name} of the store {directory} is missing; '
                           f'{_rebuild_hint(directory)}.')
  size = tf.io.gfile.stat(path).length
  if size != summary['bytes']:
    raise errors.UserError(f'Shard {name} of the store {directory} has {size} bytes, its manifest '
                           f"says {summary['bytes']} (cut short or damaged); "
                           f'{_rebuild_hint(directory)}.')
  try:
    reader = array_record_module.ArrayRecordReader(path, 'readahead_buffer_size:0')
    contents = reader.read_all()
    reader.close()
  except Exception as e:  # riegeli's checksums: a damaged file fails to read
    raise errors.UserError(f'Shard {name} of the store {directory} cannot be read ({e}); '
                           f'{_rebuild_hint(directory)}.') from e
  if len(contents) != summary['num_documents']:
    raise errors.UserError(f'Shard {name} of the store {directory} holds {len(contents)} '
                           f"documents, its manifest says {summary['num_documents']}; "
                           f'{_rebuild_hint(directory)}.')
  return contents


def read_documents(directory: str, manifest: dict, shards: Sequence[dict] | None = None
                   ) -> DocumentStore:
  """Reads the shards `shards` (summaries of `manifest`; default all) of a store into one in-memory
  DocumentStore."""
  dtype = np.dtype(manifest['token_dtype'])
  doc_ids, metadata, pieces = [], [], []
  for summary in manifest['shards'] if shards is None else shards:
    for record in _read_shard(os.path.join(directory, summary['file']), summary, directory):
      doc_id, metadata_json, tokens = records.decode_document(record, dtype)
      doc_ids.append(doc_id)
      metadata.append(metadata_json)
      pieces.append(tokens)
  lengths = np.array([len(p) for p in pieces], np.int64)
  return DocumentStore(
      tokens=np.concatenate(pieces) if pieces else np.zeros([0], dtype),
      offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), doc_ids=doc_ids,
      manifest=manifest, directory=directory, metadata_json=metadata)


def _check_manifest(manifest: dict, task_name: str, split: str, vocabulary_name: str,
                    directory: str) -> None:
  """Fails naming what differs between a store's manifest and what the experiment asks for."""
  expected = {'task': task_name, 'split': split, 'vocabulary': vocabulary_name,
              'fingerprint': tasks.fingerprint(task_name)}
  for key, value in expected.items():
    if manifest.get(key) != value:
      raise errors.UserError(
          f'The store {directory} was built for {key} {manifest.get(key)!r}, but the experiment '
          f'reads {key} {value!r}; {_rebuild_hint(directory)}.')


def builds_on_first_use(task_name: str) -> bool:
  """Whether the store of `task_name` is small enough to be built when first read."""
  return tasks.task_spec(task_name).source_bytes() <= AUTO_BUILD_BYTES


def prepare(requests: Sequence[tuple[str, str]], vocabulary_name: str, store_dir: str) -> None:
  """Builds the missing or older-format stores of the (task, split) `requests` whose sources are
  small, in one pipeline; fails naming the others and the command that builds them."""
  for task_name, split in requests:
    if split not in tasks.SPLITS:
      raise errors.UserError(f'Unknown split {split!r}; use one of {list(tasks.SPLITS)}.')
  missing = [(task, split) for task, split in dict.fromkeys(requests) if records.finished_manifest(
      store_path(task, split, vocabulary_name, store_dir)) is None]
  large = [f'{task} ({split})' for task, split in missing if not builds_on_first_use(task)]
  if large:
    raise errors.UserError(
        f'The document stores of {", ".join(large)} are not built (or were built by an older '
        f'version) under data.store_dir={records.resolve_store_root(store_dir)!r}, and their '
        f'sources are over {AUTO_BUILD_BYTES >> 20} MiB, so training does not build them: run '
        f'`{records.build_command()}` first (add --runner=DataflowRunner to build in the cloud).')
  if missing:
    logging.warning('Building the document stores of %s under %s', missing,
                    records.resolve_store_root(store_dir))
    try:
      build.build(missing, vocabulary_name, store_dir)
    except OSError as e:
      raise errors.UserError(
          f'Cannot write the document stores under {records.resolve_store_root(store_dir)} '
          f'({e.strerror or e}): data.store_dir={store_dir!r} must name a writable directory '
          "(or be '' for $RESEARCH_DATA_DIR or ~/.cache/research/data).") from e


def built_manifest(task_name: str, split: str, vocabulary_name: str,
                   store_dir: str) -> tuple[str, dict]:
  """(directory, manifest) of the store of (task, split, vocabulary), built first if it is small
  and missing; fails naming a manifest that does not match the experiment."""
  directory = store_path(task_name, split, vocabulary_name, store_dir)
  manifest = records.finished_manifest(directory)
  if manifest is None:
    prepare([(task_name, split)], vocabulary_name, store_dir)
    manifest = records.read_json(os.path.join(directory, records.MANIFEST))
  _check_manifest(manifest, task_name, split, vocabulary_name, directory)
  return directory, manifest


def load_prefix(task_name: str, split: str, vocabulary_name: str, store_dir: str, *,
                tokens: int = 0, documents: int = 0) -> DocumentStore:
  """The first shards of the store of (task, split, vocabulary) that hold at least `tokens` tokens
  and `documents` documents (all of them when the store holds fewer): what evaluation and probes
  read of a store of any size. The same as `load_store` for a one-shard store."""
  directory, manifest = built_manifest(task_name, split, vocabulary_name, store_dir)
  shards = []
  for summary in manifest['shards']:
    if shards and sum(s['num_tokens'] for s in shards) >= tokens and sum(
        s['num_documents'] for s in shards) >= documents:
      break
    shards.append(summary)
  prefix = {**manifest, 'shards': shards, **{k: sum(s[k] for s in shards)
                                             for k in ('num_documents', 'num_tokens')}}
  return read_documents(directory, prefix)


def load_store(task_name: str, split: str, vocabulary_name: str, store_dir: str) -> DocumentStore:
  """The document store of (task, split, vocabulary) in memory, built first if it is small and
  missing."""
  return read_documents(*built_manifest(task_name, split, vocabulary_name, store_dir))
