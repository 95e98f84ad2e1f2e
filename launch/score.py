"""Scores every document of a task split or a text file with one or more checkpoints, or of a task
split with a model-free scorer in a Beam pipeline.

  python -m launch.score --checkpoint=DIR[,DIR...] (--task=NAME [--name=SCORES] | --text_file=F) \
      [--out=F.jsonl] [--scores=nll,perplexity,min_k,el2n,length,zlib] [--min_k=0.2] \
      [--split=train] [--early_checkpoint=DIR[,DIR...]] [--batch_size=N] [--metadata] \
      [--prefix=TEXT] [--scores=...,lqs --lqs_target=TASK [--lqs_steps=10 --lqs_lr=0.008 \
      --lqs_batch=8 --lqs_seed=0]]
  python -m launch.score --scorer=zipfit|toxicity|timestamp --task=NAME [--name=SCORES | \
      --out=F.jsonl] [--split=train] [--config=experiments/NAME.py] [--store_dir=DIR] \
      [--zipfit_target=TASK --zipfit_split=train --zipfit_size=100 --zipfit_seed=0] \
      [--toxicity_words=FILE] [--timestamp_field=timestamp] \
      [--runner=DirectRunner|DataflowRunner|FlinkRunner] [--num_workers=N] [-- BEAM_OPTIONS...]

DIR is a launch.train workdir (its latest checkpoint), one checkpoint WORKDIR/checkpoints/<step>, or
a launch.convert output; its config.json gives the model, data.seq_len and data.vocabulary. Several
DIRs (runs of other seeds) average each model score, as Data Diet averages EL2N and GraNd over runs.
--task names a built-in task, one of the run's data.tasks or one of --config's data.tasks; its store
is read from (or built into) data.store_dir. --text_file is a .jsonl file (one document a line, its
`text` field) or a text file (one document a non-blank line), ids PATH:LINE. research/analysis/scores.py
defines the scores; `grand` (GraNd, a loss-gradient norm) costs a backward pass and a gradient per
document, far more than the others, and is computed only when asked for; `lqs` (DELT's
Learnability-Quality Score, research/analysis/lqs.py) a short gradient-descent trajectory from the
checkpoint (--lqs_steps at --lqs_lr on --lqs_batch rows of the scored documents), its co-state
towards the validation documents of --lqs_target, and a gradient per document and step.

OUT gets one JSON object a line, in store order: `id`, `num_tokens`, `nll` and the other scores
asked for (`perplexity`, `min_k_prob`, `el2n`, `grand`, `lqs`, `length`, `zlib_ratio`,
`learnability`, `difficulty`), with --metadata the document's `metadata`; OUT.manifest.json
records what was scored (task or file, split, vocabulary, the store's fingerprint, checkpoints and
steps, k, LQS's settings). Both are
written to temporary files and renamed, so a failure leaves neither half-written. With --task and
no --out, OUT is STORE/scores/SCORES.jsonl beside the task's document store, SCORES being --name
(default: the checkpoint's name, WORKDIR-STEP for WORKDIR/checkpoints/STEP): `data.order.by` and
`data.select.by` then name a score 'SCORES:FIELD' without a path (research/data/score_files.py).
The file is also what a `subset` task's `scores` reads (research/data/tasks.py).

--scorer (no --checkpoint) runs one model-free scorer of research/data/score_build.py over the
built store of --task, a Beam worker per shard: `zipfit` (ZIP-FIT alignment to a seeded sample of
--zipfit_size documents of --zipfit_target, drawn as a run of seed --zipfit_seed draws it for
data.select.by=zipfit), `toxicity` (the share of words in --toxicity_words, a word list; default a
short built-in one) or `timestamp` (metadata field --timestamp_field as a number: a decimal year
for an ISO 8601 date). The store's vocabulary, tasks and data.store_dir are --config's (default
research/defaults.py's: the byte vocabulary), --store_dir overriding the last. It writes the same
format, each line `id`, `num_tokens` and the scorer's field, to STORE/scores/SCORES.jsonl
(SCORES: --name, default the scorer's name) or --out, so `data.select.by='SCORES:zipfit'` reads
it; the file is the same bytes on any runner and number of workers, and written whole or not at
all. The DirectRunner runs --num_workers processes (default: one per core; 1: this process); a
store in a bucket is scored on Dataflow, as launch.build_data builds it:

  python -m launch.score --scorer=zipfit --task=web --zipfit_target=arithmetic \
      --config=experiments/NAME.py --runner=DataflowRunner -- --project=P --region=R \
      --temp_location=gs://B/tmp --setup_file=./setup.py

--prefix=TEXT is read by the model before every document and not scored, so the model scores are
of each document conditioned on it (the prefix conditions a document's first window of
data.seq_len tokens): a MeCo source tag such as $'URL: stdlib_code/json\n\n' (Gao et al. 2025, arXiv
2501.01956), true or fabricated, or a control token such as '<|aligned|>' (Korbak et al. 2023, arXiv
2302.08582), encoded as launch.generate encodes a prompt. GraNd takes no prefix.
"""

