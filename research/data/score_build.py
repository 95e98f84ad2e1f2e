"""Model-free per-document scores of a built document store, as a Beam step: each worker scores
one shard of the store, and the driver joins the shards' scores, in store order, into the score
file that `data.select.by` and `data.order.by` read as 'NAME:FIELD' (research/data/score_files.py:
each line `id`, `num_tokens` and the scorer's field, with a manifest naming the store).
`python -m launch.score --scorer=NAME` runs it.

Scorers (`SCORERS`; FIELD is the scorer's name; the settings are launch.score's --NAME_SETTING
flags, which every error names):

  zipfit     ZIP-FIT (Obbad et al. 2024, "ZIP-FIT: Embedding-Free Data Selection via
             Compression-Based Alignment", arXiv 2410.18194): each document's gzip alignment to
             the target documents (research/data/selection.py's `zipfit_alignment`), a sample of
             at most `size` documents of task `target`'s `split` drawn with `seed` as a run of
             seed `seed` draws it (`selection.zipfit_targets`). The driver reads and decodes the
             sample; it travels to the workers with the step. With a run's data.select.zipfit and
             seed, `data.select.by='NAME:zipfit'` keeps the documents that `by='zipfit'` keeps.
  toxicity   the share of a document's words (runs of letters, lower-cased) that are in a word
             list: `words`, a file of one word a line ('#' starts a comment), or '' for the short
             built-in list `TOXICITY_WORDS`. A stand-in for the toxicity filter of the
             Pretrainer's Guide (Longpre et al. 2023, "A Pretrainer's Guide to Training Data:
             Measuring the Effects of Data Age, Domain Coverage, Quality, & Toxicity", arXiv
             2305.13169), which scored documents with the Perspective API's classifier: a hosted
             model this code cannot reach (nor, offline, this machine). A word list misses
             toxicity without listed words and counts listed words quoted or discussed; bring a
             list that fits the corpus, or a classifier's scores in a score file of your own.
  timestamp  a document's time from its metadata field `field`, as a number: a number stays as
             it is (a year, in the unit the source uses), a string is read as an ISO 8601 date or
             time (C4's '2019-04-25T12:57:54Z'; UTC when it has no zone) and becomes a decimal year
             (2020-07-02 is 2020.5). The Pretrainer's Guide's data-age slices are then
             `data.select.by='NAME:timestamp'` with `data.select.between=(2015, 2019)`; a numeric
             metadata field needs no scorer (`data.select.by='year'`).

The step is `build.py`'s: a unit per shard (its summary only), spread by a Reshuffle, on the
runner of `build.pipeline_options` (the DirectRunner's --num_workers processes here, Dataflow for
a store in a bucket). Each worker writes its shard's lines to a part file (a temporary file then a
rename) in a directory of this run beside the output; the driver then concatenates the parts in
shard order into a temporary file, writes the manifest and renames the file into place, and
removes the parts. So the file is the same bytes whatever the runner and the number of workers,
and a failed run (a document without its timestamp, a worker lost) leaves the earlier file, if
any, as it was and nothing of its own. A rerun scores every shard again. A UserError a worker
raises (a document without a timestamp) ends the run as that error alone (`worker_error`), on
worker processes too.
"""

import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions

from research import errors
from research.data import build, score_files, selection, tasks, vocabularies
from research.data import store as store_lib

# Mild insults only: a demonstration list, small on purpose; --toxicity_words gives a real one.
TOXICITY_WORDS = ('disgusting', 'dumb', 'hateful', 'idiot', 'idiotic', 'idiots', 'imbecile',
                  'jerk', 'loser', 'losers', 'moron', 'moronic', 'morons', 'pathetic', 'scum',
                  'stupid', 'worthless')
_WORD = re.compile(r'[^\W\d_]+')  # a run of letters
# A worker's UserError in the error text of a runner that runs workers in other processes.
_WORKER_ERROR = re.compile(r"research\.errors\.UserError: (.*?)(?: \[while running '[^']*'\])?$",
                           re.MULTILINE)
# Each scorer's settings and their defaults (launch.score's --SCORER_SETTING flags).
SETTINGS = {'zipfit': {'target': '', 'split': 'train', 'size': 100, 'seed': 0},
            'toxicity': {'words': ''},
            'timestamp': {'field': 'timestamp'}}


@dataclasses.dataclass(frozen=True)
class Scorer:
  """A checked scorer: its name (the field it writes), its settings (in the manifest) and `state`,
  what its workers need (the target texts, the word list, the field)."""
  name: str
  settings: dict[str, Any]
  state: Any


@dataclasses.dataclass(frozen=True, eq=False)
class Unit:
  """What one worker scores: the shard of `summary` of the store in `directory`, into `part`."""
  directory: str
  token_dtype: str
  summary: dict
  part: str


def flag(scorer: str, setting: str) -> str:
  """The launch.score flag of a scorer's setting."""
  return f'--{scorer}_{setting}'


def words_in(text: str) -> list[str]:
  """The words of `text` that `toxicity` counts: its runs of letters, lower-cased."""
  return _WORD.findall(text.lower())


