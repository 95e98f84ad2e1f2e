"""Synthetic skill corpora: every generator's contract (determinism, splits, columns, checker,
prefixes, errors), then arithmetic's, lego's and biographies' ground truth and skill labels."""

import collections
import hashlib
import json
import re

import pytest

from research import errors
from research.data import tasks
from research.data.synthetic import arithmetic
from research.data.synthetic import biographies
from research.data.synthetic import copying
from research.data.synthetic import icl_classification
from research.data.synthetic import icl_regression
from research.data.synthetic import lego
from research.data.synthetic import reversal
from tests.data import test_synthetic_wave2

_SMALL = {arithmetic: {'num_documents': 300}, lego: {'num_documents': 300},
          biographies: {'num_documents': 40, 'multiplicity': 3}, copying: {'num_documents': 300},
          icl_regression: {'num_documents': 300, 'num_tasks': 4},
          icl_classification: {'num_documents': 300}, reversal: {'num_documents': 300}}
_GENERATORS = pytest.mark.parametrize('generator', list(_SMALL), ids=lambda g: g.NAME)


def test_every_registered_generator_is_tested_here():  # here or in test_synthetic_wave2.py
  assert set(_SMALL) | set(test_synthetic_wave2.SMALL) == set(tasks.GENERATORS.values())


def _documents(generator, split='train', seed=0, **params):
  return list(generator.documents(split, seed, **{**_SMALL[generator], **params}))


# Every generator.


@_GENERATORS
def test_same_seed_same_documents_other_seed_other_documents(generator):
  first = _documents(generator, seed=3)
  assert first == _documents(generator, seed=3)
  other = _documents(generator, seed=4)
  assert [d['text'] for d in first] != [d['text'] for d in other]


@_GENERATORS
def test_train_and_validation_streams_differ(generator):
  train = _documents(generator, 'train')
  validation = _documents(generator, 'validation')
  assert validation
  assert [d['text'] for d in train[:len(validation)]] != [d['text'] for d in validation]
  assert all(d['id'].startswith(f'{generator.NAME}/validation/') for d in validation)
  if generator is not biographies:  # its validation questions follow its individuals
    assert [d['id'] for d in validation] == [f'{generator.NAME}/validation/{i}'
                                             for i in range(len(validation))]


@_GENERATORS
def test_documents_share_scalar_columns_and_unique_ids(generator):
  docs = _documents(generator)
  columns = {k: type(v) for k, v in docs[0].items()}
  assert {'id', 'text', 'skill', 'difficulty', 'prompt', 'answer'} <= set(columns)
  assert set(columns.values()) <= {str, int, float, bool}
  assert all({k: type(v) for k, v in d.items()} == columns for d in docs)
  assert len({d['id'] for d in docs}) == len(docs)


@_GENERATORS
def test_check_accepts_every_document_and_rejects_a_wrong_answer(generator):
  docs = _documents(generator) + _documents(generator, 'validation')
  assert all(generator.check(d) for d in docs)
  probe = next(d for d in docs if d['answer'])
  wrong = {**probe, 'answer': probe['answer'][::-1] + '1'}
  wrong['text'] = wrong['prompt'] + wrong['answer']
  assert not generator.check(wrong)


@_GENERATORS
def test_a_corpus_is_a_prefix_of_a_larger_one(generator):
  if generator is biographies:  # individual i is the same person in any larger population
    small, large = ({(d['individual'], d['attribute']): (d['name'], d['answer'])
                     for split in ('train', 'validation')
                     for d in _documents(generator, split, num_documents=n)} for n in (40, 80))
    assert len(small) == 40 * 7 and small.items() <= large.items()
  else:  # reversal: the statements of the first 300 facts
    small = _documents(generator)
    assert _documents(generator, num_documents=1500)[:len(small)] == small


