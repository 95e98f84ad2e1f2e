"""The in-context regression generator: the pool of K, held-out validation tasks, the answers, the
ridge and training-prior Bayes baselines, parameter errors (determinism and prefixes:
test_synthetic.py)."""

import re

import numpy as np
import pytest

from research import errors
from research.data import tasks
from research.data.synthetic import icl_regression as regression


def _documents(split='train', seed=0, num_documents=300, **params):
  return list(regression.documents(split, seed, num_documents, **params))


def _task(document) -> tuple[int, ...]:
  return tuple(int(v) for v in document['task'].split(','))


def _rows(tasks_KD) -> set[tuple[int, ...]]:
  return {tuple(row) for row in tasks_KD.tolist()}


@pytest.mark.parametrize('num_tasks', [1, 4, 16, 64])
def test_training_tasks_are_the_pool_of_k_and_validation_tasks_are_outside_it(num_tasks):
  pools = regression.task_pools(5, num_tasks=num_tasks)
  assert pools['pool'].shape == (num_tasks, 2)
  assert len(_rows(pools['pool'])) == num_tasks
  assert len(pools['trainable']) + len(pools['held_out']) == 11**2
  assert len(pools['held_out']) == round(0.25 * 121)
  train = {_task(d) for d in _documents(seed=5, num_documents=2000, num_tasks=num_tasks)}
  validation = {_task(d) for d in _documents('validation', seed=5, num_tasks=num_tasks)}
  assert train == _rows(pools['pool'])  # every pool task drawn in 2,000 documents
  assert validation <= _rows(pools['held_out']) and not validation & _rows(pools['trainable'])
  pool_validation = _documents('validation', seed=5, num_tasks=num_tasks, validation='pool')
  assert {_task(d) for d in pool_validation} <= _rows(pools['pool'])


def test_pools_are_nested_and_validation_does_not_depend_on_k():
  pools = [regression.task_pools(2, num_tasks=k)['pool'] for k in (1, 4, 16, 64)]
  assert all(np.array_equal(small, large[:len(small)]) for small, large in zip(pools, pools[1:]))
  fresh = regression.task_pools(2, num_tasks=0)
  assert np.array_equal(fresh['pool'], fresh['trainable'])
  assert len({_task(d) for d in _documents(seed=2, num_documents=3000)}) == len(fresh['pool'])
  assert _documents('validation', seed=2, num_tasks=1) == _documents('validation', seed=2)


def test_every_answer_is_w_dot_x_and_check_rejects_a_wrong_one():
  docs = _documents(num_documents=1000, dim=3, x_max=4, w_max=3, min_context=0, max_context=5)
  for d in docs:
    x_ND, y_N, query_D = regression.parse(d['prompt'])
    w = np.array(_task(d))
    assert np.array_equal(x_ND @ w, y_N) and int(d['answer']) == query_D @ w
    assert len(y_N) == d['num_context'] == d['difficulty'] and query_D.shape == (3,)
    assert d['text'] == d['prompt'] + d['answer'] and regression.check(d)
  assert {d['num_context'] for d in docs} == set(range(6))
  doc = next(d for d in docs if d['num_context'] > 0)
  wrong = str(int(doc['answer']) + 1)
  assert not regression.check({**doc, 'answer': f'{int(wrong):+d}',
                               'text': doc['prompt'] + f'{int(wrong):+d}'})
  assert regression.parse('1,2=+3;1=') is None and regression.parse('1,2=+3') is None


def test_noise_moves_targets_off_w_dot_x():
  docs = _documents(num_documents=500, noise=1.0)
  residuals = [int(d['answer']) - regression.parse(d['prompt'])[2] @ np.array(_task(d))
               for d in docs]
  assert 0.7 < np.std(residuals) < 1.3 and all(map(regression.check, docs))


def test_ridge_is_exact_once_the_context_spans_the_inputs():
  docs = _documents('validation', num_documents=2000, max_context=8)
  spanning = 0
  for d in docs:
    x_ND, y_N, query_D = regression.parse(d['prompt'])
    if len(y_N) >= 2 and np.linalg.matrix_rank(x_ND) == 2:
      spanning += 1
      assert regression.ridge(x_ND, y_N, query_D, 0.0) == int(d['answer'])
  assert spanning > 0.6 * len(docs)
  rates = regression.baselines(docs, 0)['ridge']
  assert rates['context_8'] == 1.0 and rates['context_1'] < 0.6


def test_the_bayes_estimator_picks_the_pool_task():
  pool = regression.task_pools(0, num_tasks=16)['pool']
  x_ND = np.array([[1, 0], [0, 1]])
  for w in pool:
    assert regression.bayes(x_ND, x_ND @ w, np.array([2, 1]), pool, 0.0) == 2 * w[0] + w[1]
  train = _documents(num_documents=1000, num_tasks=16, min_context=2)
  rates = regression.baselines(train, 0, num_tasks=16)
  assert rates['bayes_train_prior']['all'] > 0.9
  held_out = regression.baselines(_documents('validation', num_documents=1000), 0, num_tasks=1)
  assert held_out['bayes_train_prior']['all'] < 0.5 < held_out['ridge']['all']


def test_an_icl_regression_task_from_config_names_its_own_parameters():
  spec = tasks.spec_from_config('reg', {'source': 'icl_regression', 'num_documents': 50,
                                        'num_tasks': 4, 'seed': 2})
  docs = list(spec.documents('train'))
  assert len(docs) == 50 and len({d['task'] for d in docs}) <= 4
  with pytest.raises(errors.UserError, match=re.escape('data.tasks.reg.num_tasks=92')):
    tasks.spec_from_config('reg', {'source': 'icl_regression', 'num_tasks': 92})


@pytest.mark.parametrize('params, message', [
    ({'num_documents': 0}, 'data.tasks.icl_regression.num_documents=0 is invalid'),
    ({'num_tasks': -1}, 'num_tasks=-1 is invalid; set it to an integer in [0, 91]'),
    ({'x_max': 10}, 'data.tasks.icl_regression.x_max=10 is invalid'),
    ({'dim': 0}, 'data.tasks.icl_regression.dim=0 is invalid'),
    ({'w_max': 20, 'dim': 4}, 'w_max=20 with dim=4 makes 2825761 tasks'),
    ({'min_context': 5, 'max_context': 4}, 'min_context=5 is above max_context=4'),
    ({'noise': -1.0}, 'data.tasks.icl_regression.noise=-1.0 is invalid'),
    ({'holdout': 0.0}, 'data.tasks.icl_regression.holdout=0.0 is invalid'),
    ({'validation': 'train'}, "data.tasks.icl_regression.validation='train' is invalid"),
    ({'tasks': 4}, 'tasks=4 is not a parameter of the icl_regression generator'),
])
def test_bad_parameters_fail_at_the_call_naming_the_key(params, message):
  with pytest.raises(errors.UserError, match=re.escape(message)):
    regression.documents('train', 0, **{'num_documents': 10, **params})  # not iterated
