"""Membership inference against a checkpoint: its task's training documents versus held-out ones.

  python -m launch.membership --checkpoint=DIR --task=NAME [--reference=DIR] [--members=1000] \
      [--min_k=0.2] [--fpr=0.01] [--seed=0] [--out=F.json] [--store_dir=D]

DIR is a launch.train workdir (its latest checkpoint), one checkpoint WORKDIR/checkpoints/<step>, or
a launch.convert output, as launch.score takes. The members are --members documents of --task's
train split (a seeded choice, --seed), the non-members up to --members of its validation split (a
task's held-out documents, research/data/tasks.py): --task should be the task the run trained on,
all of whose training documents it saw (a `subset` task's train split holds only the documents it
keeps). --task names a built-in task, one of the run's data.tasks or one of --config's data.tasks.
Each document is scored by research/analysis/scores.py (nll, Min-K% prob at --min_k, the zlib size of its
text), with --reference also by a reference model of the same vocabulary, and each attack of
research/analysis/membership.py (loss, zlib, min_k, reference) is judged by its ROC AUC and its TPR at
--fpr. A table `attack | AUC | TPR@FPR` is printed; --out gets it as JSON (written atomically):
task, checkpoint and step, reference and step, the member and non-member counts, seed, min_k, fpr
and `attacks`: name -> {auc, tpr_at_fpr, higher_is_member}.
"""

import json
import os

from launch import cli  # first: sets TensorFlow's log level before research imports it

import jax
from absl import flags

from research import errors, finished

from research.analysis import membership, scores
from research.data import selection
from research.data import store as store_lib
from research.data import tasks, vocabularies

# --checkpoint, --task, --out and --store_dir are launch.score's too, --min_k is launch.score's and
# --seed launch.generate's and launch.regmix's, with the same types and defaults: allow_override
# lets the commands load in one process (tests).
_CHECKPOINT = cli.define_paths('checkpoint', None, 'The workdir or checkpoint directory to '
                               'attack.', allow_override=True)
_TASK = flags.DEFINE_string('task', None, 'The task whose train split holds the members and whose '
                            'validation split the non-members.', allow_override=True)
_REFERENCE = flags.DEFINE_string('reference', None, 'A reference model\'s workdir or checkpoint '
                                 '(same vocabulary) for the reference attack: nll(--checkpoint) '
                                 '- nll(--reference).')
_MEMBERS = flags.DEFINE_integer('members', 1000, 'Members drawn from the train split; as many '
                                'non-members at most from the validation split.')
_MIN_K = flags.DEFINE_float('min_k', scores.DEFAULT_MIN_K, 'k of Min-K% prob: the fraction of '
                            'least likely tokens averaged.', allow_override=True)
_FPR = flags.DEFINE_float('fpr', membership.DEFAULT_FPR, 'The false-positive rate at which the '
                          'true-positive rate is reported.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the choice of members and non-members.',
                             allow_override=True)
_OUT = flags.DEFINE_string('out', None, 'The JSON file the report is written to.',
                           allow_override=True)
_STORE_DIR = flags.DEFINE_string('store_dir', None, 'Document-store cache (default: the run\'s '
                                 'data.store_dir).', allow_override=True)


def _check_flags() -> str:
  """The checkpoint path, after checking every flag that needs no file."""
  checkpoint = cli.one_checkpoint(_CHECKPOINT.value, 'attack')
  if _TASK.value is None:
    raise errors.UserError('--task is required: the task the run trained on (members: its train '
                           'split; non-members: its validation split).')
  if _MEMBERS.value < 1:
    raise errors.UserError(f'--members={_MEMBERS.value} must be at least 1.')
  scores.check_min_k(_MIN_K.value)
  if not 0 <= _FPR.value <= 1:
    raise errors.UserError(f'--fpr={_FPR.value} must be in [0, 1] (0.01: the TPR at 1% FPR).')
  if _OUT.value and os.path.isdir(_OUT.value):
    raise errors.UserError(f'--out={_OUT.value} is a directory; give the path of the JSON file to '
                           'write.')
  return checkpoint


