"""The on-disk format of a document store: paths, shard files, the document record, the manifest.

A store of one (task, split, vocabulary) lives in `<store_dir>/<task>/<split>/<vocabulary>/<hash of
the task's fingerprint>/`, on local disk or `gs://` (through tf.io.gfile and ArrayRecord's own GCS
reader):

    documents-SSSSS-of-NNNNN.array_record  one record per document (`encode_document`), in the
                                           source's order; shard k holds part k of the source
    documents-SSSSS-of-NNNNN.json          the shard's summary (documents, tokens, bytes, sha256),
                                           written once the shard file is complete
    manifest.json                          written last: task, split, vocabulary, vocab_size, the
                                           task's fingerprint, token dtype, counts, every shard's
                                           summary, format_version

A directory without manifest.json is a build that has not finished. research/data/build.py writes
stores (Apache Beam); research/data/store.py reads them.
"""

import hashlib
import json
import os
import shlex
import struct
import sys
import threading

import numpy as np
import tensorflow as tf
from array_record.python import array_record_module

from research import errors
from research.data import tasks, vocabularies

FORMAT_VERSION = 3
MANIFEST = 'manifest.json'
WRITER_OPTIONS = 'group_size:1'  # one record per chunk: random access to any record
READ_BUFFER_BYTES = 32 * 2**10  # what a record's read fetches at least (a request on gs://)
_HEADER = struct.Struct('<I')


def resolve_store_root(store_dir: str) -> str:
  """`store_dir` (a local path or gs://...), or when it is '' then $RESEARCH_DATA_DIR or
  ~/.cache/research/data."""
  if not store_dir:
    store_dir = os.environ.get('RESEARCH_DATA_DIR') or '~/.cache/research/data'
  if '://' in store_dir:
    return store_dir.rstrip('/')
  return os.path.abspath(os.path.expanduser(store_dir))


def vocabulary_key(vocabulary_name: str) -> str:
  """A path component for a vocabulary: its name, or for a SentencePiece model or a Hugging Face
  tokenizer.json the file's md5 (a changed file at the same path gives new stores)."""
  for prefix, tag in ((vocabularies.SPM_PREFIX, 'spm'), (vocabularies.HF_PREFIX, 'hf')):
    if vocabulary_name.startswith(prefix):
      with tf.io.gfile.GFile(vocabulary_name[len(prefix):], 'rb') as f:
        return f'{tag}-' + hashlib.md5(f.read()).hexdigest()[:16]
  return vocabulary_name


def store_path(task_name: str, split: str, vocabulary_name: str, store_dir: str) -> str:
  """Where the store of (task, split, vocabulary) lives: the task's fingerprint is in the path.

  A change to anything that changes the tokens (the task's source, parameters or files, the
  interpreter version of the stdlib corpora, the vocabulary's model) gives another directory, so a
  stale store is never read.
  """
  fingerprint = hashlib.md5(tasks.fingerprint(task_name).encode('utf-8')).hexdigest()[:16]
  return os.path.join(resolve_store_root(store_dir), task_name, split,
                      vocabulary_key(vocabulary_name), fingerprint)


def shard_name(shard: int, num_shards: int, kind: str = 'documents') -> str:
  return f'{kind}-{shard:05d}-of-{num_shards:05d}.array_record'


def summary_of(shard_file: str) -> str:
  """The name of a shard file's summary, written beside it once the shard is complete."""
  return shard_file.replace('.array_record', '.json')


def token_dtype(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.int32)


def encode_document(doc_id: str, metadata_json: str, tokens: np.ndarray) -> bytes:
  """One record: the length of a JSON header [id, metadata JSON], the header, the token bytes."""
  header = json.dumps([doc_id, metadata_json]).encode('utf-8')
  return _HEADER.pack(len(header)) + header + tokens.tobytes()


def decode_document(record: bytes, dtype: np.dtype) -> tuple[str, str, np.ndarray]:
  """(id, metadata JSON, tokens) of a record of `encode_document`."""
  (size,) = _HEADER.unpack_from(record)
  doc_id, metadata_json = json.loads(record[_HEADER.size:_HEADER.size + size])
  return doc_id, metadata_json, np.frombuffer(record, dtype, offset=_HEADER.size + size)


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with tf.io.gfile.GFile(path, 'rb') as f:
    while chunk := f.read(1 << 24):
      digest.update(chunk)
  return digest.hexdigest()


