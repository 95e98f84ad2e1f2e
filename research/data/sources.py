"""Documents from user data: text or JSONL files, prepared TFDS datasets, Hugging Face datasets.

Every iterator yields dicts with `id` (a str, unique within the source and the same on every run),
`text` (a str) and, where the source has them, scalar metadata fields (str, int, float, bool).

- `file_documents`: files matching a glob, local or `gs://` (read through `tf.io.gfile`, so one code
  path serves both), in sorted path order. `format='text'` is one document per file, id = the path;
  `format='jsonl'` is one document per non-blank line, id = `path:line_number` (1-based), text from
  `text_field`, and the object's other scalar fields as metadata (lists, objects and nulls are
  dropped, and so are fields named `id` or `text`, which the document itself uses).
- `tfds_documents`: one split of a TFDS dataset that is already prepared (this code never downloads;
  prepare the data with `tfds build` on the TPU VM or into a GCS bucket beforehand). id =
  `name/split/index`, text = the UTF-8 feature `text_key`, the other scalar features as metadata.
- `hf_documents`: one split of a Hugging Face dataset (`HFDataset`: what `datasets.load_dataset`
  takes, streamed or prepared in its cache, or a directory `save_to_disk` wrote). id =
  `name/split/index` (`disk/split/index`), text = the string field `text_field`, the other scalar
  fields as metadata. `datasets` is an optional package, imported here only when one is read.

Problems the user can fix raise `research.errors.UserError` naming the config key
`data.tasks.<task_name>.<key>` (or the bare argument name when `task_name` is empty) and, once the
data is being read, the file and line or byte offset. Bad arguments fail when the function is
called, before any document is read.
"""

import concurrent.futures
import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from research import errors

FORMATS = ('text', 'jsonl')
_RESERVED_FIELDS = frozenset({'id', 'text'})


def _key(task_name: str, key: str) -> str:
  """The config key of argument `key` of task `task_name` (the bare name outside a task)."""
  return f'data.tasks.{task_name}.{key}' if task_name else key


def _decode(data: bytes, path: str, offset: int, line_number: int = 0) -> str:
  """`data` (which starts at byte `offset` of `path`, on line `line_number` when not 0) as UTF-8,
  or a UserError naming the byte."""
  try:
    return data.decode('utf-8')
  except UnicodeDecodeError as e:
    line = f' (line {line_number})' if line_number else ''
    raise errors.UserError(
        f'{path} is not valid UTF-8 at byte offset {offset + e.start}{line}; re-encode the file '
        f'as UTF-8 (e.g. iconv -f LATIN1 -t UTF-8 {path} > fixed.txt).') from e


def _is_scalar(value: Any) -> bool:
  return isinstance(value, (str, int, float, bool))


def _text_documents(paths: list[str]) -> Iterator[dict]:
  for path in paths:
    with tf.io.gfile.GFile(path, 'rb') as f:
      yield {'id': path, 'text': _decode(f.read(), path, 0)}


def _jsonl_document(line: str, path: str, line_number: int, text_field: str,
                    task_name: str) -> dict:
  """The document of one JSONL line."""
  where = f'{path} line {line_number}'
  try:
    record = json.loads(line)
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{where} is not valid JSON ({e.msg} at column {e.colno}); with '
                           f"{_key(task_name, 'format')}='jsonl' every line must be one JSON "
                           'object.') from e
  if not isinstance(record, dict):
    raise errors.UserError(f'{where} is a JSON {type(record).__name__}, not an object; with '
                           f"{_key(task_name, 'format')}='jsonl' every line must be one JSON "
                           'object.')
  return _record_document(record, f'{path}:{line_number}', where, text_field, task_name)


def _record_document(record: dict, doc_id: str, where: str, text_field: str,
                     task_name: str) -> dict:
  """The document of a record (a JSONL line, a Hugging Face example): its `text_field`, its other
  scalar fields as metadata; `where` names it in the error when it has no such text."""
  if not isinstance(record.get(text_field), str):
    raise errors.UserError(
        f'{where} has no string field {text_field!r} (its fields: {sorted(record)}); set '
        f'{_key(task_name, "text_field")} to the field holding the text.')
  metadata = {k: v for k, v in record.items()
              if k != text_field and k not in _RESERVED_FIELDS and _is_scalar(v)}
  return {**metadata, 'id': doc_id, 'text': record[text_field]}