def toxicity(text: str, words: frozenset[str]) -> float:
  """The share of the words of `text` that are in `words`; 0 for a text without words."""
  found = words_in(text)
  return sum(word in words for word in found) / len(found) if found else 0.0


def read_words(path: str) -> frozenset[str]:
  """The word list of file `path` (--toxicity_words): a word a line, '#' comments, lower-cased."""
  where = flag('toxicity', 'words')
  if not tf.io.gfile.exists(path):
    raise errors.UserError(f'{where}={path} does not exist; give a file of one word a line, or '
                           'leave it empty for the built-in list.')
  words = set()
  with tf.io.gfile.GFile(path) as f:
    for number, line in enumerate(f, 1):
      line = line.split('#', 1)[0].strip()
      if line and words_in(line) != [line.lower()]:
        raise errors.UserError(f'{where}={path} line {number} is {line!r}: give one word (letters '
                               'only) a line, as documents are split into runs of letters.')
      words.update([line.lower()] if line else [])
  if not words:
    raise errors.UserError(f'{where}={path} lists no words; give one word a line.')
  return frozenset(words)


def decimal_year(value: Any) -> float | None:
  """A metadata time as a number: a number as it is; an ISO 8601 string as a decimal year (UTC);
  None for anything else."""
  if isinstance(value, (int, float)) and not isinstance(value, bool):
    return float(value) if math.isfinite(value) else None
  if not isinstance(value, str):
    return None
  try:
    moment = datetime.datetime.fromisoformat(value.strip())
  except ValueError:
    return None
  if moment.tzinfo is not None:
    moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
  start, end = (datetime.datetime(year, 1, 1) for year in (moment.year, moment.year + 1))
  return moment.year + (moment - start) / (end - start)


def _timestamps(field: str, store: store_lib.DocumentStore, _) -> list[float]:
  values = []
  for doc_id, metadata in zip(store.doc_ids, store.metadata):
    value = decimal_year(metadata.get(field))
    if value is None:
      what = (f'{field!r} = {metadata[field]!r}, neither a number nor an ISO 8601 date'
              if field in metadata else f'no {field!r} (its metadata: {sorted(metadata)})')
      raise errors.UserError(f'--scorer=timestamp: document {doc_id!r} has {what}; name the '
                             f"metadata field that holds each document's time with "
                             f"{flag('timestamp', 'field')}, or score a task whose documents all "
                             'have one.')
    values.append(value)
  return values


def _zipfit_scores(targets: list[str], store: store_lib.DocumentStore, vocabulary) -> np.ndarray:
  return selection.zipfit_alignment(store.texts(vocabulary), targets)


def _toxicity_scores(words: frozenset[str], store: store_lib.DocumentStore,
                     vocabulary) -> list[float]:
  return [toxicity(text, words) for text in store.texts(vocabulary)]


# name -> the scores of a shard's documents (DocumentStore), from the scorer's state and the
# store's vocabulary.
SCORERS: dict[str, Callable[[Any, store_lib.DocumentStore, Any], Any]] = {
    'zipfit': _zipfit_scores, 'toxicity': _toxicity_scores, 'timestamp': _timestamps}


def check_name(name: str) -> None:
  """Fails unless `name` is a scorer's."""
  if name not in SCORERS:
    raise errors.UserError(f'--scorer={name!r} is not a model-free scorer; choose one of '
                           f'{sorted(SCORERS)} (model scores take --checkpoint and --scores).')


def make_scorer(name: str, settings: dict[str, Any], vocabulary_name: str, extra_ids: int,
                store_dir: str) -> Scorer:
  """The checked scorer `name` with `settings` (defaults for those left out), its state read; the
  stores are those of `vocabulary_name` under `store_dir`."""
  check_name(name)
  unknown = sorted(set(settings) - set(SETTINGS[name]))
  if unknown:
    raise errors.UserError(f'--scorer={name} has no setting {flag(name, unknown[0])}; its settings '
                           f'are {[flag(name, s) for s in SETTINGS[name]]}.')
  settings = {**SETTINGS[name], **settings}
  if name == 'zipfit':
    selection.check_zipfit(settings, f'--scorer={name}', functools.partial(flag, name))
    seed = settings['seed']
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
      raise errors.UserError(f"{flag(name, 'seed')}={seed!r} must be an integer >= 0: the seed of "
                             'the run whose data.select.by=zipfit sample of targets to draw.')
    zipfit = selection.ZipFit(settings['target'], settings['split'], settings['size'],
                              vocabulary_name, extra_ids, store_dir)
    return Scorer(name, settings, selection.zipfit_targets(zipfit, seed, flag(name, 'target')))
  if name == 'toxicity':
    words = read_words(settings['words']) if settings['words'] else frozenset(TOXICITY_WORDS)
    digest = hashlib.sha256('\n'.join(sorted(words)).encode('utf-8')).hexdigest()
    return Scorer(name, {**settings, 'num_words': len(words), 'words_sha256': digest}, words)
  field = settings['field']
  if not field or not isinstance(field, str):
    raise errors.UserError(f"{flag(name, 'field')}={field!r} must name the metadata field that "
                           "holds each document's time (e.g. 'timestamp', 'year').")
  return Scorer(name, settings, field)


