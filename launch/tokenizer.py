"""Trains a SentencePiece vocabulary on the train split of a registered task.

  python -m launch.tokenizer --task=stdlib_prose --vocab_size=8000 --out=/tmp/spm/prose \
      [--max_documents=10000] [--model_type=unigram] \
      [--config=experiments/NAME.py [--config.a.b=V ...]]

writes /tmp/spm/prose.model (see research/data/vocabularies.py: PAD 0, EOS 1, UNK 2, lossless) and
prints how to train with it: --config.data.vocabulary=spm:/tmp/spm/prose.model. With --config, the
tasks that experiment defines in `config.data.tasks` can be named by --task too.
"""

from launch import cli  # first: sets TensorFlow's log level before seqio imports it

from collections.abc import Iterator

import ml_collections
import seqio
from absl import flags

from research import defaults
from research import config as config_lib
from research import errors
from research.data import tasks
from research.data import vocabularies

_TASK = flags.DEFINE_string('task', None, 'Registered seqio task whose train-split text is read.')
_VOCAB_SIZE = flags.DEFINE_integer('vocab_size', None, 'Number of SentencePiece pieces (PAD, EOS, '
                                   'UNK and, with byte fallback, 256 byte pieces included).')
# Other commands define --out too; allow_override lets their modules load in one process (tests).
_OUT = flags.DEFINE_string('out', None, 'Model path prefix: writes OUT.model (local or gs://).',
                           allow_override=True)
_MAX_DOCUMENTS = flags.DEFINE_integer('max_documents', None,
                                      'Read only the first this many documents (default: all).')
_MODEL_TYPE = flags.DEFINE_enum('model_type', 'unigram', vocabularies.MODEL_TYPES,
                                'SentencePiece model type.')
flags.mark_flags_as_required(['task', 'vocab_size', 'out'])


def task_texts(task_name: str, max_documents: int | None) -> Iterator[str]:
  """The 'text' of the first `max_documents` (None: all) train documents of `task_name`, streamed.

  Fails at once, before any document is read, when the task has no train split or no text.
  """
  tasks.register_tasks()
  names = sorted(seqio.TaskRegistry.names())
  if task_name not in names:
    raise errors.UserError(f'--task={task_name} is not a registered task; use one of {names}.')
  source = seqio.TaskRegistry.get(task_name).source
  if 'train' not in source.splits:
    raise errors.UserError(f'--task={task_name} has no train split (its splits: '
                           f'{list(source.splits)}); pick a task with one.')
  dataset = source.get_dataset(split='train', shuffle=False)
  if 'text' not in dataset.element_spec:
    raise errors.UserError(f'--task={task_name} has no raw text field (its source yields '
                           f'{sorted(dataset.element_spec)}); pick a task whose source yields '
                           "'text'.")
  if max_documents is not None:
    dataset = dataset.take(max_documents)
  return (example['text'].decode('utf-8') for example in tasks.numpy_examples(dataset))


def train_tokenizer(task_name: str, vocab_size: int, out: str, max_documents: int | None,
                    model_type: str) -> str:
  """Trains SentencePiece on the task's train text; returns the .model path."""
  if vocab_size <= 0:
    raise errors.UserError(f'--vocab_size={vocab_size} must be positive.')
  if max_documents is not None and max_documents <= 0:
    raise errors.UserError(f'--max_documents={max_documents} must be positive (or left out for '
                           'all documents).')
  texts = task_texts(task_name, max_documents)
  return vocabularies.train_sentencepiece(texts, vocab_size, out, model_type=model_type)


def register_experiment_tasks(config: ml_collections.ConfigDict) -> None:
  """Registers the tasks `config.data.tasks` defines, after checking `config` against the schema."""
  config_lib.check_schema(config, defaults.get_config())
  tasks.register_config_tasks(config.data)


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  if cli.CONFIG.value is not None:
    register_experiment_tasks(cli.CONFIG.value)
  path = train_tokenizer(_TASK.value, _VOCAB_SIZE.value, _OUT.value, _MAX_DOCUMENTS.value,
                         _MODEL_TYPE.value)
  print(f'Wrote {path} ({_VOCAB_SIZE.value} pieces, trained on task {_TASK.value}).\n'
        f'Train with it: --config.data.vocabulary={vocabularies.SPM_PREFIX}{path} and '
        f'--config.model.vocab_size at least {_VOCAB_SIZE.value} + data.extra_ids.')


if __name__ == '__main__':
  cli.run(main)