def _jsonl_documents(paths: list[str], text_field: str, task_name: str) -> Iterator[dict]:
  for path in paths:
    with tf.io.gfile.GFile(path, 'rb') as f:
      offset = 0
      for line_number, raw in enumerate(f, start=1):
        line = _decode(raw, path, offset, line_number)
        offset += len(raw)
        if line.strip():
          yield _jsonl_document(line, path, line_number, text_field, task_name)


STAT_THREADS = 32  # file stats in flight at once (each one a request on gs://)


def file_stats(paths: list[str]) -> list[tuple[str, Any]]:
  """Each of `paths` with its tf.io.gfile stat: on a bucket of 10^4 files a stat is a request, so
  they run STAT_THREADS at a time."""
  with concurrent.futures.ThreadPoolExecutor(STAT_THREADS) as pool:
    return list(zip(paths, pool.map(tf.io.gfile.stat, paths)))


def matching_files(pattern: str, task_name: str = '', key: str = 'pattern') -> list[str]:
  """The files matching glob `pattern` (config key `key`), sorted; fails naming the key when there
  are none."""
  with errors.reaching(pattern, f'{_key(task_name, key)}={pattern!r}'):
    paths = sorted(tf.io.gfile.glob(pattern))
  if not paths:
    raise errors.UserError(f'{_key(task_name, key)}={pattern!r} matches no file; check the '
                           'path (a glob such as /data/*.jsonl or gs://bucket/dir/*.txt).')
  return paths


def _check_format(format: str, task_name: str) -> None:
  if format not in FORMATS:
    raise errors.UserError(f'{_key(task_name, "format")}={format!r} is not a file format; use one '
                           f'of {list(FORMATS)}.')


def read_files(paths: list[str], format: str, text_field: str = 'text',
               task_name: str = '') -> Iterator[dict]:
  """The documents of the files `paths`, in order, one per file or per JSONL line."""
  _check_format(format, task_name)
  if format == 'text':
    return _text_documents(paths)
  return _jsonl_documents(paths, text_field, task_name)


def file_documents(pattern: str, format: str, text_field: str = 'text',
                   task_name: str = '') -> Iterator[dict]:
  """The documents of the files matching glob `pattern` (sorted), one per file or per JSONL line."""
  _check_format(format, task_name)
  return read_files(matching_files(pattern, task_name), format, text_field, task_name)


def _not_prepared(name: str, data_dir: str, task_name: str) -> errors.UserError:
  root = data_dir or tfds.core.constants.get_default_data_dir()
  return errors.UserError(
      f'TFDS dataset {name!r} is not prepared in {root} ({_key(task_name, "data_dir")}='
      f'{data_dir!r}). Nothing is downloaded at run time: prepare it beforehand with '
      f'`tfds build {name} --data_dir={root}` (on the TPU VM, or into a gs:// bucket), or set '
      f'{_key(task_name, "data_dir")} to the directory that holds it.')


def _prepared_builder(name: str, data_dir: str, task_name: str) -> tfds.core.DatasetBuilder:
  """The builder of prepared TFDS dataset `name`, or a UserError saying how to prepare it."""
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
  except tfds.core.DatasetNotFoundError as e:
    raise _not_prepared(name, data_dir, task_name) from e
  except (ValueError, AssertionError) as e:  # TFDS's errors for a bad name, config or version
    raise errors.UserError(f'{_key(task_name, "name")}={name!r} is not a TFDS dataset that can be '
                           f'loaded (form: dataset[/config][:version]): {e}') from e
  if not builder.is_prepared():
    raise _not_prepared(name, data_dir, task_name)
  return builder


def _check_split(builder: tfds.core.DatasetBuilder, name: str, split: str, task_name: str) -> None:
  """Fails unless every split named in `split` (e.g. 'train[:10%]+validation') exists."""
  available = sorted(builder.info.splits.keys())
  named = {part.split('[')[0].strip() for part in split.split('+')}
  if not named <= set(available):
    raise errors.UserError(f'{_key(task_name, "split")}={split!r} names a split that TFDS dataset '
                           f'{name!r} does not have; its splits are {available}.')