@pytest.mark.parametrize('generator, params, key', [
    (arithmetic, {'min_digits': 4, 'max_digits': 3}, 'data.tasks.arithmetic.min_digits=4 is above max_digits=3'),
    (arithmetic, {'num_documents': 0}, 'data.tasks.arithmetic.num_documents'),
    (arithmetic, {'operations': ('addition', 'division')}, 'data.tasks.arithmetic.operations'),
    (arithmetic, {'operations': 'addition'}, 'data.tasks.arithmetic.operations'),
    (arithmetic, {'max_digit': 3}, 'data.tasks.arithmetic.max_digit'),
    (arithmetic, {'reverse_answer': 'yes'}, 'data.tasks.arithmetic.reverse_answer'),
    (arithmetic, {'rationale': 'cot'}, "data.tasks.arithmetic.rationale='cot' is invalid"),
    (arithmetic, {'holdout': 0.7}, 'data.tasks.arithmetic.holdout'),
    (arithmetic, {'task_name': 'sums', 'min_digits': 0}, 'data.tasks.sums.min_digits'),
    (lego, {'max_chain': 27}, 'data.tasks.lego.max_chain'),
    (lego, {'max_chain': 0}, 'data.tasks.lego.max_chain'),
    (lego, {'min_chain': 0}, 'data.tasks.lego.min_chain'),
    (lego, {'min_chain': 4, 'max_chain': 3}, 'data.tasks.lego.min_chain=4 is above max_chain=3'),
    (lego, {'shuffle': 1}, 'data.tasks.lego.shuffle'),
    (lego, {'chain': 3}, 'data.tasks.lego.chain'),
    (biographies, {'num_documents': -5}, 'data.tasks.biographies.num_documents'),
    (biographies, {'multiplicity': 0}, 'data.tasks.biographies.multiplicity'),
    (biographies, {'augmented_fraction': 1.5}, 'data.tasks.biographies.augmented_fraction'),
    (biographies, {'qa_train_fraction': 1.0}, 'data.tasks.biographies.qa_train_fraction'),
    (biographies, {'permute': 'no'}, 'data.tasks.biographies.permute'),
    (biographies, {'train_parts': 'bios'}, "data.tasks.biographies.train_parts='bios' is invalid; "
     "set it to one of ['all', 'biographies', 'qa']"),
    (biographies, {'validation_parts': 'all'}, 'data.tasks.biographies.validation_parts'),
    (biographies, {'task_name': 'people', 'paraphrases': 2}, 'data.tasks.people.paraphrases'),
    (reversal, {'paraphrases': 6}, 'data.tasks.reversal.paraphrases=6 is invalid'),
    (reversal, {'both_fraction': 0.8}, 'data.tasks.reversal.both_fraction=0.8 and '
     'description_first_fraction=0.3333333333333333 add up to more than 1'),
    (reversal, {'num_documents': 10**6}, 'data.tasks.reversal.num_documents'),
])
def test_bad_parameters_fail_at_the_call_naming_the_key(generator, params, key):
  with pytest.raises(errors.UserError, match=re.escape(key)):
    generator.documents('train', 0, **{**_SMALL[generator], **params})  # not iterated


@_GENERATORS
def test_bad_split_and_seed_fail(generator):
  with pytest.raises(errors.UserError, match=r"'test'.*\['train', 'validation'\]"):
    generator.documents('test', 0, **_SMALL[generator])
  with pytest.raises(errors.UserError, match=r'seed=-1'):
    generator.documents('train', -1, **_SMALL[generator])


# Arithmetic.

_PROBLEM = re.compile(r'(\d+)([+*])(\d+)=(\d+)')


@pytest.mark.parametrize('reverse_answer', [True, False])
def test_every_arithmetic_answer_is_right(reverse_answer):
  docs = _documents(arithmetic, num_documents=2000, max_digits=25,
                    reverse_answer=reverse_answer)
  assert {d['operation'] for d in docs} == {'addition', 'multiplication'}
  for d in docs:
    x, symbol, y, written = _PROBLEM.fullmatch(d['text']).groups()
    result = int(x) + int(y) if symbol == '+' else int(x) * int(y)
    assert written == (str(result)[::-1] if reverse_answer else str(result))
    assert d['prompt'] == f'{x}{symbol}{y}=' and d['answer'] == written
    assert d['operation'] == {'+': 'addition', '*': 'multiplication'}[symbol] == d['skill']
    assert d['difficulty'] == d['digits'] == max(len(x), len(y))
    assert all(len(n) == 1 or n[0] != '0' for n in (x, y))
  assert max(len(_PROBLEM.fullmatch(d['text'])[4]) for d in docs) > 40  # beyond 64-bit ints


