"""Skill-it's skills graph from short runs, written as a config snippet.

  python -m launch.skill_graph DIR --out=F.py [--eval_tasks=a,b,...] [--metric=loss]

reads every run of the sweep directory DIR (launch.sweep's --workdir; each sub-directory with a
config.json), each trained on one skill (a data.mixture with one positive weight), and writes F.py:

  config.data.skillit.graph = ml_collections.ConfigDict({train skill: {eval skill: weight}})

the brute-force estimate of Chen et al. 2023 ("Skill-It!", arXiv 2307.14430, section 3): edge
[i, j] is how much training on skill i lowered eval skill j's loss (eval/<j>/<--metric>: `loss`,
or `answer_loss` as data.skillit.metric reads it), from the run's first logged evaluation to its
last (research/skillit.graph_from_losses). Runs that start from one shared
checkpoint (init.path) evaluate before their first step, so every edge measures from the same
model; runs from scratch measure from their first evaluation. --eval_tasks (default: the skills
the runs train on) are the graph's columns, each logged by every run. Rows and columns are in
skill-name order. Exec F.py with `config` in scope, or paste it into an experiment file.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import os
import shlex

import numpy as np
from absl import flags

from research import errors

from research.analysis import report

from research.data import skillit

_OUT = flags.DEFINE_string('out', None, 'The Python file the graph snippet is written to.',
                           allow_override=True)
_METRIC = flags.DEFINE_enum('metric', 'loss', list(skillit.METRICS), 'The eval metric whose drop '
                            'is an edge: eval/<task>/<metric>.', allow_override=True)
_EVAL_TASKS = flags.DEFINE_list('eval_tasks', [], 'The evaluation skills (the graph\'s columns); '
                                'default: the skills the runs train on.', allow_override=True)


def first_and_last(run: report.Run, tasks: list[str],
                   metric: str) -> tuple[np.ndarray, np.ndarray]:
  """[M] eval/<task>/<metric> of `tasks` at the run's first and last evaluation that logged them
  all; fails naming the run when it logged them fewer than twice."""
  keys = [f'eval/{task}/{metric}' for task in tasks]
  steps = [step for step, values in run.metrics.items() if all(k in values for k in keys)]
  if len(steps) < 2:
    raise errors.UserError(f'{run.path} logged {", ".join(keys)} at {len(steps)} steps; the graph '
                           'needs an evaluation before and after training on the skill (start the '
                           'runs from one checkpoint with init.path, or evaluate more often with '
                           'eval.every, and list eval.tasks).')
  return tuple(np.array([run.metrics[step][k] for k in keys]) for step in (steps[0], steps[-1]))


def snippet(command: str, skills: list[str], eval_tasks: list[str], graph_KM: np.ndarray) -> str:
  rows = ''.join(f'    {skill!r}: {{' + ', '.join(
      f'{task!r}: {round(float(w), 4)!r}' for task, w in zip(eval_tasks, row) if w > 0) + '},\n'
      for skill, row in zip(skills, graph_KM))
  return ('# Skill-it (Chen et al. 2023, arXiv 2307.14430): the skills graph, edge [i, j] = the '
          'drop of\n# skill j\'s eval metric over a run trained on skill i alone.\n'
          f'# Made by: {command}\n'
          'import ml_collections\n\n'
          'config.data.skillit.graph = ml_collections.ConfigDict({\n'
          f'{rows}'
          '})\n')


@cli.exits_on_user_error
def main(argv):
  paths, out = argv[1:], _OUT.value
  if len(paths) != 1:
    raise errors.UserError(f'Give one sweep directory (got {len(paths)}), as in python -m '
                           'launch.skill_graph DIR --out=F.py.')
  if not out:
    raise errors.UserError('--out is required: the .py file the graph is written to.')
  runs = [report.load_run(path) for path in cli.sweep_runs(paths[0])]
  skills = [skillit.run_skill(run.config, os.path.join(run.path, 'config.json')) for run in runs]
  skills, runs = zip(*sorted(zip(skills, runs), key=lambda pair: pair[0]))
  repeated = sorted({s for s in skills if skills.count(s) > 1})
  if repeated:
    raise errors.UserError(f'{paths[0]}: several runs train on {repeated}; give one run per skill.')
  eval_tasks = _EVAL_TASKS.value or list(skills)
  start_RM, end_RM = zip(*(first_and_last(run, eval_tasks, _METRIC.value) for run in runs))
  graph_KM = skillit.graph_from_losses(np.array(start_RM), np.array(end_RM))
  for skill, row in zip(skills, graph_KM):
    print(f'{skill}: ' + ' '.join(f'{task}={w:.4f}' for task, w in zip(eval_tasks, row)))
  flags_given = [f'--out={out}']
  if _EVAL_TASKS.value:
    flags_given.append(f'--eval_tasks={",".join(_EVAL_TASKS.value)}')
  if _METRIC.value != 'loss':
    flags_given.append(f'--metric={_METRIC.value}')
  command = 'python -m launch.skill_graph ' + shlex.join([paths[0], *flags_given])
  cli.write_atomically(out, snippet(command, skills, eval_tasks, graph_KM))
  print(f'wrote {out}')


if __name__ == '__main__':
  cli.run(main)
