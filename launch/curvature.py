"""Measures the loss landscape of a checkpoint: the Hessian's trace and top eigenvalue, the gradient
noise scale (critical batch size) and the calibration of its multiple-choice answers.

  python -m launch.curvature --checkpoint=DIR --task=NAME [--measures=hessian,noise_scale] \
      [--hessian_batch=32 --hessian_probes=32 --hessian_iterations=20] \
      [--noise_small=8 --noise_big=64 --noise_batches=8] [--seed=0] [--store_dir=D] [--out=F.json]
  python -m launch.curvature --checkpoint=DIR --measures=calibration --calibration_task=NAME \
      [--calibration_examples=0] [--calibration_bins=10]

DIR is a launch.train workdir (its latest checkpoint), one checkpoint WORKDIR/checkpoints/<step>, or
a launch.convert output, of a decoder, as launch.score takes. research/analysis/curvature.py
defines the measures, on the causal-LM loss (mean token cross-entropy) of rows of data.seq_len
tokens: the windows of --task's train documents in a seeded permutation (--seed), the same rows
for the same flags. --task names a built-in task, one of the run's data.tasks or one of --config's.

  hessian      Hutchinson's estimate of the Hessian trace (--hessian_probes Rademacher probes, with
               its standard error) and the top eigenvalue by --hessian_iterations steps of power
               iteration (sharpness), on the loss of the first --hessian_batch rows
  noise_scale  McCandlish et al.'s simple noise scale B_simple = tr(Sigma) / |G|^2 (the critical
               batch size) from the gradients of --noise_batches big batches of --noise_big rows,
               each split into small batches of --noise_small rows (the rows after the Hessian's)
  calibration  the expected calibration error of the picks of the in-loop multiple-choice
               questions (research/multiple_choice.py: the run's eval.multiple_choice shots and
               choices, --calibration_examples questions, 0 for its examples) on the validation
               documents of --calibration_task, a task of prompts and answers (arithmetic, lego,
               biographies), over --calibration_bins equal-width bins

Batches are rounded up to a multiple of the data-parallel size (all devices; --noise_big to a
multiple of --noise_small). The results are printed and written as JSON (the checkpoint and step,
the flags, the sizes used and each measure's statistics) to --out, default
WORKDIR/curvature/step<STEP>.json, through a temporary file, so a failure leaves no half file.
"""

import json
import os

from launch import cli  # first: sets TensorFlow's log level before research imports it

import jax
from absl import flags

from research import errors, finished, multiple_choice, runs
from research.analysis import calibration, curvature
from research.data import pipeline
from research.data import store as store_lib
from research.data import tasks, vocabularies

MEASURES = ('hessian', 'noise_scale', 'calibration')

# --checkpoint, --task, --out, --store_dir and --seed are other commands' too, with the same types
# and defaults: allow_override lets the commands load in one process (tests).
_CHECKPOINT = cli.define_paths('checkpoint', None, 'The workdir or checkpoint directory to '
                               'measure.', allow_override=True)
_TASK = flags.DEFINE_string('task', None, 'The task whose train documents the loss is measured '
                            'on (hessian, noise_scale).', allow_override=True)
_MEASURES = flags.DEFINE_list('measures', ['hessian', 'noise_scale'],
                              f'What to measure, of {list(MEASURES)}.')
_HESSIAN_BATCH = flags.DEFINE_integer('hessian_batch', 32, 'Rows of data.seq_len tokens whose '
                                      "loss's Hessian is measured.")
_HESSIAN_PROBES = flags.DEFINE_integer('hessian_probes', 32, "Rademacher probes of Hutchinson's "
                                       'trace estimate (at least 2, for its standard error).')
_HESSIAN_ITERATIONS = flags.DEFINE_integer('hessian_iterations', 20, 'Power-iteration steps of '
                                           'the top-eigenvalue estimate.')
_NOISE_SMALL = flags.DEFINE_integer('noise_small', 8, 'Rows of the small batches of the noise '
                                    'scale.')
_NOISE_BIG = flags.DEFINE_integer('noise_big', 64, 'Rows of the big batches of the noise scale, '
                                  'each made of small ones.')