def test_plain_format_matches_the_paper():
  doc = _documents(arithmetic, num_documents=1, operations=['addition'], reverse_answer=False)[0]
  x, y = doc['prompt'][:-1].split('+')
  assert doc['text'] == f'{x}+{y}={int(x) + int(y)}'


def test_digit_counts_are_uniform_over_the_range():
  docs = _documents(arithmetic, num_documents=3000, min_digits=2, max_digits=6)
  counts = collections.Counter(d['difficulty'] for d in docs)
  assert sorted(counts) == [2, 3, 4, 5, 6]
  assert all(abs(c - 600) < 0.3 * 600 for c in counts.values()), counts
  smaller = collections.Counter(min(len(n) for n in re.split(r'[+*=]', d['prompt'])[:2])
                                for d in docs)
  assert min(smaller) == 2 and smaller[2] > smaller[6]  # the other operand is not always longest


def _problems(docs) -> set[tuple[str, str, str]]:
  """Each document's problem: its operation and its unordered operands."""
  return {(d['operation'], *sorted(re.split(r'[+*=]', d['prompt'])[:2])) for d in docs}


def test_validation_problems_are_held_out_of_training():
  """1- and 2-digit problems are few (55 unordered 1-digit sums): without the holdout a third of
  validation problems are also training problems; with it none is, and about `holdout` of the
  problems are held out."""
  small = {'num_documents': 5000, 'min_digits': 1, 'max_digits': 2}
  train, validation = (_problems(_documents(arithmetic, split, **small))
                       for split in ('train', 'validation'))
  assert len(validation) > 100 and not train & validation
  pairs = [(str(x), str(y)) for x in range(100) for y in range(x, 100)]  # 5,050 unordered sums
  share = sum(arithmetic.held_out('addition', x, y, 0, 0.1) for x, y in pairs) / len(pairs)
  assert 0.085 < share < 0.115, share
  leaky = {split: _problems(_documents(arithmetic, split, holdout=0.0, **small))
           for split in ('train', 'validation')}
  assert len(leaky['train'] & leaky['validation']) > 0.25 * len(leaky['validation'])  # 713 of 2124
  assert arithmetic.held_out('addition', '3', '45', 0, 0.1) == arithmetic.held_out(
      'addition', '45', '3', 0, 0.1)


def test_a_holdout_that_leaves_a_split_empty_is_named():
  with pytest.raises(errors.UserError, match=r'data\.tasks\.arithmetic\.holdout=0\.001 leaves '
                     r'the validation split no problem of 1 to 1 digits'):
    _documents(arithmetic, 'validation', min_digits=1, max_digits=1, operations=['addition'],
               holdout=0.001)


def test_one_operation_only():
  docs = _documents(arithmetic, operations=['multiplication'])
  assert all('*' in d['prompt'] and d['skill'] == 'multiplication' for d in docs)


def _check_rationale(x: str, symbol: str, y: str, rationale: str) -> None:
  """Replays a rationale: addition's columns (digits from the least significant, carry in,
  sum) or multiplication's partial products, which sum to the product."""
  steps = [re.fullmatch(r'(\d+)([+*])(\d+)(?:\+(\d))?=(\d+)', step).groups()
           for step in rationale.split(',')]
  if symbol == '*':
    assert [(a, b) for a, _, b, _, _ in steps] == [
        (x, d + '0' * k) for k, d in enumerate(reversed(y))]
    assert all(int(a) * int(b) == int(c) for a, _, b, _, c in steps)
    assert sum(int(c) for *_, c in steps) == int(x) * int(y)
    return
  width, carry = max(len(x), len(y)), 0
  for (a, _, b, carried, total), da, db in zip(steps, reversed(x.zfill(width)),
                                              reversed(y.zfill(width))):
    assert (a, b, int(carried)) == (da, db, carry) and int(total) == int(a) + int(b) + carry
    carry = int(total) // 10
  assert len(steps) == width


