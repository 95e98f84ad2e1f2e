"""Builds document stores with Apache Beam: each worker reads, tokenizes and writes whole shards.

A task's source comes in parts (research/data/tasks.Part: runs of files, ranges of a TFDS split,
a generator's split); part k becomes shard k of each of its splits, written by one worker in the
source's order, so the same bytes come out whatever the runner and the number of workers (the
DirectRunner on one machine, Dataflow or Flink for a corpus in a bucket). A shard is written to a
temporary file and renamed into place, then its summary (`records.summary_of`) says it is
complete; a rerun keeps every shard whose file matches its summary's sha256 and builds the others.
Once every shard of a split is there, the driver writes manifest.json (research/data/records.py).

A UserError raised while a source is read (a bad JSONL line, bad UTF-8) reaches the caller as it was
raised: Beam copies it with "[while running 'Build']" appended and logs the copy with its
traceback, which `build` and `_QuietUserErrors` undo, so a command ends with the message alone.
"""

import dataclasses
import functools
import json
import logging
import os
import tempfile
from collections.abc import Sequence

import apache_beam as beam
import cloudpickle
import numpy as np
import seqio
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from array_record.python import array_record_module

from research import errors
from research.data import corpora, records, tasks, vocabularies


@dataclasses.dataclass(frozen=True)
class Unit:
  """What one worker builds: part `part` of task `task`, into the store directory of each split."""
  task: str
  part: tasks.Part
  directories: dict[str, str]  # split -> store directory, of the splits asked for


class _QuietUserErrors(logging.Filter):
  """Drops Beam's log of a UserError a worker raised (its traceback, some 40 lines): `build`
  raises the error itself, and a command prints its message alone."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not isinstance(record.msg, errors.UserError)


logging.getLogger('apache_beam.runners.common').addFilter(_QuietUserErrors())


def _as_raised(error: errors.UserError) -> errors.UserError:
  """The UserError a worker raised, for the copy of it that Beam raises instead (its message with
  the step appended, `_tagged_with_step`, the original as its context)."""
  while getattr(error, '_tagged_with_step', False) and isinstance(error.__context__,
                                                                  errors.UserError):
    error = error.__context__
  return error


@functools.cache
def _vocabulary(name: str) -> seqio.Vocabulary:
  return vocabularies.make_vocabulary(name)


def tokenize(vocabulary: seqio.Vocabulary, text: str, dtype: np.dtype) -> np.ndarray:
  """The tokens of `text` then EOS, as seqio's tokenize and append_eos preprocessors give them."""
  if isinstance(vocabulary, seqio.ByteVocabulary) and not vocabulary.extra_ids:
    ids = np.frombuffer(text.encode('utf-8'), np.uint8).astype(dtype) + 3  # ids 0-2 are special
  else:
    ids = np.asarray(vocabulary.encode(text), dtype)
  return np.append(ids, np.asarray(vocabulary.eos_id, dtype))


def complete(directory: str, name: str) -> dict | None:
  """The summary of shard file `name` in `directory` when the file is complete and matches it;
  None otherwise."""
  summary = records.read_json(os.path.join(directory, records.summary_of(name)))
  path = os.path.join(directory, name)
  if summary is None or not tf.io.gfile.exists(path):
    return None
  if tf.io.gfile.stat(path).length != summary['bytes'] or records.sha256(path) != summary['sha256']:
    return None
  return summary


class ShardWriter:
  """Writes one shard file `name` of records to a local temporary file, then moves it into place
  with its summary (`records.summary_of`): records counted under `count_key`, and their tokens."""

  def __init__(self, directory: str, name: str, count_key: str):
    self.directory, self.name, self.count_key = directory, name, count_key
    tf.io.gfile.makedirs(directory)
    local = directory if '://' not in directory else tempfile.gettempdir()
    fd, self.staging = tempfile.mkstemp(prefix='.' + name, dir=local)
    os.close(fd)
    os.chmod(self.staging, 0o644)  # mkstemp's 0600 would hide the store from other users
    self.writer = array_record_module.ArrayRecordWriter(self.staging, records.WRITER_OPTIONS)
    self.count = self.num_tokens = 0

  def write(self, record: bytes, num_tokens: int) -> None:
    self.writer.write(record)
    self.count += 1
    self.num_tokens += num_tokens

  def close(self, **extra) -> dict:
    """Moves the shard into place and writes its summary (with the `extra` fields); returns it."""
    self.writer.close()
    summary = {'file': self.name, self.count_key: self.count, 'num_tokens': self.num_tokens,
               'bytes': os.path.getsize(self.staging), 'sha256': records.sha256(self.staging),
               **extra}
    final = os.path.join(self.directory, self.name)
    if '://' in final:
      tf.io.gfile.copy(self.staging, final, overwrite=True)
      os.remove(self.staging)
    else:
      os.replace(self.staging, final)
    records.write_json(os.path.join(self.directory, records.summary_of(self.name)), summary)
    return summary

  def abort(self) -> None:
    self.writer.close()
    if os.path.exists(self.staging):
      os.remove(self.staging)


