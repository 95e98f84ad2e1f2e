"""The synthetic generators of the second wave (two-hop facts, sorting, associative recall, set
disjointness, SCAN, Zipfian facts, XOR clusters, skill mixes): every generator's contract
(determinism, columns, checker, registration, errors), then each one's defining property."""

import collections
import re

import numpy as np
import pytest
import seqio

from research import errors
from research.data import tasks
from research.data.synthetic import associative_recall
from research.data.synthetic import scan
from research.data.synthetic import set_disjointness
from research.data.synthetic import skill_mix
from research.data.synthetic import sorting
from research.data.synthetic import two_hop
from research.data.synthetic import xor_clusters
from research.data.synthetic import zipf_facts

SMALL = {two_hop: {'num_documents': 30, 'num_bridges': 10},
         sorting: {'num_documents': 200, 'index_hints': True},
         associative_recall: {'num_documents': 200},
         set_disjointness: {'num_documents': 200},
         scan: {'num_documents': 200},
         zipf_facts: {'num_documents': 300, 'num_entities': 50},
         xor_clusters: {'num_documents': 200, 'max_shots': 3},
         skill_mix: {'num_documents': 200, 'held_out_pairs': 0.2, 'validation_min_skills': 2}}
_GENERATORS = pytest.mark.parametrize('generator', list(SMALL), ids=lambda g: g.NAME)
_BLOCK_STREAMS = [g for g in SMALL if g is not zipf_facts]  # zipf_facts: one draw per stream


def _documents(generator, split='train', seed=0, **params):
  return list(generator.documents(split, seed, **{**SMALL[generator], **params}))


# Every generator.


@_GENERATORS
def test_registered_as_a_task_with_default_parameters(generator):
  assert tasks.GENERATORS[generator.NAME] is generator
  assert generator.NAME in seqio.TaskRegistry.names()
  assert f'"version": {generator.VERSION}' in tasks.fingerprint(generator.NAME)
  spec = tasks.spec_from_config('wave2', {'source': generator.NAME, **SMALL[generator]})
  assert [d['text'] for d in spec.documents('train')] == [d['text'] for d in _documents(generator)]


@_GENERATORS
def test_same_seed_same_documents_other_seed_other_documents(generator):
  for split in ('train', 'validation'):
    first = _documents(generator, split, seed=3)
    assert first == _documents(generator, split, seed=3)
    assert [d['text'] for d in first] != [d['text'] for d in _documents(generator, split, seed=4)]


@_GENERATORS
def test_documents_share_scalar_columns_and_unique_ids(generator):
  for split in ('train', 'validation'):
    docs = _documents(generator, split)
    columns = {k: type(v) for k, v in docs[0].items()}
    assert {'id', 'text', 'skill', 'difficulty', 'prompt', 'answer'} <= set(columns)
    assert set(columns.values()) <= {str, int, float, bool}
    assert all({k: type(v) for k, v in d.items()} == columns for d in docs)
    assert [d['id'] for d in docs] == [f'{generator.NAME}/{split}/{i}' for i in range(len(docs))]
    assert all(d['text'] == d['prompt'] + d['answer'] and d['answer'] for d in docs)


@_GENERATORS
def test_check_accepts_every_document_and_rejects_a_corrupted_answer(generator):
  docs = _documents(generator) + _documents(generator, 'validation')
  assert all(generator.check(d) for d in docs)
  for probe in docs[:20]:
    wrong = {**probe, 'answer': probe['answer'][::-1] + '1'}
    wrong['text'] = wrong['prompt'] + wrong['answer']
    assert not generator.check(wrong)


@pytest.mark.parametrize('generator', _BLOCK_STREAMS, ids=lambda g: g.NAME)
def test_a_corpus_is_a_prefix_of_a_larger_one(generator):
  small = _documents(generator)
  num_documents = SMALL[generator]['num_documents'] * 2
  assert _documents(generator, num_documents=num_documents)[:len(small)] == small


