"""Packed-row stores: a task's training documents packed once into rows, read by row index.

The rows an objective trains on depend on the task's documents and on the packing recipe (row
length, chunk length, token budgets and the cost of a chunk of each length, `Recipe`), not on the
run's seed, so one rows store serves every seed of a sweep (the seed orders the rows). Documents are
packed shard by shard: shard k of the document store becomes shard k of the rows store, its
documents visited in a permutation seeded by k (`packing.random_documents`) and packed by next fit
(research/data/packing.py). So packing holds one shard in memory whatever the corpus size, Beam
packs the shards in parallel (research/data/build.py's runners), and the same bytes come out on one
worker or many.

A rows store lives beside its documents, `<document store>/rows-<recipe hash>/`:

    rows-SSSSS-of-NNNNN.array_record  one record per row (`encode_row`): its chunks' lengths, each
                                      chunk's document (int64 index into the task's documents), the
                                      tokens
    rows-SSSSS-of-NNNNN.json          the shard's summary, written once the shard is complete
    manifest.json                     written last: the recipe, counts, every shard's summary

Training reads rows by global index (`records.ShardedRecords`), from local disk or gs://, only the
rows its host needs (`RowStore.take`), on Grain's threads: nothing of the corpus is held in memory
but each opened shard's index (about 16 bytes a row, measured).
"""

import dataclasses
import hashlib
import json
import os
import struct

import apache_beam as beam
import numpy as np
from apache_beam.options.pipeline_options import PipelineOptions

from research import errors
from research.data import build, packing, records
from research.data import store as store_lib

FORMAT_VERSION = 1
_HEADER = struct.Struct('<I')  # the number of chunks in a row


@dataclasses.dataclass(frozen=True, eq=False)
class Recipe:
  """How documents are packed into rows (research/objectives/examples.Objective): rows of `row_len`
  tokens, chunks of at most `chunk_len`, and the cost in each of `budgets` of a chunk of length
  n = 1..chunk_len (`costs_NC[n - 1]`)."""
  row_len: int
  chunk_len: int
  budgets: tuple[int, ...]
  costs_NC: np.ndarray

  def costs(self, lengths_P: np.ndarray) -> np.ndarray:
    return self.costs_NC[np.asarray(lengths_P, np.int64) - 1]

  def describe(self) -> dict:
    """The recipe as the manifest records it (the cost table by its hash)."""
    return {'row_len': self.row_len, 'chunk_len': self.chunk_len, 'budgets': list(self.budgets),
            'costs_sha256': hashlib.sha256(self.costs_NC.astype('<i8').tobytes()).hexdigest()}

  @property
  def key(self) -> str:
    return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]


def recipe(objective) -> Recipe:
  """The packing recipe of an objective (research/objectives/examples.Objective)."""
  lengths = np.arange(1, objective.chunk_len + 1)
  return Recipe(objective.row_len, objective.chunk_len, tuple(objective.budgets),
                np.asarray(objective.costs(lengths), np.int64))


def rows_path(documents_directory: str, recipe_: Recipe) -> str:
  return os.path.join(documents_directory, f'rows-{recipe_.key}')


def encode_row(lengths_S: np.ndarray, documents_S: np.ndarray, tokens: np.ndarray) -> bytes:
  """One record: the number of chunks S, their uint32 lengths, int64 documents, then the tokens."""
  return (_HEADER.pack(len(lengths_S)) + np.asarray(lengths_S, '<u4').tobytes()
          + np.asarray(documents_S, '<i8').tobytes() + tokens.tobytes())


