"""Tasks by name: document sources registered as seqio Tasks, each with train and validation splits.

Built in, needing no download: `stdlib_code` and `stdlib_prose` (corpora.py) and the synthetic
skill corpora `arithmetic`, `lego`, `biographies`, `copying`, `icl_regression`,
`icl_classification`, `reversal`, `two_hop`, `sorting`, `associative_recall`, `set_disjointness`,
`scan`, `zipf_facts`, `xor_clusters` and `skill_mix` (synthetic/) with their default parameters.
An experiment defines more in `config.data.tasks`, a ConfigDict of name -> spec with a `source`:

    files        pattern, format ('text' or 'jsonl'), text_field            (sources.file_documents)
                 and validation_pattern (held-out files) or validation_fraction
    tfds         name ('c4/en:3.1.0'), text_key, data_dir, train_split, validation_split
    hf           name, config, revision, data_files; or disk (save_to_disk's directory); text_field,
                 streaming, train_split, validation_split or validation_fraction        (_hf_spec)
    arithmetic | lego | biographies | copying | icl_regression | icl_classification | reversal
    | two_hop | sorting | associative_recall | set_disjointness | scan | zipf_facts
    | xor_clusters | skill_mix
                 seed, num_documents and the generator's own parameters
    subset       task, fraction or num_documents, seed; or scores, score_field, keep (_subset_spec)
    seqio        task (a registered seqio Task), train_split, validation_split   (_seqio_spec)

A Task or Mixture in seqio's TaskRegistry or MixtureRegistry (registered by the experiment file, or
by a module of `data.seqio_modules`) is a task by its own name too, with splits 'train' and
'validation'. A seqio Task's examples are read through its own source, preprocessors and output
features (which tokenize them), each one document of its token features ('inputs', then
'targets'); the store keeps those ids, so its vocabulary must be the run's (`check_vocabulary`).
Our packing and objectives come after, as for every task. A Mixture in a mixture stands for its
Tasks, its weight shared by their mixing rates (`expand_mixtures`).

Every document is a dict with `id`, `text` and scalar metadata. A file or stdlib document is in the
validation split when the md5 hash of its id falls in the lowest `VALIDATION_FRACTION` of the hash
range (a files task's `validation_fraction`), so the split is the same on every machine and in every
process, unless a files task names its held-out files (`validation_pattern`); TFDS datasets and the
synthetic generators have splits of their own. Each task has a fingerprint of everything that
changes its documents (source, parameters, generator version, interpreter version for the stdlib
corpora, file sizes and times, stated once when the task is registered), which the document store
puts in its cache key.
"""

import dataclasses
import difflib
import functools
import hashlib
import importlib
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import ml_collections
import numpy as np
import seqio
import tensorflow as tf

from research import errors
from research.data import corpora, sources, vocabularies
from research.data.synthetic import (arithmetic, associative_recall, biographies, copying,
                                     icl_classification, icl_regression, lego, reversal, scan,
                                     set_disjointness, skill_mix, sorting, two_hop, xor_clusters,
                                     zipf_facts)

VALIDATION_FRACTION = 0.05
SPLITS = ('train', 'validation')
GENERATORS = {m.NAME: m for m in (arithmetic, lego, biographies, copying, icl_regression,
                                   icl_classification, reversal, two_hop, sorting,
                                   associative_recall, set_disjointness, scan, zipf_facts,
                                   xor_clusters, skill_mix)}
_FILE_KEYS = {'source', 'pattern', 'format', 'text_field', 'validation_pattern',
              'validation_fraction'}
_TFDS_KEYS = {'source', 'name', 'text_key', 'data_dir', 'train_split', 'validation_split'}
_HF_KEYS = {'source', 'name', 'config', 'revision', 'data_files', 'disk', 'text_field', 'streaming',
            'train_split', 'validation_split', 'validation_fraction'}
_SEQIO_KEYS = {'source', 'task', 'train_split', 'validation_split'}
_SUBSET_KEYS = {'source', 'task', 'fraction', 'num_documents', 'seed', 'scores', 'score_field',
                'keep'}


PART_BYTES = 256 * 2**20  # source bytes per part: what one builder worker reads alone


