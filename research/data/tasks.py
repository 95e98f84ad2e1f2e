"""Tasks by name: document sources registered as seqio Tasks, each with train and validation splits.

Built in, needing no download: `stdlib_code` and `stdlib_prose` (corpora.py) and the synthetic
skill corpora `arithmetic`, `lego` and `biographies` (synthetic/) with their default parameters.
An experiment defines more in `config.data.tasks`, a ConfigDict of name -> spec with a `source`:

    files        pattern, format ('text' or 'jsonl'), text_field            (sources.file_documents)
    tfds         name ('c4/en:3.1.0'), text_key, data_dir, train_split, validation_split
    arithmetic | lego | biographies    seed, num_documents and the generator's own parameters
    subset       task, fraction or num_documents, seed; or scores, score_field, keep (_subset_spec)

Every document is a dict with `id`, `text` and scalar metadata. A file or stdlib document is in the
validation split when the md5 hash of its id falls in the lowest `VALIDATION_FRACTION` of the hash
range, so the split is the same on every machine and in every process; TFDS datasets and the
synthetic generators have splits of their own. Each task has a fingerprint of everything that
changes its documents (source, parameters, generator version, interpreter version for the stdlib
corpora, file sizes and times, stated once when the task is registered), which the document store
puts in its cache key.
"""

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections
import seqio
import tensorflow as tf

from research import errors
from research.data import corpora, sources, vocabularies
from research.data.synthetic import arithmetic, biographies, lego

VALIDATION_FRACTION = 0.05
SPLITS = ('train', 'validation')
GENERATORS = {m.NAME: m for m in (arithmetic, lego, biographies)}
_FILE_KEYS = {'source', 'pattern', 'format', 'text_field'}
_TFDS_KEYS = {'source', 'name', 'text_key', 'data_dir', 'train_split', 'validation_split'}
_SUBSET_KEYS = {'source', 'task', 'fraction', 'num_documents', 'seed', 'scores', 'score_field',
                'keep'}


PART_BYTES = 256 * 2**20  # source bytes per part: what one builder worker reads alone
STAT_THREADS = 32  # file stats in flight at once (each one a request on gs://)


@dataclasses.dataclass(frozen=True)
class Part:
  """A piece of a task's source that one builder worker reads alone, in order, into shard `shard`
  of `num_shards` of each split in `splits` (research/data/build.py). Two splits: a source without
  splits of its own, whose documents go where `is_validation` sends them."""
  splits: tuple[str, ...]
  shard: int
  num_shards: int
  read: Callable[[], Iterator[dict]]


def _split_parts(documents: Callable[[str], Iterator[dict]]) -> Callable[[], list[Part]]:
  """One part per split, reading the whole split: sources that are built in (small)."""
  return lambda: [Part((split,), 0, 1, functools.partial(documents, split)) for split in SPLITS]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
  """A task's documents by split, the fingerprint of everything that changes them, the parts a
  parallel build reads, and the bytes of its source (0 for a built-in source: small, generated
  here; research/data/store.py builds a store on first use only when this is small)."""
  name: str
  documents: Callable[[str], Iterator[dict]]
  fingerprint: Callable[[], str]
  parts: Callable[[], list[Part]] | None = None  # None: `_split_parts(documents)`
  source_bytes: Callable[[], int] = lambda: 0

  def build_parts(self) -> list[Part]:
    return (self.parts or _split_parts(self.documents))()


_SPECS: dict[str, TaskSpec] = {}


