"""The copying generator: the answer is the first copy, parameter errors (determinism, prefixes
and the other contracts of every generator: test_synthetic.py)."""

import collections
import re

import pytest

from research import errors
from research.data import tasks
from research.data.synthetic import copying


def _documents(split='train', seed=0, num_documents=300, **params):
  return list(copying.documents(split, seed, num_documents, **params))


def test_the_answer_is_the_first_copy():
  docs = _documents(num_documents=2000, min_length=1, max_length=40, alphabet=5)
  for d in docs:
    first, second = d['text'].split(copying.SEPARATOR)
    assert first == second == d['answer'] and d['prompt'] == first + copying.SEPARATOR
    assert len(first) == d['length'] == d['difficulty'] and d['skill'] == f'length_{len(first)}'
    assert set(first) <= set('abcde')
    assert copying.check(d)
  assert sorted(collections.Counter(d['length'] for d in docs)) == list(range(1, 41))
  assert set(''.join(d['answer'] for d in docs)) == set('abcde')
  assert len({d['answer'] for d in docs if d['length'] >= 8}) == sum(d['length'] >= 8 for d in docs)


def test_check_rejects_a_wrong_copy():
  doc = _documents(min_length=5)[0]
  wrong = doc['answer'][:-1] + ('a' if doc['answer'][-1] != 'a' else 'b')
  assert not copying.check({**doc, 'answer': wrong, 'text': doc['prompt'] + wrong})
  assert not copying.check({**doc, 'length': doc['length'] + 1})


def test_a_copying_task_from_config_names_its_own_parameters():
  spec = tasks.spec_from_config('copy_8', {'source': 'copying', 'num_documents': 50,
                                           'min_length': 8, 'max_length': 8, 'seed': 2})
  docs = list(spec.documents('validation'))
  assert len(docs) == 50 and {d['length'] for d in docs} == {8} and all(map(copying.check, docs))
  with pytest.raises(errors.UserError, match=re.escape('data.tasks.copy_8.alphabet=1')):
    tasks.spec_from_config('copy_8', {'source': 'copying', 'alphabet': 1})


@pytest.mark.parametrize('params, message', [
    ({'num_documents': 0}, 'data.tasks.copying.num_documents=0 is invalid'),
    ({'min_length': 0}, 'data.tasks.copying.min_length=0 is invalid'),
    ({'max_length': 1001}, 'data.tasks.copying.max_length=1001 is invalid'),
    ({'min_length': 9, 'max_length': 8}, 'data.tasks.copying.min_length=9 is above max_length=8'),
    ({'alphabet': 27}, 'copying.alphabet=27 is invalid; set it to an integer in [2, 26]'),
    ({'alphabet': 2.0}, 'data.tasks.copying.alphabet=2.0 is invalid'),
    ({'length': 8}, 'data.tasks.copying.length=8 is not a parameter of the copying generator'),
    ({'task_name': 'copy', 'max_length': 0}, 'data.tasks.copy.max_length=0'),
])
def test_bad_parameters_fail_at_the_call_naming_the_key(params, message):
  with pytest.raises(errors.UserError, match=re.escape(message)):
    copying.documents('train', 0, **{'num_documents': 10, **params})  # not iterated
