"""Score files: the per-document scores `python -m launch.score` computes, where they live and how
the data options that need a score (`data.order.by`, `data.select.by`) read them.

launch.score computes them with checkpoints (--checkpoint) or, model-free, with a Beam step over
the built store, a worker per shard (--scorer, research/data/score_build.py); both write this
format.

Without --out, `launch.score --task=NAME` writes `STORE/scores/SCORES.jsonl` and its manifest
`STORE/scores/SCORES.jsonl.manifest.json`, STORE being the directory of the task's document store
(research/data/store.py: `<store_dir>/<task>/<split>/<vocabulary>/<fingerprint>/`) and SCORES its
--name (default: the checkpoint's name). A stored score set is so keyed by task, split, vocabulary
and the task's fingerprint by where it is, and data options name it without a path. A store built
again (damaged, or of an older format) loses its scores: run launch.score again.

A score reference, the value of `data.order.by` or `data.select.by`, is one of

    FIELD          a field of each document's metadata, as the task's source writes it (the
                   arithmetic and lego generators' 'difficulty')
    SCORES:FIELD   field FIELD of score file SCORES: a stored name (STORE/scores/SCORES.jsonl of
                   each task it is used for), or a path (it has a '/' or ends in '.jsonl', e.g.
                   launch.score's --out; one task's file, so name one task)

FIELD of a score file is a field launch.score writes: nll, perplexity, min_k_prob, el2n, length,
zlib_ratio, learnability or difficulty with --checkpoint; zipfit, toxicity or timestamp with
--scorer (each line holds `id`, `num_tokens` and the scorer's field). A score file is read only
with its manifest (F.jsonl.manifest.json; a file made by another tool needs one with at least
`task`, `split` and `vocabulary`), and it must score the documents the run trains on: the task's
train split in the run's `data.vocabulary`, of the store's fingerprint when the manifest has one,
and every document of the store (others in the file are ignored). Otherwise, and when a score was
never computed, one UserError names the file, what differs, and the launch.score command that
computes the score (with --scorer for a model-free field: `MODEL_FREE`).
"""

import contextlib
import json
import math
import os
import uuid

import numpy as np
import tensorflow as tf

from research import errors
from research.data import store as store_lib

SCORES_DIR = 'scores'  # the sub-directory of a store that holds its score files
MANIFEST_SUFFIX = '.manifest.json'
# launch.score's --scores name of the fields whose name differs (research/scores.SCORES).
_SCORE_NAMES = {'min_k_prob': 'min_k', 'zlib_ratio': 'zlib'}
# launch.score's model-free --scorer names (research/data/score_build.SCORERS), each the field it
# writes, with the settings its command needs.
MODEL_FREE = {'zipfit': ' --zipfit_target=TASK --zipfit_seed=SEED', 'toxicity': '',
              'timestamp': ' --timestamp_field=FIELD'}


def stored_path(store_directory: str, name: str) -> str:
  """The score file of score set `name` next to the store in `store_directory`."""
  return os.path.join(store_directory, SCORES_DIR, name + '.jsonl')


def is_path(scores: str) -> bool:
  """Whether SCORES of a reference SCORES:FIELD is a path rather than a stored name."""
  return '/' in scores or scores.endswith('.jsonl')


def parse(reference: str) -> tuple[str | None, str]:
  """(SCORES or None for the metadata, FIELD) of a score reference."""
  scores, _, field = reference.rpartition(':')  # the last ':', so 'gs://b/f.jsonl:nll' parses
  return scores or None, field


def _store_root(store: store_lib.DocumentStore) -> str:
  """The data.store_dir of a store (its directory is <store_dir>/<task>/<split>/<vocab>/<fp>)."""
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(store.directory))))


def command(store: store_lib.DocumentStore, task_name: str, scores: str, field: str) -> str:
  """The launch.score command that writes field `field` of score file `scores` for this store."""
  where = f'--out={scores}' if is_path(scores) else f'--name={scores}'
  if field in MODEL_FREE:
    return (f'python -m launch.score --scorer={field} --task={task_name} {where} '
            f'--store_dir={_store_root(store)}{MODEL_FREE[field]} --config=experiments/'
            f"EXPERIMENT.py (the run's experiment: its data.vocabulary="
            f"{store.manifest['vocabulary']!r} and data.tasks)")
  name = _SCORE_NAMES.get(field, field)
  early = ' --early_checkpoint=EARLY_DIR' if name == 'learnability' else ''
  return (f'python -m launch.score --checkpoint=DIR --task={task_name} --scores={name}{early} '
          f'{where} --store_dir={_store_root(store)} (DIR a checkpoint of data.vocabulary='
          f"{store.manifest['vocabulary']!r}; add --config=experiments/EXPERIMENT.py when the "
          "task is defined in that experiment's data.tasks)")