def is_validation(doc_id: str) -> bool:
  """True when document `doc_id` belongs to the validation split (stable md5 hash)."""
  digest = hashlib.md5(doc_id.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') < VALIDATION_FRACTION * 2**64


def _check_split(name: str, split: str) -> None:
  if split not in SPLITS:
    raise errors.UserError(f'Unknown split {split!r} of task {name!r}; use one of {list(SPLITS)}.')


def _hash_split(documents: Callable[[], Iterator[dict]]) -> Callable[[str], Iterator[dict]]:
  """Splits a source without splits of its own by the md5 hash of each document id."""
  def split_documents(split: str) -> Iterator[dict]:
    want_validation = split == 'validation'
    return (d for d in documents() if is_validation(d['id']) == want_validation)
  return split_documents


def _whole_part(documents: Callable[[], Iterator[dict]]) -> Callable[[], list[Part]]:
  """A source without splits read as one part, each document going to its hash split."""
  return lambda: [Part(SPLITS, 0, 1, documents)]


@functools.cache
def _stdlib_documents(corpus: str) -> tuple[dict, ...]:
  """All documents of a stdlib corpus, read once per process (the prose corpus parses ASTs)."""
  pairs = corpora.stdlib_code_documents() if corpus == 'stdlib_code' else (
      corpora.stdlib_prose_documents())
  return tuple({'id': doc_id, 'text': text} for doc_id, text in pairs)


def _stdlib_spec(corpus: str) -> TaskSpec:
  documents = lambda: iter(_stdlib_documents(corpus))
  return TaskSpec(corpus, _hash_split(documents), lambda: f'{corpus} python {corpora.PYTHON_VERSION}',
                  _whole_part(documents))


def _check_keys(name: str, spec: dict, allowed: set[str]) -> None:
  unknown = sorted(set(spec) - allowed)
  if unknown:
    raise errors.UserError(f'data.tasks.{name} has unknown keys {unknown}; a {spec["source"]!r} '
                           f'task takes {sorted(allowed)}.')


def _files_spec(name: str, spec: dict) -> TaskSpec:
  _check_keys(name, spec, _FILE_KEYS)
  if 'pattern' not in spec:
    raise errors.UserError(f'data.tasks.{name}.pattern is missing; set it to a glob of text or '
                           'JSONL files.')
  args = (spec.get('format', 'text'), spec.get('text_field', 'text'), name)

  @functools.cache
  def files() -> list[tuple[str, Any]]:
    """Each matching file with its stat, listed once per registration: on a bucket of 10^4 files
    a stat is a request, so they run STAT_THREADS at a time and the fingerprint, the parts and the
    source size share them."""
    paths = sources.matching_files(spec['pattern'], name)
    with concurrent.futures.ThreadPoolExecutor(STAT_THREADS) as pool:
      return list(zip(paths, pool.map(tf.io.gfile.stat, paths)))

  def fingerprint() -> str:
    stats = [(p, stat.length, stat.mtime_nsec) for p, stat in files()]
    return json.dumps({'spec': spec, 'files': stats}, sort_keys=True)

  def parts() -> list[Part]:
    """Runs of consecutive files of about PART_BYTES each (a larger file is a part alone)."""
    runs, size = [], 0
    for path, stat in files():
      if not runs or size + stat.length > PART_BYTES:
        runs.append([])
        size = 0
      runs[-1].append(path)
      size += stat.length
    return [Part(SPLITS, k, len(runs), functools.partial(sources.read_files, run, *args))
            for k, run in enumerate(runs)]

  return TaskSpec(name, _hash_split(lambda: sources.file_documents(spec['pattern'], *args)),
                  fingerprint, parts, lambda: sum(stat.length for _, stat in files()))


def _tfds_spec(name: str, spec: dict) -> TaskSpec:
  _check_keys(name, spec, _TFDS_KEYS)
  for key in ('name', 'text_key'):
    if key not in spec:
      raise errors.UserError(f'data.tasks.{name}.{key} is missing; a tfds task needs name and '
                             'text_key.')
  splits = {'train': spec.get('train_split', 'train'),
            'validation': spec.get('validation_split', 'validation')}
  data_dir = spec.get('data_dir', '')
  read = functools.partial(sources.tfds_documents, spec['name'], text_key=spec['text_key'],
                           data_dir=data_dir, task_name=name)

  def parts() -> list[Part]:
    ranges = {split: sources.tfds_parts(spec['name'], splits[split], data_dir, PART_BYTES, name)
              for split in SPLITS}
    return [Part((split,), k, len(ranges[split]),
                 functools.partial(read, splits[split], part=part))
            for split in SPLITS for k, part in enumerate(ranges[split])]

  return TaskSpec(name, lambda split: read(splits[split]), lambda: json.dumps(spec, sort_keys=True),
                  parts, lambda: sources.tfds_bytes(spec['name'], data_dir, name))


def _generator_spec(name: str, spec: dict) -> TaskSpec:
  generator = GENERATORS[spec['source']]
  params = {k: v for k, v in spec.items() if k != 'source'}
  seed = params.pop('seed', 0)
  num_documents = params.pop('num_documents', generator.PARAMS['num_documents'])
  generator.documents('train', seed, num_documents, task_name=name, **params)  # checks params now
  return TaskSpec(
      name,
      lambda split: generator.documents(split, seed, num_documents, task_name=name, **params),
      lambda: json.dumps({'spec': spec, 'version': generator.VERSION}, sort_keys=True))


def _subset_ids(documents: list[dict], spec: dict, name: str) -> set[str]:
  """The ids a subset task keeps: the best `fraction` or `num_documents` by the scores file, or a
  seeded random sample of them."""
  count = spec.get('num_documents') or round(spec.get('fraction', 0) * len(documents))
  if not 0 < count <= len(documents):
    raise errors.UserError(f'data.tasks.{name} keeps {count} of the {len(documents)} training '
                           f'documents of {spec["task"]!r}; set fraction in (0, 1] or '
                           f'num_documents in [1, {len(documents)}].')
  if 'scores' not in spec:
    seed = spec.get('seed', 0)
    rank = lambda doc: hashlib.md5(f'{seed}:{doc["id"]}'.encode('utf-8')).digest()
    return {doc['id'] for doc in sorted(documents, key=rank)[:count]}
  field, keep = spec.get('score_field', 'nll'), spec.get('keep', 'lowest')
  if keep not in ('lowest', 'highest'):
    raise errors.UserError(f"data.tasks.{name}.keep={keep!r} must be 'lowest' or 'highest'.")
  manifest_path = spec['scores'] + '.manifest.json'  # launch.score's; a hand-made file may lack it
  if tf.io.gfile.exists(manifest_path):
    with tf.io.gfile.GFile(manifest_path) as f:
      manifest = json.load(f)
    if (manifest.get('task'), manifest.get('split')) != (spec['task'], 'train'):
      raise errors.UserError(
          f"{spec['scores']} scores task {manifest.get('task')!r} split {manifest.get('split')!r} "
          f'(its manifest), but data.tasks.{name} keeps training documents of {spec["task"]!r}; '
          f'score them: python -m launch.score --checkpoint=DIR --task={spec["task"]} '
          f'--out={spec["scores"]}.')
  scores = {}
  with tf.io.gfile.GFile(spec['scores']) as f:
    for number, line in enumerate(f, 1):
      record = json.loads(line)
      if 'id' not in record or field not in record:
        raise errors.UserError(f'{spec["scores"]} line {number} lacks "id" or "{field}" '
                               f'(data.tasks.{name}.score_field); give the JSONL of launch.score.')
      scores[record['id']] = float(record[field])
  scored = [doc['id'] for doc in documents if doc['id'] in scores]
  if len(scored) < count:
    raise errors.UserError(f'{spec["scores"]} scores {len(scored)} of the training documents of '
                           f'{spec["task"]!r}, fewer than the {count} that data.tasks.{name} keeps; '
                           'score that task\'s train split.')
  ranked = sorted(scored, key=lambda doc_id: scores[doc_id], reverse=keep == 'highest')
  return set(ranked[:count])


def _subset_documents(base: TaskSpec, spec: dict, name: str, split: str) -> Iterator[dict]:
  """The documents of subset task `name` (of task `base`) in `split`."""
  if split != 'train':
    return base.documents(split)
  train = list(base.documents('train'))
  kept = _subset_ids(train, spec, name)
  return (doc for doc in train if doc['id'] in kept)


def _subset_spec(name: str, spec: dict) -> TaskSpec:
  """Part of another task's training documents, its validation split unchanged: a random sample
  (`fraction` or `num_documents`, `seed`) or the best by a per-document score (`scores`, a JSONL
  of `id` and `score_field` such as launch.score writes, refused when its manifest, if any, scores
  another task or split; `keep` 'lowest' or 'highest'). Pruning a task that keeps its name, by a
  score checked against the run's vocabulary too, is `data.select` (research/data/selection.py).
  Trained on for several epochs, a small subset of a new domain is one of the stability-gap strategies of
  continual pretraining (Guo et al. 2024, "Efficient Continual Pre-training by Mitigating the
  Stability Gap", arXiv 2406.14833)."""
  _check_keys(name, spec, _SUBSET_KEYS)
  if 'task' not in spec or ('fraction' in spec) == ('num_documents' in spec):
    raise errors.UserError(f'data.tasks.{name} needs task (the task to take documents from) and '
                           'one of fraction or num_documents.')

  def documents(split: str) -> Iterator[dict]:
    return _subset_documents(_SPECS[spec['task']], spec, name, split)

  def parts() -> list[Part]:  # the task subsetted, resolved here: a build worker has no registry
    read = functools.partial(_subset_documents, _SPECS[spec['task']], spec, name)
    return [Part((split,), 0, 1, functools.partial(read, split)) for split in SPLITS]

  def fingerprint() -> str:
    scores = spec.get('scores')
    stat = tf.io.gfile.stat(scores) if scores else None
    return json.dumps({'spec': spec, 'task': _SPECS[spec['task']].fingerprint(),
                       'scores': [stat.length, stat.mtime_nsec] if stat else None}, sort_keys=True)

  return TaskSpec(name, documents, fingerprint, parts,
                  lambda: _SPECS[spec['task']].source_bytes())


def spec_from_config(name: str, spec: ml_collections.ConfigDict | dict) -> TaskSpec:
  """The TaskSpec that `config.data.tasks.<name>` describes."""
  spec = spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else dict(spec)
  source = spec.get('source')
  if source == 'files':
    return _files_spec(name, spec)
  if source == 'tfds':
    return _tfds_spec(name, spec)
  if source in GENERATORS:
    return _generator_spec(name, spec)
  if source == 'subset':
    return _subset_spec(name, spec)
  raise errors.UserError(f'data.tasks.{name}.source={source!r} is not a known source; use one of '
                         f"{sorted(['files', 'tfds', 'subset', *GENERATORS])}.")


def _dataset_fn(spec: TaskSpec) -> Callable[..., tf.data.Dataset]:
  """A seqio dataset function yielding {'id', 'text', 'metadata' (JSON)} for one split."""

  def dataset_fn(split: str, shuffle_files: bool) -> tf.data.Dataset:
    del shuffle_files  # Documents are always produced in source order; sampling is seeded later.
    _check_split(spec.name, split)

    def examples():
      for document in spec.documents(split):
        metadata = {k: v for k, v in document.items() if k not in ('id', 'text')}
        yield {'id': document['id'], 'text': document['text'],
               'metadata': json.dumps(metadata, sort_keys=True)}

    return tf.data.Dataset.from_generator(
        examples, output_signature={k: tf.TensorSpec([], tf.string)
                                    for k in ('id', 'text', 'metadata')})

  return dataset_fn


def register(spec: TaskSpec, vocabulary: seqio.Vocabulary | None = None) -> None:
  """Registers (or re-registers) `spec` as a seqio Task tokenizing with `vocabulary` (bytes)."""
  _SPECS[spec.name] = spec
  if spec.name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(spec.name)
  seqio.TaskRegistry.add(
      spec.name,
      source=seqio.FunctionDataSource(_dataset_fn(spec), splits=SPLITS),
      output_features={'targets': seqio.Feature(vocabulary or vocabularies.make_vocabulary('byte'),
                                                add_eos=True)},
      preprocessors=[
          functools.partial(seqio.preprocessors.rekey,
                            key_map={'id': 'id', 'targets': 'text', 'metadata': 'metadata'}),
          functools.partial(seqio.preprocessors.tokenize, copy_pretokenized=False),
          seqio.preprocessors.append_eos_after_trim,
      ])


def register_tasks() -> None:
  """Registers the built-in tasks that are not registered yet."""
  for corpus in ('stdlib_code', 'stdlib_prose'):
    if corpus not in _SPECS:
      register(_stdlib_spec(corpus))
  for name in GENERATORS:
    if name not in _SPECS:
      register(spec_from_config(name, {'source': name}))


def register_config_tasks(data_config: ml_collections.ConfigDict) -> None:
  """Registers every task that `config.data.tasks` defines (replacing one of the same name)."""
  for name, spec in data_config.tasks.items():
    register(spec_from_config(name, spec))
  for name, spec in data_config.tasks.items():  # subsets name a task defined anywhere
    if spec.get('source') == 'subset':
      check_task(spec['task'], f'data.tasks.{name}.task')


def check_task(name: str, where: str = 'A data mixture (data.mixture, data.stages or '
               'data.replay.mixture)') -> None:
  """Fails with the close matches unless task `name` (named by `where`) is registered."""
  if name not in _SPECS:
    import difflib  # only on the error path
    close = difflib.get_close_matches(name, list(_SPECS), n=3, cutoff=0.5)
    hint = f'did you mean {close}? ' if close else ''
    raise errors.UserError(f'{where} names an unknown task {name!r}; {hint}the registered '
                           f'tasks are {sorted(_SPECS)} (define more in data.tasks).')


def get_task(name: str, vocabulary: seqio.Vocabulary | None = None) -> seqio.Task:
  """The seqio Task `name`, tokenizing with `vocabulary` (re-registered if it tokenized otherwise)."""
  check_task(name)
  task = seqio.TaskRegistry.get(name)
  if vocabulary is not None and task.output_features['targets'].vocabulary != vocabulary:
    register(_SPECS[name], vocabulary)
    task = seqio.TaskRegistry.get(name)
  return task


def task_spec(name: str) -> TaskSpec:
  """The TaskSpec of registered task `name`."""
  check_task(name)
  return _SPECS[name]


def fingerprint(name: str) -> str:
  """Everything that changes task `name`'s documents, as a string."""
  check_task(name)
  return _SPECS[name].fingerprint()


def split_documents(name: str, split: str) -> list[tuple[str, str]]:
  """The (doc_id, text) pairs of task `name` in `split` ('train' or 'validation')."""
  check_task(name)
  _check_split(name, split)
  return [(d['id'], d['text']) for d in _SPECS[name].documents(split)]


register_tasks()