@_GENERATORS
def test_bad_split_and_seed_fail(generator):
  with pytest.raises(errors.UserError, match=r"'test'.*\['train', 'validation'\]"):
    generator.documents('test', 0, **SMALL[generator])
  with pytest.raises(errors.UserError, match=r'seed=-1'):
    generator.documents('train', -1, **SMALL[generator])


@pytest.mark.parametrize('generator, params, key', [
    (two_hop, {'num_bridges': 0}, 'data.tasks.two_hop.num_bridges=0 is invalid'),
    (two_hop, {'first_relations': 6}, 'data.tasks.two_hop.first_relations=6'),
    (two_hop, {'second_relations': 0}, 'data.tasks.two_hop.second_relations=0'),
    (two_hop, {'train_facts': 'third'}, "data.tasks.two_hop.train_facts='third' is invalid; set "
     "it to one of ['both', 'first', 'second', 'none']"),
    (two_hop, {'holdout': 1.5}, 'data.tasks.two_hop.holdout=1.5'),
    (two_hop, {'ood_fraction': -0.1}, 'data.tasks.two_hop.ood_fraction=-0.1'),
    (two_hop, {'cot': 'yes'}, "data.tasks.two_hop.cot='yes'"),
    (two_hop, {'hops': 3}, 'data.tasks.two_hop.hops=3 is not a parameter'),
    (sorting, {'min_length': 5, 'max_length': 4}, 'data.tasks.sorting.min_length=5 is above '
     'max_length=4'),
    (sorting, {'max_length': 53}, 'data.tasks.sorting.max_length=53'),  # 52 hint letters
    (sorting, {'validation_max_length': 0}, 'data.tasks.sorting.validation_max_length=0'),
    (sorting, {'max_value': 0}, 'data.tasks.sorting.max_value=0'),
    (sorting, {'index_hints': 1}, 'data.tasks.sorting.index_hints=1'),
    (associative_recall, {'max_pairs': 27, 'key_length': 1},
     'data.tasks.associative_recall.max_pairs=27'),
    (associative_recall, {'key_length': 5}, 'data.tasks.associative_recall.key_length=5'),
    (associative_recall, {'value_length': 0}, 'data.tasks.associative_recall.value_length=0'),
    (associative_recall, {'read_twice': 'no'}, 'data.tasks.associative_recall.read_twice'),
    (set_disjointness, {'universe': 10}, 'data.tasks.set_disjointness.universe=10 is invalid; '
     'set it to an integer in [16, 1000000]'),
    (set_disjointness, {'min_size': 0}, 'data.tasks.set_disjointness.min_size=0'),
    (scan, {'held_out_primitive': 'turn'}, "data.tasks.scan.held_out_primitive='turn'"),
    (scan, {'holdout': 0}, 'data.tasks.scan.holdout=0'),
    (scan, {'primitive_fraction': 2}, 'data.tasks.scan.primitive_fraction=2'),
    (scan, {'max_depth': 8}, 'data.tasks.scan.max_depth=8'),
    (zipf_facts, {'num_entities': 10**5}, 'data.tasks.zipf_facts.num_entities=100000'),
    (zipf_facts, {'exponent': -1}, 'data.tasks.zipf_facts.exponent=-1'),
    (xor_clusters, {'dim': 1}, 'data.tasks.xor_clusters.dim=1'),
    (xor_clusters, {'label_noise': 0.6}, 'data.tasks.xor_clusters.label_noise=0.6'),
    (xor_clusters, {'separation': 0}, 'data.tasks.xor_clusters.separation=0'),
    (xor_clusters, {'min_shots': 2, 'max_shots': 1}, 'data.tasks.xor_clusters.min_shots=2'),
    (skill_mix, {'skills': ('reverse', 'shout')}, "data.tasks.skill_mix.skills=('reverse', "
     "'shout') names unknown skills ['shout']"),
    (skill_mix, {'skills': 'reverse'}, "data.tasks.skill_mix.skills='reverse' is invalid"),
    (skill_mix, {'max_skills': 9}, 'data.tasks.skill_mix.max_skills=9'),
    (skill_mix, {'validation_min_skills': 1}, 'data.tasks.skill_mix.held_out_pairs=0.2 needs '
     'validation documents of 2 skills or more'),
    (skill_mix, {'held_out_pairs': 1.0, 'max_skills': 3}, 'data.tasks.skill_mix.held_out_pairs=1.0 '
     'leaves no combination of 2 skills for training'),
    (skill_mix, {'task_name': 'mix', 'min_length': 0}, 'data.tasks.mix.min_length=0'),
])
def test_bad_parameters_fail_at_the_call_naming_the_key(generator, params, key):
  with pytest.raises(errors.UserError, match=re.escape(key)):
    generator.documents('train', 0, **{**SMALL[generator], **params})  # not iterated