def _check_text_key(builder: tfds.core.DatasetBuilder, name: str, text_key: str,
                    task_name: str) -> None:
  features = builder.info.features
  if text_key not in features:
    raise errors.UserError(f'{_key(task_name, "text_key")}={text_key!r} is not a feature of TFDS '
                           f'dataset {name!r}; its features are {sorted(features.keys())}.')
  feature = features[text_key]
  if feature.tf_dtype != tf.string or feature.shape != ():
    raise errors.UserError(f'{_key(task_name, "text_key")}={text_key!r} names a feature of TFDS '
                           f'dataset {name!r} that is not a string ({feature}); pick a text '
                           f'feature of {sorted(features.keys())}.')


def _metadata_value(value: Any) -> str | int | float | bool | None:
  """A scalar feature value as a Python scalar; None for anything else (arrays, nested dicts)."""
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  if isinstance(value, np.generic):
    return value.item()
  return None


def _tfds_examples(dataset: tf.data.Dataset, prefix: str, text_key: str,
                   start: int = 0) -> Iterator[dict]:
  for index, example in enumerate(dataset.as_numpy_iterator(), start):
    doc_id = f'{prefix}/{index}'
    metadata = {k: _metadata_value(v) for k, v in example.items()
                if k != text_key and k not in _RESERVED_FIELDS}
    yield {**{k: v for k, v in metadata.items() if v is not None}, 'id': doc_id,
           'text': _decode(example[text_key], f'TFDS example {doc_id}', 0)}


def tfds_documents(name: str, split: str, text_key: str, data_dir: str = '',
                   task_name: str = '', part: tuple[int, int] | None = None) -> Iterator[dict]:
  """The documents of `split` of prepared TFDS dataset `name`, in the dataset's stored order.

  `name` is 'dataset[/config][:version]' (e.g. 'c4/en:3.1.0'); `split` may slice or join splits
  as TFDS allows ('train[:1%]', 'train+validation'); `data_dir` '' is TFDS's default directory.
  `part` (start, end) reads only those examples of a plain split (`tfds_parts`); their ids are
  the ones they have in the whole split.
  """
  builder = _prepared_builder(name, data_dir, task_name)
  _check_split(builder, name, split, task_name)
  _check_text_key(builder, name, text_key, task_name)
  start, read = (0, split) if part is None else (part[0], f'{split}[{part[0]}:{part[1]}]')
  dataset = builder.as_dataset(split=read, shuffle_files=False)
  return _tfds_examples(dataset, f'{name}/{split}', text_key, start)