def _reference_config(config):
  """--reference's config, checked to share --checkpoint's vocabulary; None without it."""
  if _REFERENCE.value is None:
    return None
  reference = finished.checkpoint_config(_REFERENCE.value, '--reference')
  for key in ('vocabulary', 'extra_ids'):
    if reference.data[key] != config.data[key]:
      raise errors.UserError(f'--reference={_REFERENCE.value} has data.{key}='
                             f'{reference.data[key]!r} but --checkpoint={_CHECKPOINT.value[0]} has '
                             f'{config.data[key]!r}; the reference must score the same tokens.')
  return reference


def _documents(config) -> dict[str, store_lib.DocumentStore]:
  """The member and non-member documents: seeded choices of --task's train and validation splits."""
  tasks.register_config_tasks(config.data)
  if cli.CONFIG.value is not None:
    tasks.register_config_tasks(cli.CONFIG.value.data)
  tasks.check_task(_TASK.value, '--task')
  store_dir = config.data.store_dir if _STORE_DIR.value is None else _STORE_DIR.value
  chosen = {}
  for name, split, seed in (('members', 'train', _SEED.value),
                            ('nonmembers', 'validation', _SEED.value + 1)):
    store = store_lib.load_store(_TASK.value, split, config.data.vocabulary, store_dir)
    if not store.num_documents:
      raise errors.UserError(
          f'--task={_TASK.value} has no {split} documents (the {name}); give a task with both '
          'train and validation documents (a files task puts those whose id hashes into the '
          f'lowest {tasks.VALIDATION_FRACTION:.0%} in validation).')
    indices = membership.sample_documents(store.num_documents, _MEMBERS.value, seed)
    chosen[name] = selection.subset(store, indices)
  return chosen


def _scores(path, config, flag, documents, vocabulary, devices):
  """Each document set's `membership.document_scores` under checkpoint `path`, and its step."""
  loaded = finished.load_checkpoint(path, config, devices, flag=flag)
  parallel = loaded.data_parallel_size()
  batch_size = -(-config.eval.batch_size // parallel) * parallel
  result = {name: membership.document_scores(loaded, store, vocabulary, _MIN_K.value, batch_size)
            for name, store in documents.items()}
  return result, loaded.step


def table(report: dict[str, dict], fpr: float) -> str:
  """The attacks' AUC and TPR at `fpr` as an aligned text table."""
  rows = [('attack', 'AUC', f'TPR@{fpr * 100:g}%FPR')]
  for name, result in report.items():
    direction = 'higher' if result['higher_is_member'] else 'lower'
    rows.append((f'{name} ({direction} = member)', f'{result["auc"]:.4f}',
                 f'{result["tpr_at_fpr"]:.4f}'))
  widths = [max(len(row[i]) for row in rows) for i in range(3)]
  return '\n'.join(' | '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                   for row in rows)


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  path = _check_flags()
  config = finished.checkpoint_config(path, '--checkpoint')
  reference_config = _reference_config(config)
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  documents = _documents(config)
  devices = jax.devices()
  target, step = _scores(path, config, '--checkpoint', documents, vocabulary, devices)
  reference_step = None
  if reference_config is not None:
    reference, reference_step = _scores(_REFERENCE.value, reference_config, '--reference',
                                        documents, vocabulary, devices)
    for name, result in target.items():
      result['reference_nll'] = reference[name]['nll']
  report = membership.attack_report(target['members'], target['nonmembers'], _FPR.value)
  counts = {name: store.num_documents for name, store in documents.items()}
  print(f'Membership inference on {path} (step {step}): {counts["members"]} members (train) vs '
        f'{counts["nonmembers"]} non-members (validation) of --task={_TASK.value}'
        + (f', reference {_REFERENCE.value} (step {reference_step})' if reference_config else '')
        + f', Min-K% k={_MIN_K.value}:')
  print(table(report, _FPR.value))
  if _OUT.value and jax.process_index() == 0:
    result = {'task': _TASK.value, 'checkpoint': path, 'step': step, 'reference': _REFERENCE.value,
              'reference_step': reference_step, **counts, 'seed': _SEED.value,
              'min_k': _MIN_K.value, 'fpr': _FPR.value, 'attacks': report}
    cli.write_atomically(_OUT.value, json.dumps(result, indent=2) + '\n')
    print(f'Wrote {_OUT.value}.')


if __name__ == '__main__':
  cli.run(main)