_NOISE_BATCHES = flags.DEFINE_integer('noise_batches', 8, 'Big batches the noise scale averages '
                                      'over (at least 2 for standard errors).')
_CALIBRATION_TASK = flags.DEFINE_string('calibration_task', None, 'The task of prompts and answers '
                                        'whose multiple-choice questions are calibrated.')
_CALIBRATION_EXAMPLES = flags.DEFINE_integer('calibration_examples', 0, 'Questions asked (0: the '
                                             "run's eval.multiple_choice.examples).")
_CALIBRATION_BINS = flags.DEFINE_integer('calibration_bins', calibration.DEFAULT_BINS,
                                         'Equal-width confidence bins of the calibration error.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the rows and of the probes.', allow_override=True)
_STORE_DIR = flags.DEFINE_string('store_dir', None, 'Document-store cache (default: the run\'s '
                                 'data.store_dir).', allow_override=True)
_OUT = flags.DEFINE_string('out', None, 'The JSON file written (default: '
                           'WORKDIR/curvature/step<STEP>.json).', allow_override=True)


def _check_flags() -> tuple[str, list[str]]:
  """(the checkpoint path, the measures asked for), after checking every flag that needs no file."""
  path = cli.one_checkpoint(_CHECKPOINT.value, 'measure')
  measures = list(dict.fromkeys(_MEASURES.value))
  unknown = [m for m in measures if m not in MEASURES]
  if unknown or not measures:
    raise errors.UserError(f'--measures={",".join(_MEASURES.value)} names '
                           f'{repr(unknown[0]) if unknown else "nothing"}; choose from '
                           f'{list(MEASURES)}.')
  least = [(_HESSIAN_BATCH, 1), (_HESSIAN_PROBES, 2), (_HESSIAN_ITERATIONS, 2), (_NOISE_SMALL, 1),
           (_NOISE_BIG, 2), (_NOISE_BATCHES, 1), (_CALIBRATION_EXAMPLES, 0),
           (_CALIBRATION_BINS, 1)]
  for holder, minimum in least:
    if holder.value < minimum:
      raise errors.UserError(f'--{holder.name}={holder.value} must be at least {minimum}.')
  if 'noise_scale' in measures and _NOISE_BIG.value <= _NOISE_SMALL.value:
    raise errors.UserError(f'--noise_big={_NOISE_BIG.value} must be larger than --noise_small='
                           f'{_NOISE_SMALL.value}: the noise scale compares two batch sizes.')
  if {'hessian', 'noise_scale'} & set(measures) and not _TASK.value:
    raise errors.UserError('--measures=hessian and noise_scale need --task=NAME: the task whose '
                           'train documents the loss is measured on (e.g. one of the run\'s '
                           'data.mixture).')
  if 'calibration' in measures and not _CALIBRATION_TASK.value:
    raise errors.UserError('--measures=calibration needs --calibration_task=NAME: a task of '
                           'prompts and answers (arithmetic, lego, biographies) whose '
                           'multiple-choice questions are answered.')
  if _OUT.value and os.path.isdir(_OUT.value):
    raise errors.UserError(f'--out={_OUT.value} is a directory; give the path of the JSON file to '
                           'write.')
  return path, measures


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _sizes(parallel: int, measures: list[str]) -> dict[str, int]:
  """The batch sizes used: the flags' rounded up to multiples of the data-parallel size `parallel`
  (the big batch to a multiple of the small); fails naming --noise_big when the two meet."""
  small = _round_up(_NOISE_SMALL.value, parallel)
  big = _round_up(_NOISE_BIG.value, small)
  if big == small and 'noise_scale' in measures:
    raise errors.UserError(f'--noise_big={_NOISE_BIG.value} rounds to --noise_small={small} (a '
                           f'multiple of the data-parallel size {parallel}); give at least '
                           f'{2 * small}.')
  return {'hessian_batch': _round_up(_HESSIAN_BATCH.value, parallel), 'noise_small': small,
          'noise_big': big}


