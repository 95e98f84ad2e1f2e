"""The in-context classification generator: Zipfian classes, burstiness, the two validation sets,
labels, parameter errors (determinism and prefixes: test_synthetic.py)."""

import collections
import re

import numpy as np
import pytest

from research import errors
from research.data import tasks
from research.data.synthetic import icl_classification as classification


def _documents(split='train', seed=0, num_documents=300, **params):
  return list(classification.documents(split, seed, num_documents, **params))


def _classes(document) -> list[int]:
  return [int(c) for c in document['classes'].split(',')]


@pytest.mark.parametrize('zipf, burstiness', [(0.0, 0.9), (1.0, 0.5), (1.5, 0.0)])
def test_query_classes_are_zipfian_and_the_bursty_share_matches(zipf, burstiness):
  docs = _documents(num_documents=6000, num_classes=20, common=5, zipf=zipf,
                    burstiness=burstiness)
  counts = collections.Counter(d['query_class'] for d in docs)
  observed = np.array([counts[c] for c in range(20)]) / len(docs)
  assert np.abs(observed - classification.class_probabilities(20, zipf)).max() < 0.02
  bursty = np.mean([d['bursty'] for d in docs])
  assert abs(bursty - burstiness) < 0.02
  for d in docs:
    classes = _classes(d)
    if d['bursty']:
      assert d['difficulty'] >= classification.BURST and d['skill'] == 'train_bursty'
      assert max(collections.Counter(classes[:-1]).values()) >= classification.BURST
    assert d['difficulty'] == classes[:-1].count(classes[-1]) and classification.check(d)


def test_a_training_class_keeps_its_label_and_exemplars_resemble_its_prototype():
  prototypes, labels = classification.tables(0)
  assert len(set(labels)) == len(labels) == 200 and prototypes.shape == (250, 4)
  distances = []
  for d in _documents(num_documents=500):
    pairs = re.findall(r'([a-z]+)>([A-Z]{2});', d['prompt'])
    for (exemplar, label), c in zip(pairs, _classes(d)):
      assert label == labels[c]
      prototype = ''.join(classification.LETTERS[i] for i in prototypes[c])
      distances.append(sum(a != b for a, b in zip(exemplar, prototype)))
  assert 0.7 < np.mean(distances) < 0.9  # 4 letters, each redrawn with p 0.2 (1/26 unchanged)


def test_icl_validation_shows_two_held_out_classes_with_labels_drawn_per_sequence():
  docs = _documents('validation', num_documents=500)
  _, labels = classification.tables(0)
  pair_labels = set()
  for d in docs:
    classes = _classes(d)
    assert min(classes) >= 200 and len(set(classes)) == 2
    assert d['difficulty'] == 4 and d['skill'] == 'icl_bursty' and d['answer'] in labels
    pair_labels.add((classes[-1], d['answer']))
    assert classification.check(d)
  assert len(pair_labels) > 2 * len({c for c, _ in pair_labels})  # one class, many labels


def test_weights_validation_asks_a_common_class_absent_from_the_context():
  docs = _documents('validation', num_documents=500, validation='weights', zipf=1.0)
  assert docs == _documents('validation', num_documents=500, validation='weights')
  _, labels = classification.tables(0)
  for d in docs:
    classes = _classes(d)
    assert classes[-1] < 20 and classes[-1] not in classes[:-1] and max(classes) < 200
    assert d['difficulty'] == 0 and d['answer'] == labels[classes[-1]]
    assert classification.check(d)


def test_check_rejects_a_wrong_label():
  doc = _documents()[0]
  wrong = 'AA' if doc['answer'] != 'AA' else 'AB'
  assert not classification.check({**doc, 'answer': wrong, 'text': doc['prompt'] + wrong})
  assert not classification.check({**doc, 'difficulty': doc['difficulty'] + 1})


def test_an_icl_classification_task_from_config_names_its_own_parameters():
  spec = tasks.spec_from_config('cls', {'source': 'icl_classification', 'num_documents': 50,
                                        'validation': 'weights', 'seed': 2})
  assert len(list(spec.documents('validation'))) == 50
  with pytest.raises(errors.UserError, match=re.escape("data.tasks.cls.validation='iwl'")):
    tasks.spec_from_config('cls', {'source': 'icl_classification', 'validation': 'iwl'})


@pytest.mark.parametrize('params, message', [
    ({'num_documents': 0}, 'data.tasks.icl_classification.num_documents=0 is invalid'),
    ({'num_classes': 1}, 'data.tasks.icl_classification.num_classes=1 is invalid'),
    ({'context': 5}, 'context=5 is invalid; set it to an integer in [6, 64]'),
    ({'context': 9}, 'context=9 is odd'),
    ({'zipf': -1.0}, 'data.tasks.icl_classification.zipf=-1.0 is invalid'),
    ({'burstiness': 1.5}, 'data.tasks.icl_classification.burstiness=1.5 is invalid'),
    ({'common': 200}, 'common=200 is invalid; set it to an integer in [1, 199]'),
    ({'shots': 3}, 'shots=3 is not a parameter of the icl_classification generator'),
])
def test_bad_parameters_fail_at_the_call_naming_the_key(params, message):
  with pytest.raises(errors.UserError, match=re.escape(message)):
    classification.documents('train', 0, **{'num_documents': 10, **params})  # not iterated