def decode_rows(rows: list[bytes], row_len: int, dtype: np.dtype) -> dict[str, np.ndarray]:
  """[R, row_len] int32 `targets`, `segment_ids`, `positions` and int64 `documents` (-1 on padding)
  of records of `encode_row`: the arrays research/data/packing.pack_documents gives."""
  packed = {k: np.zeros([len(rows), row_len], np.int32)
            for k in ('targets', 'segment_ids', 'positions')}
  packed['documents'] = np.full([len(rows), row_len], -1, np.int64)
  for r, row in enumerate(rows):
    (num_chunks,) = _HEADER.unpack_from(row)
    lengths_S = np.frombuffer(row, '<u4', num_chunks, _HEADER.size).astype(np.int64)
    documents_S = np.frombuffer(row, '<i8', num_chunks, _HEADER.size + 4 * num_chunks)
    size = int(lengths_S.sum())
    starts_T = np.repeat(np.cumsum(lengths_S) - lengths_S, lengths_S)
    packed['targets'][r, :size] = np.frombuffer(row, dtype, size, _HEADER.size + 12 * num_chunks)
    packed['segment_ids'][r, :size] = np.repeat(np.arange(1, num_chunks + 1), lengths_S)
    packed['positions'][r, :size] = np.arange(size) - starts_T
    packed['documents'][r, :size] = np.repeat(documents_S, lengths_S)
  return packed


@dataclasses.dataclass(frozen=True, eq=False)
class Unit:
  """What one Beam worker packs: document shard `shard` of `num_shards` (`summary`, its documents
  numbered from `first_document`) of the store in `documents`, into the rows store in
  `directory`. It carries its own shard's summary only, whatever the number of shards."""
  documents: str
  token_dtype: str
  summary: dict
  shard: int
  num_shards: int
  first_document: int
  directory: str
  recipe: Recipe


def pack_shard(unit: Unit) -> dict:
  """Packs one document shard into one rows shard unless that is complete; its summary."""
  name = records.shard_name(unit.shard, unit.num_shards, 'rows')
  done = build.complete(unit.directory, name)
  if done is not None:
    return done
  documents = store_lib.read_documents(unit.documents, {'token_dtype': unit.token_dtype},
                                       [unit.summary])
  recipe_ = unit.recipe
  plan = packing.layout(documents, recipe_.row_len, unit.shard, recipe_.chunk_len, recipe_.costs,
                        recipe_.budgets, packing.random_documents(documents.num_documents,
                                                                  unit.shard))
  chunk_bounds = np.searchsorted(plan.rows_P, np.arange(plan.num_rows + 1)).tolist()
  starts, ends = plan.starts_P.tolist(), (plan.starts_P + plan.lengths_P).tolist()
  writer = build.ShardWriter(unit.directory, name, 'num_rows')
  try:
    for row in range(plan.num_rows):
      chunks = range(chunk_bounds[row], chunk_bounds[row + 1])
      tokens = np.concatenate([documents.tokens[starts[p]:ends[p]] for p in chunks])
      writer.write(encode_row(plan.lengths_P[chunks.start:chunks.stop], unit.first_document
                              + plan.documents_P[chunks.start:chunks.stop], tokens), len(tokens))
  except BaseException:
    writer.abort()
    raise
  return writer.close(num_documents=documents.num_documents, split_documents=int(
      np.sum(np.diff(documents.offsets) > recipe_.chunk_len)))


def _rebuild_hint(directory: str) -> str:
  return (f'rebuild it with `{records.build_command()}` (a rerun keeps the shards that are '
          f'complete), or delete {directory} to pack it again')


