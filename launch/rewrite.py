"""Rewrites every document of a task split with a checkpoint into a new files task (WRAP, REWIRE).

  python -m launch.rewrite --checkpoint=DIR --task=NAME --out=DIR_OUT \
      --template='Rewrite this like Wikipedia: {text}\nRewritten:' [--split=train] \
      [--num_documents=0] [--max_new_tokens=256] [--max_document_tokens=0] [--temperature=0] \
      [--seed=0] [--batch_size=16] [--part_size=1024] [--mode=rewrite|prox|label]

DIR is a launch.train workdir (its latest checkpoint), one checkpoint WORKDIR/checkpoints/<step>, or
a launch.convert output (an imported Hugging Face model); its config.json gives the model and
data.vocabulary, in which --task's store is read (built if small) from its data.store_dir. Each
document's text, cut to its first --max_document_tokens tokens (0: the run's data.seq_len minus
--max_new_tokens), replaces {text} in --template; the prompt is continued greedily (or sampled at
--temperature, seeded by --seed and the batch's first document) for at most --max_new_tokens, up to
the vocabulary's EOS, --batch_size prompts at a time on one device (research/generate.py).
--num_documents > 0 rewrites the split's first that many documents. With --mode=prox the
continuation is a ProX refinement program (drop_doc(), keep_doc(), remove_lines(a, b),
normalize('x', 'y'); Zhou et al. 2024, arXiv 2409.17115; research/prox.py), run on the whole
document: the part holds the refined documents with their `program`, and not those it drops.
With --mode=label a document becomes its prompt and the continuation: pseudo-labels (a model
fine-tuned on a task labels unlabelled documents; template e.g. '{text}\nSentiment:').

OUT (local or gs://) gets part-NNNNN.jsonl files of --part_size rewrites each (`text`, `source_id`)
and manifest.json (research/rewrite.py). Running the same command again resumes: the finished parts
are kept, and other settings are refused naming the one that changed. Train on the rewrites with
a files task, beside the originals (WRAP's mix) or instead of them:

  config.data.tasks = {'wiki_style': {'source': 'files', 'pattern': 'OUT/part-*.jsonl',
                                      'format': 'jsonl'}}
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import jax
from absl import flags
from etils import epath

from research import errors, finished
from research import rewrite as rewrite_lib

# launch.score and launch.generate define some of these too; allow_override lets the commands load
# in one process (tests).
_CHECKPOINT = cli.define_paths('checkpoint', None, 'The workdir or checkpoint directory to '
                               'rewrite with.', allow_override=True)
_TASK = flags.DEFINE_string('task', None, 'The task whose --split is rewritten.',
                            allow_override=True)
_SPLIT = flags.DEFINE_string('split', 'train', 'The split of --task.', allow_override=True)
_OUT = flags.DEFINE_string('out', None, 'The directory of the rewrites (local or gs://).',
                           allow_override=True)
_TEMPLATE = flags.DEFINE_string('template', None, 'The prompt; {text} marks the document.')
_NUM_DOCUMENTS = flags.DEFINE_integer('num_documents', 0, 'Rewrite the first N documents (0: all).')
_MAX_NEW_TOKENS = flags.DEFINE_integer('max_new_tokens', 256, 'Tokens of a rewrite at most.',
                                       allow_override=True)
_MAX_DOCUMENT_TOKENS = flags.DEFINE_integer(
    'max_document_tokens', 0, "A document's tokens kept in its prompt (0: data.seq_len minus "
    '--max_new_tokens).')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.0, 'Sampling temperature; 0 = greedy.',
                                  allow_override=True)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the sampling keys.', allow_override=True)
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'Prompts continued together.',
                                   allow_override=True)
_PART_SIZE = flags.DEFINE_integer('part_size', 1024, 'Rewrites per output part (the unit of '
                                  'resumption).')
_MODE = flags.DEFINE_enum('mode', 'rewrite', rewrite_lib.MODES, 'rewrite: the continuation is '
                          'the new document; prox: it is a ProX refinement program run on the '
                          'document (research/prox.py); label: the prompt and its continuation '
                          '(a pseudo-labelled example).')


def _settings(path: str, step: int, config, num_documents: int) -> rewrite_lib.Settings:
  """The checked settings of this rewrite."""
  for holder in (_MAX_NEW_TOKENS, _BATCH_SIZE, _PART_SIZE):
    if holder.value < 1:
      raise errors.UserError(f'--{holder.name}={holder.value} must be at least 1.')
  if _NUM_DOCUMENTS.value < 0 or _MAX_DOCUMENT_TOKENS.value < 0:
    raise errors.UserError(f'--num_documents={_NUM_DOCUMENTS.value} and --max_document_tokens='
                           f'{_MAX_DOCUMENT_TOKENS.value} must be >= 0 (0: all, or the default).')
  if not _TEMPERATURE.value >= 0:
    raise errors.UserError(f'--temperature={_TEMPERATURE.value} must be >= 0 (0 = greedy).')
  document_tokens = _MAX_DOCUMENT_TOKENS.value or config.data.seq_len - _MAX_NEW_TOKENS.value
  if document_tokens < 1:
    raise errors.UserError(f'--max_new_tokens={_MAX_NEW_TOKENS.value} leaves no room for the '
                           f'document in the run\'s data.seq_len={config.data.seq_len}; lower it '
                           'or give --max_document_tokens.')
  return rewrite_lib.Settings(
      checkpoint=path, step=step, task=_TASK.value, split=_SPLIT.value,
      template=_TEMPLATE.value, max_new_tokens=_MAX_NEW_TOKENS.value,
      max_document_tokens=document_tokens, temperature=_TEMPERATURE.value, seed=_SEED.value,
      part_size=_PART_SIZE.value, batch_size=_BATCH_SIZE.value, num_documents=num_documents,
      mode=_MODE.value)


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  path = cli.one_checkpoint(_CHECKPOINT.value, 'rewrite with')
  rewrite_lib.check_template(_TEMPLATE.value or '')
  if not _TASK.value or not _OUT.value:
    raise errors.UserError('Give --task=NAME (the documents to rewrite) and --out=DIR (where the '
                           'rewrites go).')
  config = finished.checkpoint_config(path, '--checkpoint', decoder_only=False)
  store = cli.task_store(config, _TASK.value, _SPLIT.value, config.data.store_dir)
  num_documents = min(_NUM_DOCUMENTS.value or store.num_documents, store.num_documents)
  if not num_documents:
    raise errors.UserError(f'--task={_TASK.value} --split={_SPLIT.value} holds no documents.')
  loaded = finished.load_checkpoint(path, config, jax.local_devices()[:1])
  settings = _settings(path, loaded.step, config, num_documents)
  out = epath.Path(_OUT.value)
  rewrite_lib.check_manifest(out, settings)
  made = rewrite_lib.rewrite(loaded, store, settings, out, print)
  parts = -(-num_documents // settings.part_size)
  print(f'Rewrote {num_documents} documents of {_TASK.value} ({_SPLIT.value}) with {path} (step '
        f'{loaded.step}) into {parts} parts in {out}: {made} made now, {parts - made} found done.')


if __name__ == '__main__':
  cli.run(main)