def _calibration_store(config) -> None:
  """Fails naming --calibration_task unless it is a task whose validation documents are prompts
  and answers (built here if small)."""
  task = _CALIBRATION_TASK.value
  tasks.register_config_tasks(config.data)
  tasks.check_task(task, '--calibration_task')
  store = store_lib.load_store(task, 'validation', config.data.vocabulary, config.data.store_dir)
  if not store.num_documents or not all('prompt' in m and 'answer' in m for m in store.metadata):
    raise errors.UserError(f'--calibration_task={task}: its validation documents are not prompts '
                           'and answers (metadata `prompt` and `answer`); give arithmetic, lego, '
                           'biographies or a task of theirs.')


def _calibration_set(config, vocabulary, batch_size: int) -> multiple_choice.ChoiceSet:
  """The multiple-choice questions of --calibration_task: the run's eval.multiple_choice, with
  --calibration_examples questions, drawn as the in-loop evaluation draws them."""
  settings = config.eval.multiple_choice.copy_and_resolve_references()
  settings.examples = _CALIBRATION_EXAMPLES.value or settings.examples
  return multiple_choice.choice_set(config.data, _CALIBRATION_TASK.value, settings, batch_size,
                                    vocabulary, pipeline.EVAL_SEED)


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  path, measures = _check_flags()
  config = finished.checkpoint_config(path, '--checkpoint')
  if _STORE_DIR.value is not None:
    config.data.store_dir = _STORE_DIR.value
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  store = (cli.task_store(config, _TASK.value, 'train', config.data.store_dir)
           if {'hessian', 'noise_scale'} & set(measures) else None)
  if store is not None and not store.num_documents:
    raise errors.UserError(f'--task={_TASK.value} has no train documents; give a task with some.')
  if 'calibration' in measures:
    _calibration_store(config)
  loaded = finished.load_checkpoint(path, config)
  parallel = loaded.data_parallel_size()
  sizes = _sizes(parallel, measures)
  choice_set = (_calibration_set(config, vocabulary, _round_up(config.eval.batch_size, parallel))
                if 'calibration' in measures else None)
  result = {'checkpoint': path, 'step': loaded.step, 'task': _TASK.value, 'seed': _SEED.value,
            'measures': measures}
  if store is not None:
    hessian_rows = sizes['hessian_batch'] if 'hessian' in measures else 0
    noise_rows = sizes['noise_big'] * _NOISE_BATCHES.value if 'noise_scale' in measures else 0
    rows = curvature.window_rows(loaded, store, hessian_rows + noise_rows, _SEED.value)
  if 'hessian' in measures:
    result['hessian'] = {
        'batch_rows': hessian_rows, 'probes': _HESSIAN_PROBES.value,
        'iterations': _HESSIAN_ITERATIONS.value,
        **curvature.hessian_statistics(loaded, {k: v[:hessian_rows] for k, v in rows.items()},
                                       _SEED.value, _HESSIAN_PROBES.value,
                                       _HESSIAN_ITERATIONS.value)}
  if 'noise_scale' in measures:
    result['noise_scale'] = {
        'small_rows': sizes['noise_small'], 'big_rows': sizes['noise_big'],
        'batches': _NOISE_BATCHES.value,
        **curvature.noise_scale_statistics(loaded, {k: v[hessian_rows:] for k, v in rows.items()},
                                           sizes['noise_small'], sizes['noise_big'])}
  if choice_set is not None:
    result['calibration'] = {'task': _CALIBRATION_TASK.value, 'num_bins': _CALIBRATION_BINS.value,
                             **calibration.choice_calibration(loaded, choice_set,
                                                            _CALIBRATION_BINS.value)}
  out = _OUT.value or os.path.join(runs.workdir(path), 'curvature', f'step{loaded.step}.json')
  if jax.process_index() == 0:
    cli.write_atomically(out, json.dumps(result, indent=2) + '\n')
  print(f'{path} (step {loaded.step}): '
        + '; '.join(f'{name} ' + ', '.join(f'{k} {v:.6g}' for k, v in result[name].items()
                                           if isinstance(v, float))
                    for name in measures)
        + f'; wrote {out}.')


if __name__ == '__main__':
  cli.run(main)