def build_rows(task_name: str, vocabulary_name: str, store_dir: str, recipe_: Recipe,
               options: PipelineOptions | None = None) -> dict:
  """Packs the train split of `task_name` into its rows store for `recipe_`, one Beam worker per
  shard, keeping complete shards of an earlier build; its manifest."""
  documents, manifest = store_lib.built_manifest(task_name, 'train', vocabulary_name, store_dir)
  directory = rows_path(documents, recipe_)
  counts = [s['num_documents'] for s in manifest['shards']]
  firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64).tolist()
  shards = manifest['shards']
  todo = [Unit(documents, manifest['token_dtype'], summary, k, len(shards), first, directory,
               recipe_) for k, (summary, first) in enumerate(zip(shards, firsts))]
  with beam.Pipeline(options=options or build.pipeline_options('DirectRunner', num_workers=1)) as p:
    _ = (p | 'Shards' >> beam.Create(todo) | 'Spread' >> beam.Reshuffle()
         | 'Pack' >> beam.Map(pack_shard))
  summaries = [records.read_json(os.path.join(directory, records.summary_of(
      records.shard_name(k, len(todo), 'rows')))) for k in range(len(todo))]
  if any(s is None for s in summaries):
    raise errors.UserError(f'Packing task {task_name!r} did not write every shard in {directory}; '
                           'run it again to finish it.')
  rows_manifest = {
      'format_version': FORMAT_VERSION, 'task': task_name, 'vocabulary': vocabulary_name,
      'fingerprint': manifest['fingerprint'], 'recipe': recipe_.describe(),
      'token_dtype': manifest['token_dtype'],
      **{k: sum(s[k] for s in summaries) for k in ('num_rows', 'num_documents', 'num_tokens',
                                                   'split_documents')},
      'shards': summaries}
  records.write_json(os.path.join(directory, records.MANIFEST), rows_manifest)
  return rows_manifest


def prepare(task_name: str, vocabulary_name: str, store_dir: str, recipe_: Recipe
            ) -> tuple[str, dict]:
  """(directory, manifest) of the rows store of `task_name` for `recipe_`, packed first if its
  source is small; a missing large one stops naming the launch.build_data command."""
  documents, _ = store_lib.built_manifest(task_name, 'train', vocabulary_name, store_dir)
  directory = rows_path(documents, recipe_)
  manifest = records.finished_manifest(directory, FORMAT_VERSION)
  if manifest is None:
    if not store_lib.builds_on_first_use(task_name):
      raise errors.UserError(
          f'The packed rows of task {task_name!r} (rows of {recipe_.row_len} tokens) are not built '
          f'in {directory}, and its source is over {store_lib.AUTO_BUILD_BYTES >> 20} MiB, so '
          f'training does not pack it: run `{records.build_command()}` first (add '
          '--runner=DataflowRunner to build in the cloud).')
    manifest = build_rows(task_name, vocabulary_name, store_dir, recipe_)
  return directory, manifest


class RowStore:
  """The packed rows of a task, read by index from their ArrayRecord shards
  (`records.ShardedRecords`: a shard opened when first read, a seek and a read a row, in the
  calling thread; the threads that read ahead are Grain's, pipeline.TrainData.batches)."""

  def __init__(self, directory: str, manifest: dict):
    self.directory, self.manifest = directory, manifest
    self.row_len = manifest['recipe']['row_len']
    self._dtype = np.dtype(manifest['token_dtype'])
    self._records = records.ShardedRecords(
        [os.path.join(directory, s['file']) for s in manifest['shards']],
        [s['num_rows'] for s in manifest['shards']])

  @property
  def num_rows(self) -> int:
    return self.manifest['num_rows']

  def take(self, rows_R: np.ndarray) -> dict[str, np.ndarray]:
    """The rows `rows_R` (indices in [0, num_rows)) as `decode_rows` gives them."""
    try:
      records_R = self._records.read(rows_R)
    except Exception as e:  # a missing, cut short or damaged shard (riegeli's checksums)
      raise errors.UserError(f'The rows store {self.directory} cannot be read ({e}); '
                             f'{_rebuild_hint(self.directory)}.') from e
    return decode_rows(records_R, self.row_len, self._dtype)


@dataclasses.dataclass(frozen=True)
class PackedRows:
  """Rows packed in memory (research/data/packing.pack_documents), for the features that need a
  whole task at once; the same interface as RowStore."""
  packed: dict[str, np.ndarray]

  @property
  def num_rows(self) -> int:
    return len(self.packed['targets'])

  def take(self, rows_R: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows_R] for k, v in self.packed.items()}


def load(task_name: str, vocabulary_name: str, store_dir: str, recipe_: Recipe) -> RowStore:
  """The rows store of the train split of `task_name` for `recipe_` (`prepare`), opened."""
  return RowStore(*prepare(task_name, vocabulary_name, store_dir, recipe_))