import json
import math
import os
import re

from launch import cli  # first: sets TensorFlow's log level before research imports it

import jax
import numpy as np
from absl import flags
from etils import epath

from research import defaults, errors, finished, generate, sharding

from research.analysis import scores as scores_lib
from research.data import build, score_build, score_files
from research.data import store as store_lib
from research.data import tasks, vocabularies, windows

_CHECKPOINT = cli.define_paths('checkpoint', None, 'Workdir(s) or checkpoint directories to score '
                               'with; several average each model score.')
_EARLY = cli.define_paths('early_checkpoint', [], 'Earlier checkpoint(s) for learnability = '
                          'nll(early) - nll(--checkpoint).')
# Other commands define --task and --out too; allow_override lets them load in one process (tests).
_TASK = flags.DEFINE_string('task', None, 'The task whose --split is scored.', allow_override=True)
_TEXT_FILE = flags.DEFINE_string('text_file', None, 'A .jsonl or text file of documents to score.')
_TEXT_FIELD = flags.DEFINE_string('text_field', 'text', 'The text field of a .jsonl --text_file.')
_OUT = flags.DEFINE_string('out', None, "The JSONL file to write; without it, a --task's scores "
                           'go to STORE/scores/NAME.jsonl beside its document store.',
                           allow_override=True)
_NAME = flags.DEFINE_string('name', None, 'Without --out: the stored score set\'s name, which data '
                            "options use as 'NAME:FIELD' (default: the checkpoint's name).",
                            allow_override=True)
_SCORES = flags.DEFINE_list('scores', ['nll', 'perplexity', 'min_k', 'el2n', 'length', 'zlib'],
                            f'Scores to write, of {sorted(scores_lib.SCORES)}; nll is always '
                            'written.')
_MIN_K = flags.DEFINE_float('min_k', scores_lib.DEFAULT_MIN_K, 'k of Min-K% prob: the fraction of '
                            'least likely tokens averaged.')
_SPLIT = flags.DEFINE_string('split', 'train', 'The split of --task: train or validation.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 0, 'Rows of data.seq_len tokens per forward pass, '
                                   'a multiple of the data-parallel size (0: the run\'s '
                                   'eval.batch_size, rounded up to one); grand takes '
                                   'batch_size // W documents of W windows per step, each with '
                                   'its own gradient the size of the parameters.')
_FSDP = flags.DEFINE_integer('fsdp', 1, 'Mesh fsdp size (parameters sharded over it); the rest of '
                             'the devices are data-parallel.')
_TENSOR = flags.DEFINE_integer('tensor', 1, 'Mesh tensor size.')
_STORE_DIR = flags.DEFINE_string('store_dir', None, 'Document-store cache (default: the run\'s '
                                 'data.store_dir).')
_METADATA = flags.DEFINE_bool('metadata', False, "Write each document's metadata too.")
_PREFIX = flags.DEFINE_string('prefix', '', 'Text read before every document, not scored: the '
                              'model scores are conditioned on it.')
_SCORER = flags.DEFINE_string('scorer', None, 'A model-free scorer run in Beam over --task\'s '
                              'store instead of --checkpoint: one of '
                              f'{sorted(score_build.SCORERS)}.')