@pytest.mark.parametrize('style', ['scratchpad', 'step_by_step'])
def test_arithmetic_rationales_replay_to_the_answer(style):
  """The scratchpad (Lee et al. 2023) writes the working before the result; step_by_step
  (Hsieh et al. 2023, arXiv 2305.02301) makes it a second training task, '[rationale] ', beside
  '[label] ', and asks validation for the label alone."""
  train = _documents(arithmetic, num_documents=600, max_digits=4, rationale=style,
                     reverse_answer=False)
  validation = _documents(arithmetic, 'validation', num_documents=200, max_digits=4,
                          rationale=style, reverse_answer=False)
  for d in train + validation:
    x, symbol, y = re.fullmatch(r'(?:\[\w+\] )?(\d+)([+*])(\d+)=', d['prompt']).groups()
    result = str(int(x) + int(y) if symbol == '+' else int(x) * int(y))
    if style == 'scratchpad':
      working, written = d['answer'].split(';')
      _check_rationale(x, symbol, y, working)
      assert written == result and d['task'] == 'label'
    elif d['task'] == 'rationale':
      _check_rationale(x, symbol, y, d['answer'])
      assert d['prompt'].startswith('[rationale] ')
    else:
      assert d['prompt'].startswith('[label] ') and d['answer'] == result
    assert arithmetic.check(d) and d['text'] == d['prompt'] + d['answer']
  if style == 'step_by_step':  # every training problem twice, in order; validation labels only
    assert [d['task'] for d in train] == ['label', 'rationale'] * 300
    assert [d['prompt'][len('[label] '):] for d in train[::2]] == [
        d['prompt'][len('[rationale] '):] for d in train[1::2]]
    assert {d['task'] for d in validation} == {'label'}
  assert arithmetic.rationale('99', '+', '1') == '9+1+0=10,9+0+1=10'  # the carry leads 100
  wrong = {**train[1], 'answer': train[1]['answer'].replace('=', '=1', 1)}
  wrong['text'] = wrong['prompt'] + wrong['answer']
  assert not arithmetic.check(wrong)


# LEGO.


def _resolve(prompt: str) -> dict[str, int]:
  """Each variable's value, evaluated recursively from the clauses."""
  clauses = dict(re.fullmatch(r'([a-z])=([+-][a-z1]);', c).groups() for c in prompt.split())

  def value(name):
    sign, source = clauses[name][0], clauses[name][1]
    return (1 if sign == '+' else -1) * (1 if source == '1' else value(source))

  return {name: value(name) for name in clauses}


@pytest.mark.parametrize('shuffle', [True, False])
def test_every_lego_chain_resolves_as_labelled(shuffle):
  docs = _documents(lego, num_documents=1200, max_chain=8, shuffle=shuffle)
  in_chain_order = 0
  for d in docs:
    assert d['text'] == d['prompt'] + d['answer'] and d['prompt'].endswith(';\n')
    answer = [re.fullmatch(r'([a-z])=([+-]1)', a).groups() for a in d['answer'].split(', ')]
    assert dict((k, int(v)) for k, v in answer) == _resolve(d['prompt'])
    assert len(answer) == d['chain_length'] == d['difficulty']
    assert d['skill'] == f'chain_{d["chain_length"]}'
    # The answer walks the chain: each variable is defined from the one before it.
    sources = [re.search(rf'{name}=[+-]([a-z1]);', d['prompt'])[1] for name, _ in answer]
    assert sources == ['1'] + [name for name, _ in answer[:-1]]
    in_chain_order += [c[0] for c in d['prompt'].split()] == [name for name, _ in answer]
  if shuffle:
    assert in_chain_order < 0.5 * len(docs)
  else:
    assert in_chain_order == len(docs)


def test_lego_chain_lengths_cover_every_skill():
  docs = _documents(lego, num_documents=2000, max_chain=10)
  counts = collections.Counter(d['chain_length'] for d in docs)
  assert sorted(counts) == list(range(1, 11))
  assert min(counts.values()) > 0.7 * 200
  assert len({d['prompt'][0] for d in docs}) > 20  # variable names are drawn, not a..z


def test_lego_default_documents_are_unchanged_by_min_chain():
  # The md5 of the first 1100 train documents (two blocks) before min_chain existed: VERSION 1.
  docs = _documents(lego, num_documents=1100)
  digest = hashlib.md5(json.dumps(docs, sort_keys=True).encode()).hexdigest()
  assert digest == 'd4fbec636e8503a00eba90e0d3ee8593'
  assert _documents(lego, num_documents=1100, min_chain=1) == docs
  assert lego.VERSION == 1


