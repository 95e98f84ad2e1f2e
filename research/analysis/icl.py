"""In-context regression runs against the two estimators of Raventós et al. 2023 ("Pretraining task
diversity and the emergence of non-Bayesian in-context learning for regression", arXiv 2306.15063):
ridge regression and the Bayes estimator under the training prior (the posterior over the pool of
K pretraining tasks), on held-out tasks (research/data/synthetic/icl_regression.py).

launch.report shows, for runs with such a task (`regression_table`), for each arm (runs equal but
for `seed`), the model's final answer accuracy on held-out tasks (mean ± SE over seeds) overall and
by number of context pairs, its accuracy on its pool's tasks where the runs evaluate them, the
training-prior Bayes estimator's exact-match rate on the held-out tasks for that arm's pool, and
last ridge's (the same for every pool: the validation documents of a task seed do not depend on K).
The estimators are scored on the first `NUM_DOCUMENTS` validation documents, the model on the packed
validation rows its evaluation reads (the first few hundred documents of the same stream).
"""

from collections.abc import Sequence

from research.analysis import report
from research.data.synthetic import icl_regression

NUM_DOCUMENTS = 2000


def _task_params(run: report.Run, task: str) -> tuple[int, dict]:
  """(seed, generator parameters) of `run`'s regression task `task`."""
  spec = dict(run.config['data']['tasks'][task])
  spec.pop('source')
  spec.pop('num_documents', None)
  return spec.pop('seed', 0), spec


def estimator_rates(run: report.Run, task: str) -> dict[str, dict[str, float]]:
  """icl_regression.baselines on the first NUM_DOCUMENTS validation documents of `run`'s task."""
  seed, params = _task_params(run, task)
  documents = icl_regression.documents('validation', seed, NUM_DOCUMENTS, **params)
  return icl_regression.baselines(documents, seed, **params)


def _regression_tasks(run: report.Run) -> tuple[str | None, str | None]:
  """(the held-out task, the pool task: validation='pool') among `run`'s icl_regression tasks."""
  found = {spec.get('validation', 'held_out') == 'pool': name
           for name, spec in run.config.get('data', {}).get('tasks', {}).items()
           if isinstance(spec, dict) and spec.get('source') == icl_regression.NAME}
  return found.get(False), found.get(True)


def regression_table(runs: Sequence[report.Run]) -> str:
  """The markdown table of the module docstring, '' unless the runs have an icl_regression task;
  where they also evaluate one with validation='pool', the model's accuracy on its pool's tasks."""
  task, pool_task = _regression_tasks(runs[0]) if runs else (None, None)
  if task is None:
    return ''
  params = _task_params(runs[0], task)[1]
  contexts = range(params.get('min_context', icl_regression.PARAMS['min_context']),
                   params.get('max_context', icl_regression.PARAMS['max_context']) + 1)
  groups = ['all', *(f'context_{n}' for n in contexts)]
  rows = []
  for arm in report.arms(runs):
    for name, estimator in ((task, 'model'), (pool_task, 'model, pool tasks')):
      keys = [f'eval/{name}/answer_accuracy', *(f'eval/{name}/answer_accuracy/difficulty_{n}'
                                                for n in contexts)]
      cells = [report.mean_cell([report.final_value(run, key) for run in arm.runs])
               for key in keys]
      if name == task or cells[0] != '-':
        rows.append([arm.label if name == task else '', estimator, *cells])
    bayes = estimator_rates(arm.runs[0], task)
    rows.append(['', 'Bayes, training prior',
                 *(report.format_number(bayes['bayes_train_prior'].get(g)) for g in groups)])
  ridge = bayes['ridge']
  rows.append(['any', 'ridge', *(report.format_number(ridge.get(g)) for g in groups)])
  header = ['arm', 'estimator', 'all', *(f'n={n}' for n in contexts)]
  return report.markdown_table(header, ['---', '---', *['---:'] * len(groups)], rows)