def test_a_bad_task_spec_fails_when_registered():
  with pytest.raises(errors.UserError, match=re.escape('data.tasks.t.max_depth=-1')):
    tasks.spec_from_config('t', {'source': 'scan', 'max_depth': -1})


# Two-hop facts.


def _one_hop(docs):
  return {d['prompt']: d['answer'] for d in docs if d['hops'] == 1}


def _composition(document, facts):
  """(bridge, second relation, value) of a composed question, from the one-hop `facts`."""
  second, rest = document['prompt'].removeprefix('The ').split(' of the ', 1)
  first, name = rest.removesuffix(' is').split(' of ', 1)
  bridge = facts[f'The {first} of {name} is']
  return bridge, second, facts[f'The {second} of{bridge} is']


@pytest.mark.parametrize('cot', [False, True])
def test_two_hop_answers_compose_the_two_one_hop_facts(cot):
  facts = _one_hop(_documents(two_hop, 'validation'))  # validation probes every one-hop fact
  composed = [d for split in ('train', 'validation') for d in _documents(two_hop, split, cot=cot)
              if d['hops'] == 2]
  assert len(composed) == 30 * 3 * 3 and all(d['difficulty'] == 2 for d in composed)
  for d in composed:
    bridge, second, value = _composition(d, facts)
    assert d['answer'] == (f'{bridge}; the {second} of{bridge} is{value}' if cot else value)


def test_two_hop_splits_hold_out_compositions_and_ood_subjects():
  train = _documents(two_hop, ood_fraction=0.2)
  validation = _documents(two_hop, 'validation', ood_fraction=0.2)
  questions = [{d['prompt'] for d in docs if d['hops'] == 2} for docs in (train, validation)]
  assert questions[0] and questions[1] and not questions[0] & questions[1]
  ood = {d['source'] for d in validation if d['relation'] == 'ood'}
  assert ood and not ood & {d['source'] for d in train if d['hops'] == 2}
  assert {d['relation'] for d in validation} == {'stated', 'id', 'ood'}
  assert _one_hop(train).items() <= _one_hop(validation).items()


@pytest.mark.parametrize('train_facts, first, second', [
    ('both', True, True), ('first', True, False), ('second', False, True), ('none', False, False)])
def test_train_facts_names_the_hops_stated_alone(train_facts, first, second):
  train = _documents(two_hop, train_facts=train_facts)
  assert any(d['skill'] == 'first_hop' for d in train) == first
  assert any(d['skill'] == 'second_hop' for d in train) == second
  assert any(d['skill'] == 'two_hop' for d in train)
  probes = [d for d in _documents(two_hop, 'validation', train_facts=train_facts)
            if d['hops'] == 1]
  stated = {d['skill'] for d in probes if d['relation'] == 'stated'}
  assert stated == {hop for hop, kept in (('first_hop', first), ('second_hop', second)) if kept}


# Sorting.


def _numbers(text):
  return [int(item.lstrip(sorting.HINTS)) for item in text.split(' ')]


@pytest.mark.parametrize('index_hints', [True, False])
def test_sorting_answers_are_the_sorted_input(index_hints):
  docs = _documents(sorting, index_hints=index_hints)
  for d in docs:
    values = _numbers(d['prompt'][:-1])
    assert _numbers(d['answer']) == sorted(values) and d['length'] == len(values)
    if index_hints:  # each answer item is an input item: its hint names its input position
      assert sorted(d['answer'].split(' ')) == sorted(d['prompt'][:-1].split(' '))
  assert {d['hinted'] for d in docs} == {index_hints}
  assert sorting.sorted_answer([5, 1, 5, 0], True) == 'd0 b1 a5 c5'  # ties keep input order