def test_min_chain_bounds_the_chain_lengths():
  docs = _documents(lego, num_documents=1500, min_chain=3, max_chain=5)
  counts = collections.Counter(d['chain_length'] for d in docs)
  assert sorted(counts) == [3, 4, 5] and min(counts.values()) > 0.8 * 500
  assert all(lego.check(d) for d in docs)


def test_a_lego_task_per_chain_length_is_one_skill():
  spec = tasks.spec_from_config('lego_3', {'source': 'lego', 'min_chain': 3, 'max_chain': 3,
                                           'num_documents': 200})
  for split in ('train', 'validation'):
    docs = list(spec.documents(split))
    assert len(docs) == 200 and all(lego.check(d) for d in docs)
    assert {(d['chain_length'], d['difficulty'], d['skill']) for d in docs} == {(3, 3, 'chain_3')}
    assert all(d['id'].startswith(f'lego/{split}/') for d in docs)
  assert len({d['prompt'] for d in docs}) > 190  # shuffled clauses and fresh names: varied chains


def test_lego_check_rejects_a_broken_chain():
  doc = next(d for d in _documents(lego) if d['chain_length'] >= 3)
  flipped = doc['prompt'].replace('=+', '=#').replace('=-', '=+').replace('=#', '=-')
  assert not lego.check({**doc, 'prompt': flipped, 'text': flipped + doc['answer']})


# Biographies.

_REFERENCE = {'{Subject}': r"(?P<subject>[A-Z][a-z]+ [A-Z][a-z]+ [A-Z][a-z]+|He|She)",
              '{Possessive}': r"(?P<subject>[A-Z][a-z]+ [A-Z][a-z]+ [A-Z][a-z]+'s|His|Her)",
              '{possessive}': r'(?:his|her)', '{value}': r'(?P<value>[^.]+)'}
_SENTENCES = []
for _attribute, _templates in biographies.TEMPLATES.items():
  for _template in _templates:
    _regex = re.escape(_template)
    for _field, _group in _REFERENCE.items():
      _regex = _regex.replace(re.escape(_field), _group)
    _SENTENCES.append((_attribute, re.compile(_regex)))


def _parse_biography(text: str) -> list[tuple[str, str, str]]:
  """[(attribute, value, subject)] of each sentence, in order; fails unless exactly one matches."""
  parsed = []
  for sentence in re.split(r'(?<=\.) ', text):
    matches = [(a, m) for a, r in _SENTENCES if (m := r.fullmatch(sentence))]
    assert len(matches) == 1, sentence
    attribute, match = matches[0]
    parsed.append((attribute, match['value'], match['subject']))
  return parsed


@pytest.fixture(scope='module')
def population():
  """Train and validation of 200 individuals: 40% augmented with 3 permuted, full-name paraphrases;
  30% of the questions in train."""
  params = {'num_documents': 200, 'multiplicity': 3, 'permute': True, 'fullname': True,
            'augmented_fraction': 0.4, 'qa_train_fraction': 0.3}
  return {split: list(biographies.documents(split, 7, **params))
          for split in ('train', 'validation')}


def test_names_are_unique_and_from_the_lists():
  docs = biographies.documents('train', 1, num_documents=3000, multiplicity=1)
  names = {d['individual']: d['name'] for d in docs if d['kind'] == 'biography'}
  first_names = set(biographies.FEMALE_FIRST_NAMES + biographies.MALE_FIRST_NAMES)
  assert len(set(names.values())) == len(names) == 3000
  assert all(n.split()[0] in first_names and n.split()[1] in biographies.MIDDLE_NAMES
             and n.split()[2] in biographies.LAST_NAMES for n in names.values())


def test_every_answer_matches_the_individuals_biographies(population):
  stated = collections.defaultdict(set)
  for d in population['train']:
    if d['kind'] == 'biography':
      parsed = _parse_biography(d['text'])
      assert sorted(a for a, _, _ in parsed) == sorted(biographies.ATTRIBUTES)
      assert parsed[0][2].removesuffix("'s") == d['name']
      for attribute, value, _ in parsed:
        stated[d['individual'], attribute].add(value)
  assert all(len(values) == 1 for values in stated.values())  # paraphrases agree
  questions = [d for split in population.values() for d in split if d['kind'] == 'qa']
  assert len(questions) == 6 * 200
  for d in questions:
    assert d['text'] == d['prompt'] + d['answer'] and d['name'] in d['prompt']
    assert stated[d['individual'], d['attribute']] == {d['answer']}
    assert d['skill'] == d['attribute']
  cities = {d['answer'] for d in questions if d['attribute'] in ('birth_city', 'employer_city')}
  assert all(re.fullmatch(r'[A-Za-z ]+, [A-Z]{2}', c) for c in cities)