@functools.cache
def _vocabulary(name: str, extra_ids: int):
  return vocabularies.make_vocabulary(name, extra_ids)


def score_shard(unit: Unit, scorer: Scorer, vocabulary_name: str, extra_ids: int) -> str:
  """Scores the documents of one shard into its part file (written whole, then renamed); its
  path."""
  documents = store_lib.read_documents(unit.directory, {'token_dtype': unit.token_dtype},
                                       [unit.summary])
  values = SCORERS[scorer.name](scorer.state, documents, _vocabulary(vocabulary_name, extra_ids))
  lengths = np.diff(documents.offsets).tolist()
  with score_files.atomic_file(unit.part) as f:
    for doc_id, num_tokens, value in zip(documents.doc_ids, lengths, values):
      f.write(json.dumps({'id': doc_id, 'num_tokens': num_tokens, scorer.name: float(value)})
              + '\n')
  return unit.part


def worker_error(error: Exception) -> errors.UserError | None:
  """The UserError a worker raised, from the error a runner raises for it: the error itself in this
  process (`build.build`'s handling), or one in its text from worker processes (the DirectRunner's
  --num_workers > 1, Dataflow); None for another error."""
  if isinstance(error, errors.UserError):
    return build._as_raised(error)  # pylint: disable=protected-access
  found = _WORKER_ERROR.search(str(error))
  return errors.UserError(found.group(1)) if found else None


def _score_shards(units: list[Unit], scorer: Scorer, vocabulary_name: str, extra_ids: int,
                  options: PipelineOptions | None) -> None:
  """Runs the pipeline that writes the part file of each unit; a worker's UserError is raised
  alone."""
  try:
    with beam.Pipeline(options=options or build.pipeline_options('DirectRunner',
                                                                 num_workers=1)) as p:
      _ = (p | 'Shards' >> beam.Create(units) | 'Spread' >> beam.Reshuffle()
           | 'Score' >> beam.Map(score_shard, scorer, vocabulary_name, extra_ids))
  except Exception as error:  # pylint: disable=broad-except  (re-raised unless a UserError)
    user_error = worker_error(error)
    if user_error is None:
      raise
    raise user_error from None


def score_store(task_name: str, split: str, vocabulary_name: str, extra_ids: int, store_dir: str,
                scorer_name: str, settings: dict[str, Any], out: str | None = None,
                options: PipelineOptions | None = None) -> tuple[str, dict]:
  """Writes scorer `scorer_name`'s scores (with `settings`) of every document of the store of
  (task, split, vocabulary) to `out`, by default `STORE/scores/SCORER.jsonl`, and its manifest
  (`out` + score_files.MANIFEST_SUFFIX), with one Beam pipeline (`options`; default the
  DirectRunner in this process); (the file's path, its manifest). A small store is built first."""
  if split not in tasks.SPLITS:
    raise errors.UserError(f'--split={split!r} is not a split; use one of {list(tasks.SPLITS)}.')
  scorer = make_scorer(scorer_name, settings, vocabulary_name, extra_ids, store_dir)
  directory, manifest = store_lib.built_manifest(task_name, split, vocabulary_name, store_dir)
  if not manifest['num_documents']:
    raise errors.UserError(f'--task={task_name} --split={split} holds no documents; nothing to '
                           'score.')
  out = out or score_files.stored_path(directory, scorer_name)
  tf.io.gfile.makedirs(os.path.dirname(out) or '.')
  parts = os.path.join(os.path.dirname(out), f'.{os.path.basename(out)}.parts-{uuid.uuid4().hex}')
  tf.io.gfile.makedirs(parts)
  units = [Unit(directory, manifest['token_dtype'], summary, os.path.join(parts, f'{k:05d}.jsonl'))
           for k, summary in enumerate(manifest['shards'])]
  try:
    _score_shards(units, scorer, vocabulary_name, extra_ids, options)
    missing = [unit.part for unit in units if not tf.io.gfile.exists(unit.part)]
    if missing:
      raise errors.UserError(f'Scoring task {task_name!r} did not write every shard\'s scores '
                             f'(no {missing[0]}); run it again.')
    scores_manifest = {
        'task': task_name, 'split': split, 'vocabulary': vocabulary_name, 'extra_ids': extra_ids,
        'store_fingerprint': manifest['fingerprint'], 'scorer': scorer_name,
        'settings': scorer.settings, 'scores': [scorer_name],
        'num_documents': manifest['num_documents']}
    with score_files.atomic_file(out) as f:
      for unit in units:
        with tf.io.gfile.GFile(unit.part) as part:
          shutil.copyfileobj(part, f, 1 << 20)
      with score_files.atomic_file(out + score_files.MANIFEST_SUFFIX) as manifest_file:
        json.dump(scores_manifest, manifest_file, indent=2)
  finally:
    tf.io.gfile.rmtree(parts)
  return out, scores_manifest