def build_unit(pickled_unit: bytes, vocabulary_name: str) -> list[tuple[str, str, dict]]:
  """Builds the shards of a unit (cloudpickled: its part reads with closures) that are not
  complete; (task, split, summary) of each."""
  unit = cloudpickle.loads(pickled_unit)
  part = unit.part
  name = records.shard_name(part.shard, part.num_shards)
  done = {split: complete(directory, name) for split, directory in unit.directories.items()}
  todo = [split for split, summary in done.items() if summary is None]
  if todo:
    vocabulary = _vocabulary(vocabulary_name)
    dtype = records.token_dtype(vocabulary.vocab_size)
    writers = {split: ShardWriter(unit.directories[split], name, 'num_documents')
               for split in todo}
    try:
      for document in part.read():
        split = part.splits[0] if len(part.splits) == 1 else (
            'validation' if tasks.is_validation(document['id'], part.validation_fraction)
            else 'train')
        if split in writers:
          tokens = (document['tokens'].astype(dtype) if 'tokens' in document else
                    tokenize(vocabulary, document['text'], dtype))  # a seqio Task's own ids
          metadata = {k: v for k, v in document.items() if k not in ('id', 'text', 'tokens')}
          writers[split].write(records.encode_document(
              document['id'], json.dumps(metadata, sort_keys=True), tokens), len(tokens))
    except BaseException:
      for writer in writers.values():
        writer.abort()
      raise
    done.update({split: writer.close() for split, writer in writers.items()})
  return [(unit.task, split, summary) for split, summary in done.items()]


def units(requests: Sequence[tuple[str, str]], vocabulary_name: str, store_dir: str) -> list[Unit]:
  """The units that build stores of the (task, split) `requests`."""
  by_task: dict[str, set[str]] = {}
  for task, split in requests:
    by_task.setdefault(task, set()).add(split)
  result = []
  for task, splits in by_task.items():
    tasks.check_vocabulary(task, _vocabulary(vocabulary_name))
    directories = {split: records.store_path(task, split, vocabulary_name, store_dir)
                   for split in splits}
    for part in tasks.task_spec(task).build_parts():
      wanted = {split: directories[split] for split in part.splits if split in splits}
      if wanted:
        result.append(Unit(task, part, wanted))
  return result


def pipeline_options(runner: str, beam_args: Sequence[str] = (), num_workers: int = 0):
  """Beam options: the DirectRunner with `num_workers` processes (0: one per CPU core; 1: in this
  process), or `runner` with `beam_args` (e.g. Dataflow's --project, --region, --temp_location).

  The DirectRunner runs these pipelines on Beam's FnApiRunner; named as such, since the DirectRunner
  first tries Prism, which downloads its binary from GitHub (and logs the failure offline)."""
  args = [f'--runner={runner}', *beam_args]
  if runner == 'DirectRunner':
    workers = num_workers or os.cpu_count() or 1
    args[0] = '--runner=FnApiRunner'
    args += (['--direct_running_mode=in_memory'] if workers == 1 else
             ['--direct_running_mode=multi_processing', f'--direct_num_workers={workers}'])
  return PipelineOptions(args)


def _manifest(task: str, split: str, vocabulary_name: str, summaries: list[dict]) -> dict:
  vocab_size = _vocabulary(vocabulary_name).vocab_size
  return {
      'format_version': records.FORMAT_VERSION, 'task': task, 'split': split,
      'vocabulary': vocabulary_name, 'vocab_size': vocab_size,
      'fingerprint': tasks.fingerprint(task), 'python_version': corpora.PYTHON_VERSION,
      'token_dtype': records.token_dtype(vocab_size).name,
      'num_documents': sum(s['num_documents'] for s in summaries),
      'num_tokens': sum(s['num_tokens'] for s in summaries), 'shards': summaries,
  }


def build(requests: Sequence[tuple[str, str]], vocabulary_name: str, store_dir: str,
          options: PipelineOptions | None = None) -> dict[tuple[str, str], dict]:
  """Builds the stores of the (task, split) `requests` (registered tasks), keeping complete shards
  of an earlier build; returns each store's manifest. One Beam pipeline builds them all."""
  todo = units(requests, vocabulary_name, store_dir)
  try:
    with beam.Pipeline(options=options or pipeline_options('DirectRunner', num_workers=1)) as p:
      _ = (p | 'Parts' >> beam.Create([cloudpickle.dumps(u) for u in todo])
           | 'Spread' >> beam.Reshuffle()
           | 'Build' >> beam.FlatMap(build_unit, vocabulary_name))
  except errors.UserError as error:
    raise _as_raised(error) from None
  manifests = {}
  for task, split in dict.fromkeys(requests):
    directory = records.store_path(task, split, vocabulary_name, store_dir)
    parts = [u.part for u in todo if u.task == task and split in u.directories]
    summaries = [records.read_json(os.path.join(directory, records.summary_of(
        records.shard_name(part.shard, part.num_shards)))) for part in parts]
    if any(s is None for s in summaries):
      raise errors.UserError(f'The build of task {task!r} split {split!r} did not write every '
                             f'shard in {directory}; run it again to finish it.')
    manifests[task, split] = _manifest(task, split, vocabulary_name, summaries)
    records.write_json(os.path.join(directory, records.MANIFEST), manifests[task, split])
  return manifests