_DEFAULTS = score_build.SETTINGS
# The settings of each --scorer: (scorer, setting) -> its flag.
_SETTINGS = {
    ('zipfit', 'target'): flags.DEFINE_string(
        'zipfit_target', _DEFAULTS['zipfit']['target'], '--scorer=zipfit: the task whose '
        'documents are the target set (data.select.zipfit.target).'),
    ('zipfit', 'split'): flags.DEFINE_string(
        'zipfit_split', _DEFAULTS['zipfit']['split'], "--scorer=zipfit: the target's split."),
    ('zipfit', 'size'): flags.DEFINE_integer(
        'zipfit_size', _DEFAULTS['zipfit']['size'], '--scorer=zipfit: the most target documents '
        'each document is compared with (data.select.zipfit.size).'),
    ('zipfit', 'seed'): flags.DEFINE_integer(
        'zipfit_seed', _DEFAULTS['zipfit']['seed'], '--scorer=zipfit: the seed of the sample of '
        'targets, that of the run whose by=zipfit selection to reproduce.'),
    ('toxicity', 'words'): flags.DEFINE_string(
        'toxicity_words', _DEFAULTS['toxicity']['words'], '--scorer=toxicity: a file of one word '
        'a line (local or gs://); empty: the short built-in list.'),
    ('timestamp', 'field'): flags.DEFINE_string(
        'timestamp_field', _DEFAULTS['timestamp']['field'], "--scorer=timestamp: the metadata "
        "field of each document's time (a number, or an ISO 8601 date)."),
}
# launch.build_data defines these too; allow_override lets both load in one process (tests).
_RUNNER = flags.DEFINE_string('runner', 'DirectRunner', '--scorer: the Beam runner: DirectRunner '
                              '(this machine), DataflowRunner, FlinkRunner, ...',
                              allow_override=True)
_NUM_WORKERS = flags.DEFINE_integer('num_workers', 0, '--scorer: DirectRunner processes (0: one '
                                    'per core; 1: in this process).', allow_override=True)
_LQS_TARGET = flags.DEFINE_string('lqs_target', None, "--scores=lqs: the task whose validation "
                                  "documents are the target set (DELT's LIMA).")
_LQS_STEPS = flags.DEFINE_integer('lqs_steps', 10, '--scores=lqs: gradient-descent steps of the '
                                  'proxy trajectory (DELT: 100).')
_LQS_LR = flags.DEFINE_float('lqs_lr', 0.008, "--scores=lqs: the trajectory's learning rate.")
_LQS_BATCH = flags.DEFINE_integer('lqs_batch', 8, '--scores=lqs: rows of data.seq_len tokens per '
                                  'trajectory step and of the target batch (rounded up to the '
                                  'data-parallel size).')
_LQS_SEED = flags.DEFINE_integer('lqs_seed', 0, "--scores=lqs: the seed of the trajectory's "
                                 'sample of the scored documents.')
# Flags that only checkpoint scores read.
_CHECKPOINT_FLAGS = (_EARLY, _TEXT_FILE, _SCORES, _MIN_K, _BATCH_SIZE, _FSDP, _TENSOR, _METADATA,
                     _PREFIX, _LQS_TARGET, _LQS_STEPS, _LQS_LR, _LQS_BATCH, _LQS_SEED)


def _given(holder: flags.FlagHolder) -> bool:
  return holder.value != holder.default


def _check_name(name: str, what: str) -> None:
  """Fails unless stored score set name `name` (`what` says where it comes from) is one."""
  if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', name) or name.endswith('.jsonl'):
    raise errors.UserError(f'--name={name!r} ({what}) must be letters, digits, _ . and - (not '
                           'ending in .jsonl); give --name.')


def _check_flags() -> list[str]:
  """The score names asked for, after checking every flag that needs no file."""
  if not _CHECKPOINT.value:
    raise errors.UserError('Give --checkpoint=DIR (model scores) or --scorer=NAME (model-free, one '
                           f'of {sorted(score_build.SCORERS)}).')
  given = [f'--{holder.name}' for holder in [*_SETTINGS.values(), _RUNNER, _NUM_WORKERS]
           if _given(holder)]
  if given:
    raise errors.UserError(f'{given[0]} is read by --scorer (a model-free scorer), not with '
                           '--checkpoint; drop it, or give --scorer instead of --checkpoint.')
  if (_TASK.value is None) == (_TEXT_FILE.value is None):
    raise errors.UserError('Give exactly one of --task=NAME (a task split) and --text_file=F (a '
                           '.jsonl or text file of documents).')
  if _TEXT_FILE.value is not None and not _OUT.value:
    raise errors.UserError('--out is required with --text_file (a --task\'s scores go beside its '
                           'document store without it).')
  if _OUT.value and _NAME.value is not None:
    raise errors.UserError('Give --out=F.jsonl or --name=NAME (stored beside the document store), '
                           'not both.')
  if not _OUT.value:
    _check_name(_stored_name(), "the stored score set, by default the checkpoint's name")
  names = list(dict.fromkeys(['nll', *_SCORES.value]))
  unknown = [n for n in names if n not in scores_lib.SCORES]
  if unknown:
    raise errors.UserError(f'--scores names unknown score {unknown[0]!r}; choose from '
                           f'{sorted(scores_lib.SCORES)}.')
  if 'learnability' in names and not _EARLY.value:
    raise errors.UserError('--scores=learnability needs --early_checkpoint=DIR: learnability is '
                           'nll(early checkpoint) - nll(--checkpoint).')
  for gradient in ('grand', 'lqs'):
    if _PREFIX.value and gradient in names:
      raise errors.UserError(f'--scores={gradient} takes no --prefix (it reads the gradient of a '
                             f"document's own loss); score {gradient} in a run without --prefix.")
  if 'lqs' in names:
    if not _LQS_TARGET.value:
      raise errors.UserError('--scores=lqs needs --lqs_target=TASK: the task whose validation '
                             'documents are the target set the trajectory is steered towards.')
    if _LQS_STEPS.value < 1 or _LQS_BATCH.value < 1 or not _LQS_LR.value > 0:
      raise errors.UserError(f'--lqs_steps={_LQS_STEPS.value}, --lqs_batch={_LQS_BATCH.value} and '
                             f'--lqs_lr={_LQS_LR.value} must be positive (DELT: 100 steps at '
                             '0.008).')
  scores_lib.check_min_k(_MIN_K.value)
  if _BATCH_SIZE.value < 0:
    raise errors.UserError(f'--batch_size={_BATCH_SIZE.value} must be positive (or 0 for the '
                           "run's eval.batch_size).")
  return names