def test_sorting_validation_lengths_extrapolate():
  docs = _documents(sorting, 'validation', validation_min_length=11, validation_max_length=20)
  assert {d['length'] for d in docs} == set(range(11, 21))
  assert {d['difficulty'] for d in _documents(sorting)} == set(range(2, 11))


# Associative recall and set disjointness.


@pytest.mark.parametrize('read_twice', [False, True])
def test_recall_answer_is_the_queried_keys_value(read_twice):
  for d in _documents(associative_recall, read_twice=read_twice):
    context, query = d['prompt'][:-1].split(';')
    readings = context.split('|')
    assert len(readings) == 1 + read_twice and len(set(readings)) == 1
    pairs = [pair.split('=') for pair in readings[0].split(' ')]
    values = dict(pairs)
    assert len(values) == len(pairs) == d['num_pairs'] == d['difficulty']
    assert d['answer'] == values[query] == pairs[d['query_position']][1]
    assert re.fullmatch(r'[a-z]{2}', query) and re.fullmatch(r'\d{2}', d['answer'])


def test_set_disjointness_answers_whether_the_sets_share_an_element():
  docs = _documents(set_disjointness, num_documents=400)
  for d in docs:
    first, second = ({int(x) for x in part.split(' ')} for part in d['prompt'][:-1].split(';'))
    assert d['answer'] == ('yes' if first.isdisjoint(second) else 'no')
    assert len(first & second) <= 1 and (len(first), len(second)) == (d['first_size'],
                                                                       d['second_size'])
    assert d['skill'] == ('smaller_first' if len(first) < len(second) else 'larger_first'
                          if len(first) > len(second) else 'equal')
  assert 150 < sum(d['disjoint'] for d in docs) < 250  # a fair coin
  twice = _documents(set_disjointness, read_twice=True)[0]
  context = twice['prompt'][:-1].split('|')
  assert len(context) == 2 and context[0] == context[1]


# SCAN.


@pytest.mark.parametrize('command, expected', [
    ('jump', 'JUMP'), ('jump left', 'LTURN JUMP'),
    ('jump around right', 'RTURN JUMP RTURN JUMP RTURN JUMP RTURN JUMP'),
    ('turn left twice', 'LTURN LTURN'), ('jump thrice', 'JUMP JUMP JUMP'),
    ('jump opposite left and walk thrice', 'LTURN LTURN JUMP WALK WALK WALK'),
    ('jump opposite left after walk around left',
     'LTURN WALK LTURN WALK LTURN WALK LTURN WALK LTURN LTURN JUMP'),
])
def test_scan_meanings_match_the_papers_examples(command, expected):
  assert ' '.join(scan.actions(command)) == expected


def test_scan_grammar_has_the_papers_command_count():
  commands = scan.commands()
  assert len(commands) == len(set(commands)) == 20_910
  assert scan.actions('turn') is None and scan.actions('walk and') is None
  assert max(scan.depth(c) for c in commands) == scan.MAX_DEPTH


def test_scan_add_jump_holds_out_every_composition_of_jump():
  train = _documents(scan, held_out_primitive='jump', num_documents=1000)
  validation = _documents(scan, 'validation', held_out_primitive='jump')
  assert all('jump' not in d['prompt'][:-1].split(' ') or d['prompt'] == 'jump=' for d in train)
  assert 50 < sum(d['prompt'] == 'jump=' for d in train) < 150  # primitive_fraction 0.1
  assert all('jump' in d['primitives'] and d['depth'] >= 1 for d in validation)
  pools = [scan.pool(split, 0, held_out_primitive='jump') for split in ('train', 'validation')]
  assert [len(pools[0]) + 1, len(pools[1])] == [13_204 + 1, 7_706]  # SCAN's add-jump split