def tfds_parts(name: str, split: str, data_dir: str, part_bytes: int,
               task_name: str = '') -> list[tuple[int, int] | None]:
  """`split` of prepared TFDS dataset `name` as consecutive (start, end) example ranges of about
  `part_bytes` each, which builder workers read in parallel; [None] (the whole split, one part)
  for a small split or a sliced or joined one ('train[:5%]', 'train+validation')."""
  builder = _prepared_builder(name, data_dir, task_name)
  _check_split(builder, name, split, task_name)
  if split not in builder.info.splits:
    return [None]
  info = builder.info.splits[split]
  count = min(info.num_examples, -(-info.num_bytes // part_bytes))
  if count <= 1:
    return [None]
  bounds = [info.num_examples * k // count for k in range(count + 1)]
  return list(zip(bounds[:-1], bounds[1:]))


def tfds_bytes(name: str, data_dir: str, task_name: str = '') -> int:
  """The bytes of every split of prepared TFDS dataset `name`."""
  return int(_prepared_builder(name, data_dir, task_name).info.dataset_size)


# A Hugging Face dataset whose size is not known counts as large: launch.build_data builds its
# store (training does not).
HF_UNKNOWN_BYTES = 2**62


@dataclasses.dataclass(frozen=True)
class HFDataset:
  """A Hugging Face dataset: `name` ('allenai/c4', or a builder such as 'json' or 'parquet' with
  `data_files`), `config`, `revision` and `data_files` (a glob, a list of them, or {split: glob})
  as `datasets.load_dataset` takes them; or `disk`, a directory `save_to_disk` wrote (a Dataset,
  read as split 'train', or a DatasetDict). `streaming` reads examples as they arrive instead of
  downloading and preparing the whole dataset first (for large sets)."""
  name: str = ''
  config: str = ''
  revision: str = ''
  data_files: str | list | dict | None = None
  disk: str = ''
  streaming: bool = False
  task_name: str = ''


def import_datasets():
  """The `datasets` package, or a UserError saying to install it (only Hugging Face tasks need it)."""
  return errors.optional_package(
      'datasets', "A data task with source='hf' needs the Hugging Face datasets package, which is "
      'not installed; pip install datasets.')


def _plain_data_files(data_files):
  """`data_files` with tuples (a ConfigDict's sequences) as the lists `datasets` takes."""
  if isinstance(data_files, dict):
    return {split: _plain_data_files(files) for split, files in data_files.items()}
  return list(data_files) if isinstance(data_files, (list, tuple)) else data_files


def _hf_split(dataset: HFDataset, split: str, split_key: str):
  """Split `split` (config key `split_key`) of `dataset`: a datasets.Dataset or IterableDataset."""
  datasets = import_datasets()
  if dataset.disk:
    try:
      loaded = datasets.load_from_disk(dataset.disk)
    except FileNotFoundError as e:
      raise errors.UserError(f'{_key(dataset.task_name, "disk")}={dataset.disk!r} is not a '
                             'directory that datasets save_to_disk wrote; give that '
                             'directory.') from e
    splits = list(loaded) if isinstance(loaded, datasets.DatasetDict) else ['train']
    if split not in splits:
      raise errors.UserError(f'{_key(dataset.task_name, split_key)}={split!r} is not a split of '
                             f'the dataset in {dataset.disk}; its splits are {splits}.')
    return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
  try:
    return datasets.load_dataset(dataset.name, dataset.config or None, split=split,
                                 data_files=_plain_data_files(dataset.data_files),
                                 revision=dataset.revision or None, streaming=dataset.streaming)
  # Not found, unreachable (or offline), a bad split or config; StopIteration: data_files that
  # match no file (datasets 5.2).
  except (OSError, ValueError, StopIteration) as e:
    raise errors.UserError(
        f'datasets.load_dataset could not load {_key(dataset.task_name, "name")}={dataset.name!r} '
        f'(config {dataset.config!r}, {split_key} {split!r}, data_files {dataset.data_files!r}): '
        f'{(str(e).strip().splitlines() or [type(e).__name__])[0]}') from e


def _hf_examples(examples, prefix: str, text_field: str, task_name: str) -> Iterator[dict]:
  for index, example in enumerate(examples):
    doc_id = f'{prefix}/{index}'
    yield _record_document(example, doc_id, f'Example {doc_id}', text_field, task_name)


def hf_documents(dataset: HFDataset, split: str, text_field: str = 'text',
                 split_key: str = 'train_split') -> Iterator[dict]:
  """The documents of split `split` (config key `split_key`) of `dataset`, in its stored order.
  A dataset that is not found, cannot be reached or lacks the split fails here, before any
  document is read."""
  examples = _hf_split(dataset, split, split_key)
  return _hf_examples(examples, f'{dataset.name or dataset.disk}/{split}', text_field,
                      dataset.task_name)


def hf_files(dataset: HFDataset) -> list[tuple[str, int, int]]:
  """(path, bytes, mtime in ns) of the local or gs:// files `dataset` is read from: those in
  `disk`, or those its `data_files` match (none for a dataset on the Hub)."""
  if dataset.disk:
    paths = [os.path.join(root, name) for root, _, names in tf.io.gfile.walk(dataset.disk)
             for name in names]
  else:
    files = _plain_data_files(dataset.data_files) or []
    patterns = [p for group in (files.values() if isinstance(files, dict) else [files])
                for p in ([group] if isinstance(group, str) else group)]
    paths = [path for pattern in patterns if '://' not in pattern or pattern.startswith('gs://')
             for path in tf.io.gfile.glob(pattern)]
  return [(path, stat.length, stat.mtime_nsec) for path, stat in file_stats(sorted(set(paths)))]


def hf_bytes(dataset: HFDataset) -> int:
  """The bytes of `dataset`: of its local or gs:// files, else the size the Hub states for it;
  HF_UNKNOWN_BYTES where neither is known."""
  files = hf_files(dataset)
  if files:
    return sum(length for _, length, _ in files)
  try:
    builder = import_datasets().load_dataset_builder(dataset.name, dataset.config or None,
                                                     revision=dataset.revision or None)
  except (OSError, ValueError):
    return HF_UNKNOWN_BYTES  # loading its documents says why, naming the key
  return builder.info.dataset_size or HF_UNKNOWN_BYTES