@contextlib.contextmanager
def atomic_file(path: str):
  """A text file open for writing at a temporary name beside `path` (a local path or gs://),
  renamed to `path` when the block ends and removed if it raises: a failure leaves no half file."""
  temporary = os.path.join(os.path.dirname(path),
                           f'.{os.path.basename(path)}.tmp-{uuid.uuid4().hex}')
  try:
    with tf.io.gfile.GFile(temporary, 'w') as f:
      yield f
    tf.io.gfile.rename(temporary, path, overwrite=True)
  except BaseException:
    if tf.io.gfile.exists(temporary):
      tf.io.gfile.remove(temporary)
    raise


def _check_manifest(manifest: dict, path: str, store: store_lib.DocumentStore, task_name: str,
                    key: str, fix: str) -> None:
  """Fails naming `path` unless its manifest scores this store's task, split and vocabulary."""
  expected = {'task': task_name, 'split': store.manifest['split'],
              'vocabulary': store.manifest['vocabulary']}
  if manifest.get('store_fingerprint') is not None:
    expected['store_fingerprint'] = store.manifest['fingerprint']
  differs = [k for k, v in expected.items() if manifest.get(k) != v]
  if differs:
    what = ('an older version of the documents' if differs == ['store_fingerprint'] else
            'other documents')
    listing = '; '.join('store_fingerprint differs' if k == 'store_fingerprint' else
                        f'{k} {manifest.get(k)!r}, not {expected[k]!r}' for k in differs)
    raise errors.UserError(
        f'{key}: score file {path} scores {what} than task {task_name!r} trains on (its manifest: '
        f"{listing}), so it is refused. Score this task's train split in this "
        f"run's vocabulary: {fix}.")


def read(store: store_lib.DocumentStore, task_name: str, scores: str, field: str,
         key: str) -> np.ndarray:
  """float64 [num_documents]: field `field` of score file `scores` for every document of `store`,
  in store order, after checking the file's manifest against the store; `key` (e.g.
  "data.order.by='ref:nll'") starts every error."""
  path = scores if is_path(scores) else stored_path(store.directory, scores)
  fix = command(store, task_name, scores, field)
  if not tf.io.gfile.exists(path):
    raise errors.UserError(f'{key}: score {field!r} of {scores!r} was not computed for task '
                           f'{task_name!r} (no file {path}). Compute it: {fix}.')
  manifest_path = path + MANIFEST_SUFFIX
  if not tf.io.gfile.exists(manifest_path):
    raise errors.UserError(f'{key}: score file {path} has no manifest {manifest_path}, so its '
                           'task and vocabulary cannot be checked. Write it with launch.score '
                           f'({fix}), or give the file a manifest with task, split and '
                           'vocabulary.')
  with tf.io.gfile.GFile(manifest_path) as f:
    manifest = json.load(f)
  _check_manifest(manifest, path, store, task_name, key, fix)
  values = {}
  with tf.io.gfile.GFile(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise errors.UserError(f'{key}: {path} line {number} is not JSON ({e.msg}); give the JSONL '
                               'of launch.score.') from None
      if not isinstance(record, dict) or 'id' not in record:
        raise errors.UserError(f'{key}: {path} line {number} has no "id"; give the JSONL of '
                               'launch.score.')
      if field not in record:
        have = sorted(k for k in record if k not in ('id', 'metadata'))
        raise errors.UserError(f'{key}: score {field!r} was not computed in {path} (line '
                               f'{number} has {have}). Compute it: {fix}.')
      value = record[field]
      if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise errors.UserError(f'{key}: {path} line {number} has {field}={value!r}; order or '
                               'select by a finite numeric score.')
      values[record['id']] = float(value)
  missing = [doc_id for doc_id in store.doc_ids if doc_id not in values]
  if missing:
    raise errors.UserError(f'{key}: {len(missing)} of the {store.num_documents} training '
                           f'documents of task {task_name!r} have no score in {path} (e.g. '
                           f'{missing[0]!r}); score the whole train split again: {fix}.')
  return np.array([values[doc_id] for doc_id in store.doc_ids], np.float64)