def test_scan_random_split_is_disjoint_and_max_depth_bounds_training():
  train, validation = (set(scan.pool(split, 0)) for split in ('train', 'validation'))
  assert not train & validation and len(train | validation) == 20_910
  assert 0.18 < len(validation) / 20_910 < 0.22
  assert {d['depth'] for d in _documents(scan, max_depth=2)} == {0, 1, 2}


# Zipfian facts.


def test_zipf_counts_follow_the_exponent():
  docs = _documents(zipf_facts, num_documents=20_000, num_entities=1000, exponent=1.0)
  counts = collections.Counter(d['rank'] for d in docs)
  assert all(d['count'] == counts[d['rank']] for d in docs)
  assert counts[0] / counts[9] == pytest.approx(10**1.0, rel=0.15)  # rank 1 over rank 10


@pytest.mark.parametrize('exponent', [0.0, 0.5, 1.5])
def test_zipf_stream_frequency_ratio_is_ten_to_the_exponent(exponent):
  counts = np.bincount(zipf_facts.stream(0, 400_000, 20, exponent), minlength=20)
  assert counts[0] / counts[9] == pytest.approx(10**exponent, rel=0.05)


def test_zipf_validation_asks_every_fact_once_marking_singletons():
  train = _documents(zipf_facts)
  validation = _documents(zipf_facts, 'validation')
  assert [d['rank'] for d in validation] == list(range(50))
  counts = collections.Counter(d['rank'] for d in train)
  singletons = {d['rank'] for d in validation if d['singleton']}
  assert singletons == {rank for rank, count in counts.items() if count == 1} != set()
  assert all(d['difficulty'] == 1 and d['skill'] == 'singleton' for d in validation
             if d['singleton'])
  facts = {d['prompt']: d['answer'] for d in train}
  assert all(facts[d['prompt']] == d['answer'] for d in validation if d['count'])


# XOR clusters.


def test_xor_labels_are_the_xor_of_the_cluster_signs():
  docs = _documents(xor_clusters, num_documents=400, noise=0.0, label_noise=0.25, max_shots=0)
  for d in docs:
    x, y = (int(v) for v in d['prompt'][:-1].split(','))
    assert d['skill'] == ('+' if x > 0 else '-') + ('+' if y > 0 else '-')
    assert d['answer'] == str(int((x > 0) != (y > 0)) ^ d['flipped'])
  assert 60 < sum(d['flipped'] for d in docs) < 140
  assert not any(d['flipped'] for d in _documents(xor_clusters, 'validation', label_noise=0.25))


def test_xor_shots_write_labelled_points_before_the_query():
  docs = _documents(xor_clusters, dim=3)
  assert {d['shots'] for d in docs} == {0, 1, 2, 3}
  assert all(d['prompt'].count('>') == d['shots'] + 1 and d['prompt'].count(',') ==
             2 * (d['shots'] + 1) for d in docs)


# Skill mixes.


def test_skill_mix_applies_the_skills_in_order():
  assert skill_mix.apply(['reverse', 'uppercase'], 'ab3k') == 'K3BA'
  assert skill_mix.apply(['add_one', 'next_letter', 'rotate'], 'z9a') == '0ba'
  assert skill_mix.apply(['duplicate', 'swap_pairs', 'sort'], 'ba1') == '11aabb'
  docs = _documents(skill_mix)
  assert all(d['answer'] == skill_mix.apply(d['skills'].split(','), d['prompt'].split('(')[1][:-2])
             for d in docs)


def test_skill_mix_training_never_combines_a_held_out_pair():
  held_out = skill_mix.held_out_pairs(0, tuple(skill_mix.SKILLS), 0.2)
  assert len(held_out) == round(0.2 * 28)
  train = _documents(skill_mix, max_skills=4, num_documents=500)
  validation = _documents(skill_mix, 'validation', validation_max_skills=5)
  for d in train:
    skills = d['skills'].split(',')
    assert not any({a, b} in held_out for a in skills for b in skills) and not d['held_out']
  assert all(d['held_out'] and d['k'] >= 2 for d in validation)
  assert {d['k'] for d in train} == {1, 2, 3, 4}
  assert {d['k'] for d in validation} == {2, 3, 4, 5}
  assert len({d['skills'] for d in validation}) > 20