def test_employer_fixes_the_employer_city(population):
  pairs = collections.defaultdict(set)
  answers = collections.defaultdict(dict)
  for d in population['validation']:
    answers[d['individual']][d['attribute']] = d['answer']
  for person in answers.values():
    pairs[person['employer']].add(person['employer_city'])
  assert all(len(cities) == 1 for cities in pairs.values())


def test_augmentation_multiplicity_permutation_and_fullname(population):
  bios = collections.defaultdict(list)
  for d in population['train']:
    if d['kind'] == 'biography':
      bios[d['individual'], d['name'], d['augmented']].append(_parse_biography(d['text']))
  assert len(bios) == 200 and sum(augmented for _, _, augmented in bios) == 80  # round(0.4 * 200)
  canonical, permuted = list(biographies.ATTRIBUTES), 0
  for (_, name, augmented), parsed in bios.items():
    orders = [[a for a, _, _ in p] for p in parsed]
    subjects = [s.removesuffix("'s") for p in parsed for _, _, s in p]
    if augmented:
      assert len(parsed) == 3 and len({str(p) for p in parsed}) == 3
      permuted += sum(order != canonical for order in orders)
      assert set(subjects) == {name}
    else:
      assert orders == [canonical]
      assert subjects[0] == name and set(subjects[1:]) <= {'He', 'She', 'His', 'Her'}
  assert permuted > 0.9 * 80 * 3


def test_questions_carry_their_individuals_augmentation(population):
  """Every question's `augmented` is the draw that gave its individual 3 biographies or 1, so an
  extraction probe can split accuracy by it (research/evaluate.py)."""
  counts = collections.Counter(d['individual'] for d in population['train']
                               if d['kind'] == 'biography')
  questions = [d for split in population.values() for d in split if d['kind'] == 'qa']
  assert all(d['augmented'] == (counts[d['individual']] == 3) for d in questions)
  assert {d['augmented'] for d in population['validation']} == {True, False}


def test_without_permute_and_fullname_augmented_biographies_keep_order_and_pronouns():
  docs = list(biographies.documents('train', 2, num_documents=30, multiplicity=4, permute=False,
                                    fullname=False, augmented_fraction=1.0))
  bios = [d for d in docs if d['kind'] == 'biography']
  assert len(bios) == 4 * 30
  for d in bios:
    parsed = _parse_biography(d['text'])
    assert [a for a, _, _ in parsed] == list(biographies.ATTRIBUTES)
    assert all(s in ('He', 'She', 'His', 'Her') for _, _, s in parsed[1:])


def test_qa_halves_are_disjoint_sized_and_recorded(population):
  train_qa = {d['individual'] for d in population['train'] if d['kind'] == 'qa'}
  test_qa = {d['individual'] for d in population['validation']}
  assert not train_qa & test_qa and train_qa | test_qa == set(range(200))
  assert len(train_qa) == 60  # round(0.3 * 200)
  assert all(d['kind'] == 'qa' and d['qa_split'] == 'test' for d in population['validation'])
  assert all(d['qa_split'] == ('train' if d['individual'] in train_qa else 'test')
             for d in population['train'])
  augmented_tested = {d['individual'] for d in population['validation'] if d['augmented']}
  assert 0 < len(augmented_tested) < len(test_qa)  # a probe can split accuracy by augmentation


def test_qa_check_rejects_another_individuals_answer(population):
  doc = population['validation'][0]
  other = next(d for d in population['validation']
               if d['attribute'] == doc['attribute'] and d['answer'] != doc['answer'])
  wrong = {**doc, 'answer': other['answer'], 'text': doc['prompt'] + other['answer']}
  assert biographies.check(doc) and not biographies.check(wrong)
  bio = next(d for d in population['train'] if d['kind'] == 'biography')
  assert not biographies.check({**bio, 'individual': bio['individual'] + 1})


