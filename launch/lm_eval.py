"""Runs EleutherAI lm-evaluation-harness tasks on a checkpoint (downstream evaluation).

  python -m launch.lm_eval --checkpoint=DIR --tasks=NAME[,NAME...] [--num_fewshot=K] \
      [--limit=N] [--include_path=TASK_DIR] [--batch_size=B] [--out=F.json]

DIR is a launch.train workdir (its latest checkpoint, also while the run goes on), one checkpoint
WORKDIR/checkpoints/<step>, or a launch.convert output, of a decoder. Its model answers lm-eval's
requests through research/interop/lm_eval_adapter.py (scoring as launch.score, generation as
launch.generate). --tasks are lm-eval task, group or tag names (`lm-eval ls tasks` lists them) or
task YAML files; --include_path adds a directory of task YAMLs, e.g. one over a local file
(`dataset_path: json` with `dataset_kwargs: {data_files: ...}`). lm-eval downloads the datasets of
its own tasks; HF_DATASETS_OFFLINE=1 keeps it to those already cached. --num_fewshot overrides the
tasks' few-shot counts, --limit evaluates the first N examples of each task.

The metrics are printed as lm-eval's table and written with the rest of lm-eval's results (task
configs, versions, few-shot counts; config.checkpoint and config.step name the model) to OUT,
default WORKDIR/lm_eval/step<STEP>.json. Needs `pip install lm_eval`.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import json
import os

from absl import flags

from research import errors, runs

# Other commands define --checkpoint, --batch_size and --out with the same types and defaults:
# allow_override lets the commands load in one process (tests).
_CHECKPOINT = cli.define_paths('checkpoint', None, 'The workdir or checkpoint directory to '
                               'evaluate.', allow_override=True)
_TASKS = flags.DEFINE_list('tasks', None, 'lm-eval task, group or tag names, or task YAML files.')
_NUM_FEWSHOT = flags.DEFINE_integer('num_fewshot', None, 'Few-shot examples per prompt (default: '
                                    "each task's own, else 0).")
_LIMIT = flags.DEFINE_integer('limit', None, 'Evaluate only the first N examples of each task.')
_INCLUDE_PATH = flags.DEFINE_string('include_path', None, 'A directory of extra task YAML files.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 0, "Rows per forward pass (0: the run's "
                                   'eval.batch_size).', allow_override=True)
_OUT = flags.DEFINE_string('out', None, 'The JSON file the results are written to (default: '
                           'WORKDIR/lm_eval/step<STEP>.json).', allow_override=True)


def _checkpoint() -> str:
  return cli.one_checkpoint(_CHECKPOINT.value, 'evaluate')


def _check_flags() -> None:
  if not _TASKS.value:
    raise errors.UserError('Give --tasks=NAME[,NAME...]: lm-eval task names (`lm-eval ls tasks` '
                           'lists them) or task YAML files.')
  for name, value, least in (('num_fewshot', _NUM_FEWSHOT.value, 0), ('limit', _LIMIT.value, 1),
                             ('batch_size', _BATCH_SIZE.value, 0)):
    if value is not None and value < least:
      raise errors.UserError(f'--{name}={value} must be at least {least}.')
  if _INCLUDE_PATH.value is not None and not os.path.isdir(_INCLUDE_PATH.value):
    raise errors.UserError(f'--include_path={_INCLUDE_PATH.value} is not a directory; give a '
                           'directory of lm-eval task YAML files.')


def _task_manager():
  """lm-eval's TaskManager with --include_path; fails naming the --tasks it does not know."""
  from lm_eval import tasks

  manager = tasks.TaskManager(include_path=_INCLUDE_PATH.value)
  unknown = [name for name in _TASKS.value
             if name not in manager.all_tasks and not os.path.isfile(name)]
  if unknown:
    raise errors.UserError(f'--tasks: {", ".join(unknown)} is no lm-eval task, group, tag or task '
                           'YAML file; `lm-eval ls tasks` lists them, and --include_path=DIR adds '
                           "a directory's task YAMLs.")
  return manager


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  path = _checkpoint()
  _check_flags()
  try:
    from lm_eval import evaluator, utils
  except ModuleNotFoundError as e:
    if e.name != 'lm_eval':
      raise
    raise errors.UserError('launch.lm_eval needs EleutherAI\'s lm-evaluation-harness: pip install '
                           'lm_eval') from None
  from research.interop import lm_eval_adapter

  manager = _task_manager()
  model = lm_eval_adapter.CheckpointLM(path, _BATCH_SIZE.value)
  results = evaluator.simple_evaluate(model=model, tasks=_TASKS.value,
                                      num_fewshot=_NUM_FEWSHOT.value, limit=_LIMIT.value,
                                      batch_size=model.batch_size, task_manager=manager,
                                      log_samples=False)
  out = _OUT.value or os.path.join(runs.workdir(path), 'lm_eval', f'step{model.step}.json')
  cli.write_atomically(out, json.dumps(results, indent=2, default=utils.handle_non_serializable))
  print(f'{path} (step {model.step}):\n{utils.make_table(results)}\nwrote {out}')


if __name__ == '__main__':
  cli.run(main)