@dataclasses.dataclass(frozen=True)
class Part:
  """A piece of a task's source that one builder worker reads alone, in order, into shard `shard`
  of `num_shards` of each split in `splits` (research/data/build.py). Two splits: a source without
  splits of its own, whose documents go where `is_validation` (with `validation_fraction`) sends
  them."""
  splits: tuple[str, ...]
  shard: int
  num_shards: int
  read: Callable[[], Iterator[dict]]
  validation_fraction: float = VALIDATION_FRACTION


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
  # How the validation split is chosen and changed, for the error an empty one gives.
  holdout: str = 'remove it from the mixture and eval.tasks, or give it validation documents'
  # A source of token ids (a seqio Task, tokenized by its own features; documents hold `tokens`):
  # their vocabulary. None: documents are text, tokenized by the run's vocabulary.
  tokens_vocabulary: Callable[[], seqio.Vocabulary] | None = None

  def build_parts(self) -> list[Part]:
    return (self.parts or _split_parts(self.documents))()


_SPECS: dict[str, TaskSpec] = {}


def is_validation(doc_id: str, fraction: float = VALIDATION_FRACTION) -> bool:
  """True when document `doc_id` belongs to the validation split (stable md5 hash): the ids whose
  hash falls in the lowest `fraction` of the range."""
  digest = hashlib.md5(doc_id.encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big') < fraction * 2**64


def _check_split(name: str, split: str) -> None:
  if split not in SPLITS:
    raise errors.UserError(f'Unknown split {split!r} of task {name!r}; use one of {list(SPLITS)}.')


def _hash_split(documents: Callable[[], Iterator[dict]],
                fraction: float = VALIDATION_FRACTION) -> Callable[[str], Iterator[dict]]:
  """Splits a source without splits of its own by the md5 hash of each document id."""
  def split_documents(split: str) -> Iterator[dict]:
    want_validation = split == 'validation'
    return (d for d in documents() if is_validation(d['id'], fraction) == want_validation)
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


def _validation_fraction(name: str, spec: dict) -> float:
  """A files task's hash holdout (`validation_fraction`), checked; refused beside
  `validation_pattern`, which names the held-out files instead."""
  fraction = spec.get('validation_fraction', VALIDATION_FRACTION)
  if 'validation_pattern' in spec and 'validation_fraction' in spec:
    raise errors.UserError(f'data.tasks.{name} sets both validation_pattern and '
                           'validation_fraction; keep one (held-out files, or the share of the '
                           'documents of pattern held out by the md5 of their ids).')
  if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
    raise errors.UserError(f'data.tasks.{name}.validation_fraction={fraction!r} must be a number '
                           'in (0, 1): the share of the documents held out for validation.')
  return fraction


def _files_spec(name: str, spec: dict) -> TaskSpec:
  """A task of the files matching `pattern`: validation documents are the files matching
  `validation_pattern` when it is set, else the documents of `pattern` whose id's md5 falls in the
  lowest `validation_fraction`."""
  _check_keys(name, spec, _FILE_KEYS)
  if 'pattern' not in spec:
    raise errors.UserError(f'data.tasks.{name}.pattern is missing; set it to a glob of text or '
                           'JSONL files.')
  fraction = _validation_fraction(name, spec)
  args = (spec.get('format', 'text'), spec.get('text_field', 'text'), name)
  keys = {'train': 'pattern', 'validation': 'validation_pattern'}
  held_out = 'validation_pattern' in spec

  @functools.cache
  def files(key: str) -> list[tuple[str, Any]]:
    """Each file matching `spec[key]` with its stat (sources.file_stats), listed once per
    registration: the fingerprint, the parts and the source size share them."""
    paths = sources.matching_files(spec[key], name, key)
    if key == 'validation_pattern':
      shared = sorted(set(paths) & {path for path, _ in files('pattern')})
      if shared:
        raise errors.UserError(f'data.tasks.{name}.validation_pattern={spec[key]!r} matches '
                               f'{len(shared)} files that pattern matches too ({shared[0]}, ...); '
                               'held-out files must not be trained on.')
    return sources.file_stats(paths)

  def fingerprint() -> str:
    stats = {key: [(p, stat.length, stat.mtime_nsec) for p, stat in files(key)]
             for key in keys.values() if key in spec}
    return json.dumps({'spec': spec, 'files': stats['pattern'],
                       **({'validation_files': stats['validation_pattern']} if held_out else {})},
                      sort_keys=True)

  def runs(key: str) -> list[list[str]]:
    """Runs of consecutive files of about PART_BYTES each (a larger file is a run alone)."""
    result, size = [], 0
    for path, stat in files(key):
      if not result or size + stat.length > PART_BYTES:
        result.append([])
        size = 0
      result[-1].append(path)
      size += stat.length
    return result

  def parts() -> list[Part]:
    read = lambda run: functools.partial(sources.read_files, run, *args)
    if not held_out:
      pattern_runs = runs('pattern')
      return [Part(SPLITS, k, len(pattern_runs), read(run), fraction)
              for k, run in enumerate(pattern_runs)]
    return [Part((split,), k, len(split_runs), read(run))
            for split, split_runs in ((split, runs(keys[split])) for split in SPLITS)
            for k, run in enumerate(split_runs)]

  def documents(split: str) -> Iterator[dict]:
    if held_out:
      return sources.read_files([path for path, _ in files(keys[split])], *args)
    everything = lambda: sources.read_files([path for path, _ in files('pattern')], *args)
    return _hash_split(everything, fraction)(split)

  holdout = (f'its validation documents are the files of data.tasks.{name}.validation_pattern'
             if held_out else
             f'a files task holds out the documents whose id\'s md5 falls in the lowest '
             f'{fraction:.0%} (data.tasks.{name}.validation_fraction), and none of these did; set '
             f'data.tasks.{name}.validation_pattern to a glob of held-out files (e.g. one file of '
             'yours kept out of pattern), or a larger validation_fraction')
  return TaskSpec(name, documents, fingerprint, parts,
                  lambda: sum(stat.length for key in keys.values() if key in spec
                              for _, stat in files(key)), holdout)


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


def _hf_spec(name: str, spec: dict) -> TaskSpec:
  """A Hugging Face dataset (sources.HFDataset): `name` with `config`, `revision` and
  `data_files` as datasets.load_dataset takes them, or `disk`, a directory save_to_disk wrote;
  `streaming` for a set too large to prepare whole. Validation documents are split
  `validation_split` when it is set, else the documents of `train_split` whose id's md5 falls in
  the lowest `validation_fraction`, as in a files task. A store is built from each split by one
  builder worker."""
  _check_keys(name, spec, _HF_KEYS)
  if ('name' in spec) == ('disk' in spec):
    raise errors.UserError(f'data.tasks.{name} needs one of name (a dataset datasets.load_dataset '
                           'loads) or disk (a directory save_to_disk wrote), not both or neither.')
  held_out = bool(spec.get('validation_split'))
  if held_out and 'validation_fraction' in spec:
    raise errors.UserError(f'data.tasks.{name} sets both validation_split and validation_fraction; '
                           'keep one (a split of the dataset, or the share of train_split held out '
                           'by the md5 of the ids).')
  fraction = _validation_fraction(name, spec)
  sources.import_datasets()  # a missing package fails when the task is registered
  dataset = sources.HFDataset(
      **{key: spec[key] for key in ('name', 'config', 'revision', 'data_files', 'disk', 'streaming')
         if key in spec}, task_name=name)
  read = functools.partial(sources.hf_documents, dataset, text_field=spec.get('text_field', 'text'))
  train = lambda: read(spec.get('train_split', 'train'))

  def documents(split: str) -> Iterator[dict]:
    if split == 'validation' and held_out:
      return read(spec['validation_split'], split_key='validation_split')
    return train() if held_out else _hash_split(train, fraction)(split)

  def fingerprint() -> str:
    same = {k: v for k, v in spec.items() if k != 'streaming'}  # streaming reads the same documents
    return json.dumps({'spec': same, 'files': sources.hf_files(dataset)}, sort_keys=True)

  holdout = (f'its validation documents are split data.tasks.{name}.validation_split' if held_out
             else f'an hf task without validation_split holds out the documents whose id\'s md5 '
             f'falls in the lowest {fraction:.0%} (data.tasks.{name}.validation_fraction), and '
             f'none of these did; set data.tasks.{name}.validation_split to a split of the '
             'dataset, or a larger validation_fraction')
  parts = None if held_out else lambda: [Part(SPLITS, 0, 1, train, fraction)]
  return TaskSpec(name, documents, fingerprint, parts, lambda: sources.hf_bytes(dataset), holdout)


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


_TOKEN_FEATURES = ('inputs', 'targets')  # a seqio example's features that make its document
_SEQIO_MODULES: list[str] = []  # the modules of data.seqio_modules imported in this process


def _seqio_task(task_name: str, key: str) -> seqio.Task:
  """Registered seqio Task `task_name` (named by config key `key`)."""
  if task_name not in seqio.TaskRegistry.names():
    kind = 'a Mixture, not a Task' if task_name in seqio.MixtureRegistry.names() else (
        'not registered (register it in the experiment file or a module of data.seqio_modules)')
    raise errors.UserError(f'{key}={task_name!r} names a seqio task, but it is {kind}.')
  task = seqio.TaskRegistry.get(task_name)
  if 'targets' not in task.output_features:
    raise errors.UserError(f'seqio task {task_name!r} ({key}) has no output feature \'targets\' '
                           f'(its features: {sorted(task.output_features)}); a document is its '
                           "'inputs' and 'targets' token ids.")
  return task


def _metadata_scalar(value: Any) -> str | int | float | bool | None:
  """A scalar feature of a seqio example as a Python scalar; None for arrays."""
  if isinstance(value, bytes):
    return value.decode('utf-8', errors='replace')
  return value.item() if isinstance(value, np.generic) else None


def _seqio_documents(task_name: str, split: str, modules: tuple[str, ...]) -> Iterator[dict]:
  """The examples of `split` of seqio Task `task_name` after its own preprocessors, in order: each
  a document of its token ids ('inputs' then 'targets', seqio's prefix-LM layout; EOS added at the
  end if its features add none), `text` their decoding, and its scalar features as metadata
  (not the *_pretokenized copies). `modules` register the task: a build worker in another
  process imports them first."""
  for module in modules:
    importlib.import_module(module)
  task = seqio.TaskRegistry.get(task_name)
  features = [k for k in _TOKEN_FEATURES if k in task.output_features]
  vocabulary = task.output_features['targets'].vocabulary
  dataset = task.get_dataset(sequence_length=None, split=split, shuffle=False)
  for index, example in enumerate(numpy_examples(dataset)):
    pieces = [np.asarray(example[k], np.int64).reshape(-1) for k in features]
    ends = len(pieces[-1]) and pieces[-1][-1] == vocabulary.eos_id
    tokens = np.concatenate(pieces + ([] if ends else [np.array([vocabulary.eos_id])]))
    metadata = {k: _metadata_scalar(v) for k, v in example.items()
                if k not in (*features, 'id', 'text') and not k.endswith('_pretokenized')}
    yield {**{k: v for k, v in metadata.items() if v is not None},
           'id': f'{task_name}/{split}/{index}', 'tokens': tokens,
           'text': ''.join(vocabulary.decode(piece.tolist()) for piece in pieces)}


def _callable_name(function: Callable) -> str:
  """A preprocessor's name, stable across processes (a partial: its function and keywords)."""
  if isinstance(function, functools.partial):
    return f'{_callable_name(function.func)}({", ".join(sorted(function.keywords))})'
  return f'{getattr(function, "__module__", "")}.{getattr(function, "__qualname__", "")}'


def _seqio_spec(name: str, spec: dict) -> TaskSpec:
  """Task `name` of the registered seqio Task `spec['task']`, its splits `train_split` and
  `validation_split` ('train' and 'validation' by default). Its fingerprint is what the task states
  (source kind and shards, preprocessors, features), not its data: a function source states none,
  so delete the task's stores after changing what it yields. It is built on first use (a source
  of unknown size); a build worker in another process imports `data.seqio_modules` to find it."""
  _check_keys(name, spec, _SEQIO_KEYS)
  if 'task' not in spec:
    raise errors.UserError(f'data.tasks.{name}.task is missing; set it to the name of a registered '
                           'seqio Task.')
  task_name = spec['task']
  task = _seqio_task(task_name, f'data.tasks.{name}.task')
  splits = {'train': spec.get('train_split', 'train'),
            'validation': spec.get('validation_split', 'validation')}
  for split, seqio_split in splits.items():
    if seqio_split not in task.splits:
      raise errors.UserError(
          f'seqio task {task_name!r} has no split {seqio_split!r} (its splits: '
          f'{list(task.splits)}), which task {name!r} reads as its {split} split; set '
          f"data.tasks.{name} = {{'source': 'seqio', 'task': {task_name!r}, "
          f"'{split}_split': ONE_OF_THEM}}.")

  def fingerprint() -> str:
    return json.dumps({
        'spec': spec, 'source': type(task.source).__name__,
        'shards': {split: list(task.source.list_shards(seqio_split))
                   for split, seqio_split in splits.items()},
        'preprocessors': [_callable_name(p) for p in task.preprocessors],
        'features': {k: [type(f.vocabulary).__name__, f.vocabulary.vocab_size, f.add_eos]
                     for k, f in sorted(task.output_features.items())}}, sort_keys=True)

  modules = tuple(_SEQIO_MODULES)
  return TaskSpec(
      name, lambda split: _seqio_documents(task_name, splits[split], modules), fingerprint,
      holdout=f"its validation documents are split {splits['validation']!r} of seqio task "
              f'{task_name!r}; name another with data.tasks.{name}.validation_split',
      tokens_vocabulary=lambda: task.output_features['targets'].vocabulary)


def spec_from_config(name: str, spec: ml_collections.ConfigDict | dict) -> TaskSpec:
  """The TaskSpec that `config.data.tasks.<name>` describes."""
  spec = spec.to_dict() if isinstance(spec, ml_collections.ConfigDict) else dict(spec)
  source = spec.get('source')
  if source == 'files':
    return _files_spec(name, spec)
  if source == 'tfds':
    return _tfds_spec(name, spec)
  if source == 'hf':
    return _hf_spec(name, spec)
  if source in GENERATORS:
    return _generator_spec(name, spec)
  if source == 'subset':
    return _subset_spec(name, spec)
  if source == 'seqio':
    return _seqio_spec(name, spec)
  raise errors.UserError(f'data.tasks.{name}.source={source!r} is not a known source; use one of '
                         f"{sorted(['files', 'tfds', 'hf', 'subset', 'seqio', *GENERATORS])}.")


def _dataset_fn(spec: TaskSpec) -> Callable[..., tf.data.Dataset]:
  """A seqio dataset function yielding {'id', 'text', 'metadata' (JSON)} for one split."""

  def dataset_fn(split: str, shuffle_files: bool) -> tf.data.Dataset:
    del shuffle_files  # Documents are always produced in source order; sampling is seeded later.
    _check_split(spec.name, split)

    def examples():
      try:
        for document in spec.documents(split):
          metadata = {k: v for k, v in document.items() if k not in ('id', 'text')}
          yield {'id': document['id'], 'text': document['text'],
                 'metadata': json.dumps(metadata, sort_keys=True)}
      except errors.UserError as error:  # tf.data wraps it; numpy_examples raises it again
        _RAISED.append(error)
        raise

    return tf.data.Dataset.from_generator(
        examples, output_signature={k: tf.TensorSpec([], tf.string)
                                    for k in ('id', 'text', 'metadata')})

  return dataset_fn


_RAISED: list[errors.UserError] = []  # raised by task sources inside tf.data, for numpy_examples


def numpy_examples(dataset: tf.data.Dataset) -> Iterator[dict]:
  """`dataset.as_numpy_iterator()`, ending with a task source's UserError (a bad JSONL line, bad
  UTF-8) as it was raised: tf.data wraps it in an error whose message is its whole traceback."""
  try:
    yield from dataset.as_numpy_iterator()
  except tf.errors.OpError as error:
    raised = [e for e in _RAISED if str(e) in str(error)]
    _RAISED.clear()
    if raised:
      raise raised[-1] from None
    raise


def register(spec: TaskSpec, vocabulary: seqio.Vocabulary | None = None) -> None:
  """Registers (or re-registers) `spec` as a seqio Task tokenizing with `vocabulary` (bytes). A
  task of a seqio Task is one already: only this module records it."""
  _SPECS[spec.name] = spec
  if spec.tokens_vocabulary is not None:
    return
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
  """Imports the modules of `data.seqio_modules` (which register seqio Tasks and Mixtures), then
  registers every task that `config.data.tasks` defines (replacing one of the same name)."""
  for module in data_config.seqio_modules:
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise errors.UserError(f'data.seqio_modules names {module!r}, which cannot be imported '
                             f'({e}); give a module importable from the working directory or '
                             'the environment (PYTHONPATH).') from e
    if module not in _SEQIO_MODULES:
      _SEQIO_MODULES.append(module)
  for name, spec in data_config.tasks.items():
    register(spec_from_config(name, spec))
  for name, spec in data_config.tasks.items():  # subsets name a task defined anywhere
    if spec.get('source') == 'subset':
      check_task(spec['task'], f'data.tasks.{name}.task')


def check_task(name: str, where: str = 'A data mixture (data.mixture, data.stages or '
               'data.replay.mixture)') -> None:
  """Fails with the close matches unless task `name` (named by `where`) is registered here or is a
  Task in seqio's registry (then registered here by its own name)."""
  if name not in _SPECS and name in seqio.TaskRegistry.names():
    register(_seqio_spec(name, {'source': 'seqio', 'task': name}))
  if name not in _SPECS and name in seqio.MixtureRegistry.names():
    raise errors.UserError(f'{where} names seqio Mixture {name!r}, which only data.mixture, '
                           'data.stages and data.replay.mixture take (for its tasks); name its '
                           f'tasks {[t.name for t in seqio.MixtureRegistry.get(name).tasks]} here.')
  if name not in _SPECS:
    close = difflib.get_close_matches(name, list(_SPECS), n=3, cutoff=0.5)
    hint = f'did you mean {close}? ' if close else ''
    raise errors.UserError(f'{where} names an unknown task {name!r}; {hint}the registered '
                           f'tasks are {sorted(_SPECS)} (define more in data.tasks, or register '
                           'seqio Tasks in a module of data.seqio_modules).')


def get_task(name: str, vocabulary: seqio.Vocabulary | None = None) -> seqio.Task:
  """The seqio Task `name`, tokenizing with `vocabulary` (re-registered if it tokenized otherwise)."""
  check_task(name)
  task = seqio.TaskRegistry.get(name)
  if vocabulary is not None and task.output_features['targets'].vocabulary != vocabulary:
    register(_SPECS[name], vocabulary)
    task = seqio.TaskRegistry.get(name)
  return task


def expand_mixtures(weights: dict[str, float], key: str) -> dict[str, float]:
  """Mixture weights `weights` (config key `key`) with each seqio Mixture named in them replaced by
  its Tasks, its weight shared by their mixing rates (seqio's `get_rate`)."""
  mixtures = [name for name in weights
              if name not in _SPECS and name in seqio.MixtureRegistry.names()]
  expanded = {name: weight for name, weight in weights.items() if name not in mixtures}
  for name in mixtures:
    weight, mixture = weights[name], seqio.MixtureRegistry.get(name)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (
        0 <= weight < math.inf):
      raise errors.UserError(f'{key}.{name}={weight!r} must be a finite weight >= 0 (0 drops the '
                             'mixture).')
    try:
      rates = {task.name: float(mixture.get_rate(task)) for task in mixture.tasks}
    except Exception as e:  # a rate function (e.g. by example counts) that cannot run here
      raise errors.UserError(f'{key} names seqio Mixture {name!r}, whose mixing rates cannot be '
                             f'computed here ({type(e).__name__}: {e}); give it fixed rates, or '
                             f'name its tasks with weights in {key}.') from e
    total = sum(rates.values())
    if not total > 0:
      raise errors.UserError(f'{key} names seqio Mixture {name!r}, whose mixing rates {rates} sum '
                             'to 0; give its tasks positive rates.')
    for task_name, rate in rates.items():
      expanded[task_name] = expanded.get(task_name, 0.0) + weight * rate / total
  return expanded


_PROBE_TEXT = 'The quick brown fox, 1234 naïve cafés.\n\tdef f(x): return x'


def check_vocabulary(name: str, vocabulary: seqio.Vocabulary) -> None:
  """Fails unless the documents of task `name` can be stored with the run's `vocabulary`: text
  always; a seqio Task's token ids when its own vocabulary gives the same ids (its size and a probe
  text's ids; extra ids aside)."""
  spec = task_spec(name)
  if spec.tokens_vocabulary is None:
    return
  own = spec.tokens_vocabulary()

  def base(v) -> int:  # the ids of a vocabulary but its extra ids (sentinels)
    return v.vocab_size - v.extra_ids

  if base(own) != base(vocabulary) or list(own.encode(_PROBE_TEXT)) != list(
      vocabulary.encode(_PROBE_TEXT)):
    raise errors.UserError(
        f"Task {name!r} is a seqio Task tokenized by its own output features, with a "
        f'{type(own).__name__} of {base(own)} ids, which is not data.vocabulary (a '
        f'{type(vocabulary).__name__} of {base(vocabulary)} ids); its ids are trained on as they '
        "are, so set data.vocabulary to the task's vocabulary ('byte', 'spm:PATH' for its "
        'SentencePiece model).')


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