def _stored_name() -> str:
  """--name, or the first checkpoint's name (WORKDIR-STEP for WORKDIR/checkpoints/STEP)."""
  if _NAME.value is not None:
    return _NAME.value
  head, base = os.path.split(_CHECKPOINT.value[0].rstrip('/'))
  if base.isdigit() and os.path.basename(head) == 'checkpoints':
    return f'{os.path.basename(os.path.dirname(head))}-{base}'
  return base


def _configs():
  """The checkpoints' configs (--checkpoint, then --early_checkpoint), checked to share the
  vocabulary."""
  configs = [(path, flag, finished.checkpoint_config(path, flag))
             for flag, paths in (('--checkpoint', _CHECKPOINT.value),
                                 ('--early_checkpoint', _EARLY.value)) for path in paths]
  _, _, first = configs[0]
  for path, flag, config in configs[1:]:
    for key in ('vocabulary', 'extra_ids'):
      if config.data[key] != first.data[key]:
        raise errors.UserError(f'{flag}={path} has data.{key}={config.data[key]!r} but '
                               f'--checkpoint={configs[0][0]} has {first.data[key]!r}; scores '
                               'are averaged or compared only over one vocabulary.')
  return configs


def _batch_size(config, devices) -> int:
  """--batch_size, checked against the data-parallel size, or the run's eval.batch_size rounded up."""
  mesh = config.mesh.copy_and_resolve_references()
  mesh.data, mesh.fsdp, mesh.tensor, mesh.expert = -1, _FSDP.value, _TENSOR.value, 1
  shape = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(mesh, len(devices))))
  parallel = sharding.data_parallel_size(shape, sharding.logical_rules(mesh))
  if _BATCH_SIZE.value:
    if _BATCH_SIZE.value % parallel:
      raise errors.UserError(f'--batch_size={_BATCH_SIZE.value} must be a multiple of the '
                             f'data-parallel size {parallel}.')
    return _BATCH_SIZE.value
  return -(-config.eval.batch_size // parallel) * parallel


def _lqs_target(config) -> store_lib.DocumentStore:
  """The validation store of --lqs_target (registered by `_documents`, built if small)."""
  tasks.check_task(_LQS_TARGET.value, '--lqs_target')
  store_dir = config.data.store_dir if _STORE_DIR.value is None else _STORE_DIR.value
  return store_lib.load_store(_LQS_TARGET.value, 'validation', config.data.vocabulary, store_dir)


def _documents(config, vocabulary):
  """(store, metadata getter, texts getter, what) of --task or --text_file."""
  if _TEXT_FILE.value is not None:
    documents = scores_lib.text_file_documents(_TEXT_FILE.value, _TEXT_FIELD.value)
    store = scores_lib.tokenize_documents(documents, vocabulary)
    metadata = lambda: [{k: v for k, v in d.items() if k not in ('id', 'text')} for d in documents]
    return store, metadata, lambda: [d['text'] for d in documents], f'--text_file={_TEXT_FILE.value}'
  store_dir = config.data.store_dir if _STORE_DIR.value is None else _STORE_DIR.value
  store = cli.task_store(config, _TASK.value, _SPLIT.value, store_dir)
  return (store, lambda: store.metadata, lambda: store.texts(vocabulary),
          f'--task={_TASK.value} --split={_SPLIT.value}')


def _model_scores(configs, flag, store, batch_size, devices, grand=False, lqs_target=None):
  """The mean over the checkpoints of `flag` of nll, min_k_prob, el2n and, if `grand`, grand,
  with `lqs_target` (a store) lqs, and their steps."""
  per_checkpoint, steps = [], []
  for path, config_flag, config in configs:
    if config_flag != flag:
      continue
    loaded = finished.load_checkpoint(path, config, devices, _FSDP.value, _TENSOR.value, flag)
    vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
    prefix = generate.encode_prompt(_PREFIX.value, vocabulary, None)
    per_checkpoint.append(scores_lib.model_scores(loaded, store.tokens, store.offsets,
                                                  _MIN_K.value, batch_size, prefix=prefix))
    if grand:
      per_checkpoint[-1].update(scores_lib.grand_scores(loaded, store.tokens, store.offsets,
                                                        batch_size))
    if lqs_target is not None:
      per_checkpoint[-1].update(scores_lib.lqs_scores(
          loaded, store.tokens, store.offsets, lqs_target, _LQS_STEPS.value, _LQS_LR.value,
          _LQS_BATCH.value, _LQS_SEED.value, batch_size))
    steps.append({'path': path, 'step': loaded.step})
    del loaded
  return scores_lib.mean_scores(per_checkpoint), steps


def _score_model_free(argv: list[str]) -> None:
  """--scorer: the model-free scorer's Beam pipeline over --task's store (`score_build`)."""
  scorer = _SCORER.value
  score_build.check_name(scorer)
  if _CHECKPOINT.value:
    raise errors.UserError('Give --checkpoint=DIR (model scores) or --scorer=NAME (model-free), '
                           'not both; score the two into files of different --name.')
  given = [f'--{holder.name}' for holder in _CHECKPOINT_FLAGS if _given(holder)]
  given += [f'--{holder.name}' for (owner, _), holder in _SETTINGS.items()
            if owner != scorer and _given(holder)]
  if given:
    raise errors.UserError(f'{given[0]} is not read by --scorer={scorer}; drop it (its settings: '
                           f"{[f'--{h.name}' for (o, _), h in _SETTINGS.items() if o == scorer]}"
                           ', and --task, --split, --name or --out, --store_dir, --config, '
                           '--runner, --num_workers).')
  if _TASK.value is None:
    raise errors.UserError(f'--scorer={scorer} scores the store of a task: give --task=NAME.')
  if _OUT.value and _NAME.value is not None:
    raise errors.UserError('Give --out=F.jsonl or --name=NAME (stored beside the document store), '
                           'not both.')
  name = _NAME.value if _NAME.value is not None else scorer
  if not _OUT.value:
    _check_name(name, "the stored score set, by default the scorer's name")
  if _NUM_WORKERS.value < 0:
    raise errors.UserError(f'--num_workers={_NUM_WORKERS.value} must be 0 (one per core) or more.')
  config = cli.CONFIG.value if cli.CONFIG.value is not None else defaults.get_config()
  tasks.register_config_tasks(config.data)
  tasks.check_task(_TASK.value, '--task')
  store_dir = config.data.store_dir if _STORE_DIR.value is None else _STORE_DIR.value
  out = _OUT.value and (_OUT.value if '://' in _OUT.value else os.path.abspath(_OUT.value))
  if out and epath.Path(out).is_dir():
    raise errors.UserError(f'--out={_OUT.value} is a directory; give a file path (F.jsonl).')
  if not out:
    out = score_files.stored_path(store_lib.store_path(
        _TASK.value, _SPLIT.value, config.data.vocabulary, store_dir), name)
  settings = {setting: holder.value for (owner, setting), holder in _SETTINGS.items()
              if owner == scorer}
  options = build.pipeline_options(_RUNNER.value, argv[1:], _NUM_WORKERS.value)
  path, manifest = score_build.score_store(
      _TASK.value, _SPLIT.value, config.data.vocabulary, config.data.extra_ids, store_dir, scorer,
      settings, out, options)
  reference = f'{path}:{scorer}' if _OUT.value else f'{name}:{scorer}'
  print(f"Scored {manifest['num_documents']} documents of --task={_TASK.value} "
        f"--split={_SPLIT.value} with --scorer={scorer} {manifest['settings']}; wrote {path}. "
        f"Data options name its scores {reference!r}, e.g. data.select.by={reference!r}.")


@cli.exits_on_user_error
def main(argv):
  cli.quiet_absl_logging()
  if _SCORER.value is not None:
    _score_model_free(argv)
    return
  cli.no_arguments(argv)
  names = _check_flags()
  configs = _configs()
  config = configs[0][2]
  devices = jax.devices()
  batch_size = _batch_size(config, devices)
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  store, metadata, texts, what = _documents(config, vocabulary)
  path = _OUT.value or score_files.stored_path(store.directory, _stored_name())
  out = epath.Path(path if '://' in path else os.path.abspath(path))
  if out.is_dir():
    raise errors.UserError(f'--out={_OUT.value} is a directory; give a file path (F.jsonl).')
  if not store.num_documents:
    raise errors.UserError(f'{what} holds no documents; nothing to score.')
  if 'difficulty' in names and any('difficulty' not in m for m in metadata()):
    raise errors.UserError(f"--scores=difficulty: the documents of {what} have no 'difficulty' "
                           'metadata (the synthetic tasks arithmetic, lego and biographies do).')

  model, steps = _model_scores(configs, '--checkpoint', store, batch_size, devices,
                               'grand' in names, _lqs_target(config) if 'lqs' in names else None)
  columns = {'nll': model['nll'], 'perplexity': np.exp(model['nll']),
             'min_k_prob': model['min_k_prob'], 'el2n': model['el2n'],
             'length': windows.lengths(store)}
  for gradient in ('grand', 'lqs'):
    if gradient in names:
      columns[gradient] = model[gradient]
  early_steps = []
  if 'learnability' in names:
    early, early_steps = _model_scores(configs, '--early_checkpoint', store, batch_size, devices)
    columns['learnability'] = early['nll'] - model['nll']
  if 'zlib' in names:
    columns['zlib_ratio'] = np.array([scores_lib.zlib_ratio(t) for t in texts()])
  if 'difficulty' in names:
    columns['difficulty'] = [m['difficulty'] for m in metadata()]
  fields = [scores_lib.SCORES[n] for n in names if n != 'nll']
  num_tokens = windows.lengths(store)
  documents_metadata = metadata() if _METADATA.value else None
  lines = []
  for i, doc_id in enumerate(store.doc_ids):
    record = {'id': doc_id, 'num_tokens': int(num_tokens[i]), 'nll': float(columns['nll'][i])}
    for field in fields:
      value = columns[field][i]
      record[field] = value.item() if isinstance(value, np.generic) else value
    if documents_metadata is not None:
      record['metadata'] = documents_metadata[i]
    lines.append(json.dumps(record) + '\n')
  manifest = {'task': _TASK.value, 'split': _SPLIT.value if _TASK.value else None,
              'text_file': _TEXT_FILE.value, 'vocabulary': config.data.vocabulary,
              'extra_ids': config.data.extra_ids,
              'store_fingerprint': store.manifest.get('fingerprint'),
              'checkpoints': steps, 'early_checkpoints': early_steps, 'scores': names,
              'min_k': _MIN_K.value, 'prefix': _PREFIX.value,
              'lqs': {'target': _LQS_TARGET.value, 'steps': _LQS_STEPS.value, 'lr': _LQS_LR.value,
                      'batch': _LQS_BATCH.value, 'seed': _LQS_SEED.value} if 'lqs' in names
                     else None,
              'num_documents': store.num_documents}
  if jax.process_index() == 0:
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((f'{out}{score_files.MANIFEST_SUFFIX}', json.dumps(manifest, indent=2)),
                       (str(out), ''.join(lines))):
      with score_files.atomic_file(path) as f:
        f.write(text)
  nll = columns['nll']
  mean_nll = float(np.sum(nll * num_tokens) / np.sum(num_tokens))
  print(f'Scored {store.num_documents} documents ({int(num_tokens.sum())} tokens) of {what} with '
        + ', '.join(f'{s["path"]} (step {s["step"]})' for s in steps)
        + f': token-mean nll {mean_nll:.4f} (perplexity {math.exp(mean_nll):.2f}); wrote {out}.'
        + ('' if _OUT.value else f" Data options name its scores '{_stored_name()}:FIELD', e.g. "
           f"data.order.by='{_stored_name()}:nll'."))


if __name__ == '__main__':
  cli.run(main)
