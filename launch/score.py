"""Scores every document of a task split or a text file with one or more checkpoints.

  python -m launch.score --checkpoint=DIR[,DIR...] (--task=NAME [--name=SCORES] | --text_file=F) \
      [--out=F.jsonl] [--scores=nll,perplexity,min_k,el2n,length,zlib] [--min_k=0.2] \
      [--split=train] [--early_checkpoint=DIR[,DIR...]] [--batch_size=N] [--metadata] \
      [--prefix=TEXT]

DIR is a launch.train workdir (its latest checkpoint), one checkpoint WORKDIR/checkpoints/<step>, or
a launch.convert output; its config.json gives the model, data.seq_len and data.vocabulary. Several
DIRs (runs of other seeds) average each model score, as Data Diet averages EL2N and GraNd over runs.
--task names a built-in task, one of the run's data.tasks or one of --config's data.tasks; its store
is read from (or built into) data.store_dir. --text_file is a .jsonl file (one document a line, its
`text` field) or a text file (one document a non-blank line), ids PATH:LINE. research/analysis/scores.py
defines the scores; `grand` (GraNd, a loss-gradient norm) costs a backward pass and a gradient per
document, far more than the others, and is computed only when asked for.

OUT gets one JSON object a line, in store order: `id`, `num_tokens`, `nll` and the other scores
asked for (`perplexity`, `min_k_prob`, `el2n`, `grand`, `length`, `zlib_ratio`, `learnability`,
`difficulty`), with --metadata the document's `metadata`; OUT.manifest.json records what was scored
(task or file, split, vocabulary, the store's fingerprint, checkpoints and steps, k). Both are
written to temporary files and renamed, so a failure leaves neither half-written. With --task and
no --out, OUT is STORE/scores/SCORES.jsonl beside the task's document store, SCORES being --name
(default: the checkpoint's name, WORKDIR-STEP for WORKDIR/checkpoints/STEP): `data.order.by` and
`data.select.by` then name a score 'SCORES:FIELD' without a path (research/data/score_files.py).
The file is also what a `subset` task's `scores` reads (research/data/tasks.py).

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

from research import errors, finished, generate, sharding

from research.analysis import scores as scores_lib
from research.data import score_files
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


def _check_flags() -> list[str]:
  """The score names asked for, after checking every flag that needs no file."""
  if not _CHECKPOINT.value:
    raise errors.UserError('--checkpoint is required.')
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
    name = _stored_name()
    if not re.fullmatch(r'[A-Za-z0-9][A-Za-z0-9_.-]*', name) or name.endswith('.jsonl'):
      raise errors.UserError(f'--name={name!r} (the stored score set, by default the checkpoint\'s '
                             'name) must be letters, digits, _ . and - (not ending in .jsonl); '
                             'give --name.')
  names = list(dict.fromkeys(['nll', *_SCORES.value]))
  unknown = [n for n in names if n not in scores_lib.SCORES]
  if unknown:
    raise errors.UserError(f'--scores names unknown score {unknown[0]!r}; choose from '
                           f'{sorted(scores_lib.SCORES)}.')
  if 'learnability' in names and not _EARLY.value:
    raise errors.UserError('--scores=learnability needs --early_checkpoint=DIR: learnability is '
                           'nll(early checkpoint) - nll(--checkpoint).')
  if _PREFIX.value and 'grand' in names:
    raise errors.UserError('--scores=grand takes no --prefix (GraNd is the gradient of a '
                           "document's own loss); score grand in a run without --prefix.")
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


def _documents(config, vocabulary):
  """(store, metadata getter, texts getter, what) of --task or --text_file."""
  if _TEXT_FILE.value is not None:
    documents = scores_lib.text_file_documents(_TEXT_FILE.value, _TEXT_FIELD.value)
    store = scores_lib.tokenize_documents(documents, vocabulary)
    metadata = lambda: [{k: v for k, v in d.items() if k not in ('id', 'text')} for d in documents]
    return store, metadata, lambda: [d['text'] for d in documents], f'--text_file={_TEXT_FILE.value}'
  tasks.register_config_tasks(config.data)
  if cli.CONFIG.value is not None:
    tasks.register_config_tasks(cli.CONFIG.value.data)
  tasks.check_task(_TASK.value, '--task')
  if _SPLIT.value not in tasks.SPLITS:
    raise errors.UserError(f'--split={_SPLIT.value!r} is not a split; use one of '
                           f'{list(tasks.SPLITS)}.')
  store_dir = config.data.store_dir if _STORE_DIR.value is None else _STORE_DIR.value
  store = store_lib.load_store(_TASK.value, _SPLIT.value, config.data.vocabulary, store_dir)
  return (store, lambda: store.metadata, lambda: store.texts(vocabulary),
          f'--task={_TASK.value} --split={_SPLIT.value}')


def _model_scores(configs, flag, store, batch_size, devices, grand=False):
  """The mean over the checkpoints of `flag` of nll, min_k_prob, el2n and, if `grand`, grand, and
  their steps."""
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
    steps.append({'path': path, 'step': loaded.step})
    del loaded
  return scores_lib.mean_scores(per_checkpoint), steps


def _write_atomically(path: epath.Path, text: str) -> None:
  tmp = path.with_name(f'.{path.name}.tmp{os.getpid()}')
  try:
    tmp.write_text(text)
    tmp.replace(path)
  except BaseException:
    if tmp.exists():
      tmp.unlink()
    raise


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
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
                               'grand' in names)
  columns = {'nll': model['nll'], 'perplexity': np.exp(model['nll']),
             'min_k_prob': model['min_k_prob'], 'el2n': model['el2n'],
             'length': windows.lengths(store)}
  if 'grand' in names:
    columns['grand'] = model['grand']
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
              'num_documents': store.num_documents}
  if jax.process_index() == 0:
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically(out.with_name(out.name + '.manifest.json'), json.dumps(manifest, indent=2))
    _write_atomically(out, ''.join(lines))
  nll = columns['nll']
  mean_nll = float(np.sum(nll * num_tokens) / np.sum(num_tokens))
  print(f'Scored {store.num_documents} documents ({int(num_tokens.sum())} tokens) of {what} with '
        + ', '.join(f'{s["path"]} (step {s["step"]})' for s in steps)
        + f': token-mean nll {mean_nll:.4f} (perplexity {math.exp(mean_nll):.2f}); wrote {out}.'
        + ('' if _OUT.value else f" Data options name its scores '{_stored_name()}:FIELD', e.g. "
           f"data.order.by='{_stored_name()}:nll'."))


if __name__ == '__main__':
  cli.run(main)