def test_train_parts_keep_the_biographies_or_the_questions_alone(population):
  """The paper's main protocol: pretrain on the biographies, fine-tune on the QA-train half."""
  params = {'num_documents': 200, 'multiplicity': 3, 'augmented_fraction': 0.4,
            'qa_train_fraction': 0.3}
  text = lambda docs: [(d['kind'], d['text']) for d in docs]
  for parts, kind in (('biographies', 'biography'), ('qa', 'qa')):
    train = list(biographies.documents('train', 7, train_parts=parts, **params))
    assert text(train) == text(d for d in population['train'] if d['kind'] == kind)
    validation = biographies.documents('validation', 7, train_parts=parts, **params)
    assert list(validation) == population['validation']


def test_recall_probes_complete_the_first_biography_of_each_qa_test_individual(population):
  probes = list(biographies.documents(
      'validation', 7, num_documents=200, multiplicity=3, augmented_fraction=0.4,
      qa_train_fraction=0.3, validation_parts='biographies'))
  first_bio = {}
  for d in population['train']:
    if d['kind'] == 'biography':
      first_bio.setdefault(d['individual'], d['text'])
  answers = {(d['individual'], d['attribute']): d['answer'] for d in population['validation']}
  assert len(probes) == len(answers) and {d['kind'] for d in probes} == {'recall'}
  assert {(d['individual'], d['attribute']) for d in probes} == set(answers)
  for d in probes:
    bio = first_bio[d['individual']]
    assert d['text'] == d['prompt'] + d['answer'] and d['answer'] == answers[
        d['individual'], d['attribute']]
    assert bio.startswith(d['text']) and bio[len(d['text'])] == '.'
    assert biographies.check(d)
  assert {d['augmented'] for d in probes} == {True, False}
  wrong = {**probes[1], 'attribute': probes[0]['attribute']}
  assert not biographies.check(wrong)


# Reversal-curse facts.


def test_reversal_facts_are_unique_and_stated_in_their_groups_orders():
  """Every fact's name and description are its own; training states a name_first fact name
  first only, a description_first one description first only, a both one both ways, each in
  `paraphrases` wordings; validation probes every fact both ways, 'reversed' where training
  never stated that order."""
  train = _documents(reversal, paraphrases=3)
  validation = _documents(reversal, 'validation')
  facts = {d['fact']: (d['name'], d['description'], d['group']) for d in validation}
  assert len(facts) == 300 and len({n for n, _, _ in facts.values()}) == 300
  assert len({d for _, d, _ in facts.values()}) == 300
  groups = collections.Counter(g for _, _, g in facts.values())
  assert all(80 <= groups[g] <= 120 for g in reversal.GROUPS)  # a third each by default
  stated = collections.defaultdict(list)
  for d in train:
    stated[d['fact']].append(d)
  for i, (name, description, group) in facts.items():
    orders = {d['direction'] for d in stated[i]}
    assert orders == {'name_first': {'n2d'}, 'description_first': {'d2n'}, 'both': {'n2d', 'd2n'}
                      }[group]
    assert len(stated[i]) == 3 * len(orders) and len({d['text'] for d in stated[i]}) == len(
        stated[i])
    for d in stated[i]:
      first = name if d['direction'] == 'n2d' else description
      assert d['text'].lower().find(first.lower()) < d['text'].lower().find(
          (description if first == name else name).lower())
  probes = {(d['fact'], d['direction']): d for d in validation}
  for (i, direction), d in probes.items():
    group = facts[i][2]
    assert d['skill'] == ('trained' if group == 'both' or (direction == 'n2d') == (
        group == 'name_first') else 'reversed')
    assert d['answer'] == ' ' + (facts[i][1] if direction == 'n2d' else facts[i][0])
  # A trained probe is the start of a training statement; a reversed one is in no statement.
  texts = [d['text'] for d in train]
  for d in validation:
    assert any(t.startswith(d['text']) for t in texts) == (d['skill'] == 'trained')


def test_reversal_check_rejects_another_facts_name():
  probe = _documents(reversal, 'validation')[1]  # a d2n probe: the answer is a name
  other = _documents(reversal, 'validation')[3]
  assert reversal.check(probe)
  assert not reversal.check({**probe, 'answer': other['answer'],
                             'text': probe['prompt'] + other['answer']})