def build_command() -> str:
  """The launch.build_data command for the experiment this process runs (its --config flags), or
  its general form."""
  flags = [a for a in sys.argv[1:] if a.startswith('--config=') or a.startswith('--config.')]
  return 'python -m launch.build_data ' + (
      ' '.join(shlex.quote(a) for a in flags) if flags else '--config=experiments/NAME.py')


class ShardedRecords:
  """The records of a store's shard files (`paths`, holding `counts` records), read by global
  index: a record is a seek and a read of its shard's ArrayRecordReader, under that reader's lock,
  in the calling thread, and a shard is opened when a record of it is first read (not thousands at
  once when a run starts). Measured here on a 234 MB shard: 17 us a record. The reader's
  `read(list)` (what Grain's ArrayRecordDataSource calls) took 4.3 ms a call, and resident memory
  grew with the records read through it (300 MiB after 2000 of one shard, 500 MiB after 8000;
  37 MiB this way). Each opened shard keeps its index in memory, about 16 bytes a record."""

  def __init__(self, paths: list[str], counts: list[int]):
    self._paths = paths
    self._ends = np.cumsum(counts, dtype=np.int64)
    self._readers = [None] * len(paths)
    self._locks = [threading.Lock() for _ in paths]

  def _read(self, shard: int, positions: list[int]) -> list[bytes]:
    with self._locks[shard]:
      if self._readers[shard] is None:
        self._readers[shard] = array_record_module.ArrayRecordReader(
            self._paths[shard], 'readahead_buffer_size:0,max_parallelism:0',
            file_reader_buffer_size=READ_BUFFER_BYTES)
      reader, read = self._readers[shard], []
      for position in positions:
        reader.seek(position)
        read.append(reader.read())
      return read

  def read(self, indices) -> list[bytes]:
    """The records at global `indices`, in that order; a missing, cut short or damaged shard
    (riegeli's checksums) raises the reader's error."""
    indices = np.asarray(indices, np.int64)
    shard_I = np.searchsorted(self._ends, indices, side='right')
    read = [b''] * len(indices)
    for shard in np.unique(shard_I).tolist():
      of_shard = np.flatnonzero(shard_I == shard)
      start = int(self._ends[shard - 1]) if shard else 0
      positions = (indices[of_shard] - start).tolist()
      for i, record in zip(of_shard.tolist(), self._read(shard, positions)):
        read[i] = record
    return read


def finished_manifest(directory: str, version: int = FORMAT_VERSION) -> dict | None:
  """The manifest of the store in `directory` when it is complete (the manifest is written last)
  and of format `version`; None otherwise."""
  manifest = read_json(os.path.join(directory, MANIFEST))
  return manifest if manifest is not None and manifest.get('format_version') == version else None


def read_json(path: str) -> dict | None:
  """The JSON object in file `path`; None when there is no such file. A bucket this process cannot
  reach (no credentials, no network) is one line saying how to authenticate."""
  try:
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)
  except tf.errors.NotFoundError:
    return None
  except (tf.errors.PermissionDeniedError, tf.errors.FailedPreconditionError,
          tf.errors.UnauthenticatedError, tf.errors.UnavailableError) as e:
    raise errors.UserError(
        f'Cannot read {path}: {e.message.splitlines()[0]}. Authenticate to Google Cloud Storage '
        'with `gcloud auth application-default login` (on a TPU VM, give its service account '
        'read access to the bucket), or set data.store_dir to a local directory.') from e
  except json.JSONDecodeError:
    return None  # cut short: treated as absent, so the store is built again


def write_json(path: str, value: dict) -> None:
  """Writes `value` to `path` through a temporary file beside it, so a reader sees all or nothing."""
  staging = f'{path}.tmp-{os.getpid()}'
  with tf.io.gfile.GFile(staging, 'w') as f:
    f.write(json.dumps(value, indent=2, sort_keys=True))
  tf.io.gfile.rename(staging, path, overwrite=True)
