"""Orderings of a task's packed rows: permutations, folding, the cyclical sizes, pacing, scores per
row, and the stateless batches they give (deterministic, resumable, the same on any number of
hosts); the document order before packing (data.order.pack)."""

import math

import ml_collections
import numpy as np
import pytest

from experiments import base
from research import errors
from research.data import in_context, orderings, packing, pipeline, task_rows, vocabularies
from research.data import store as store_lib
from research.objectives import registry

_SCORED = ['easy_to_hard', 'hard_to_easy', 'folding']  # every row once per epoch, by a score


def _reference_cycle_sizes(sp, ep, alfa, T):
  """The paper code's `get_cycle_sizes` (CyclicalCurriculum/Cyclical-Curriculum), transcribed."""
  S = []
  n = sp
  S.append(n)
  t = 0
  while sum(S) < T:
    if (n == sp) or ((S[t - 1] < S[t]) and (n != ep)):
      n = min((n * (1 / alfa)), ep)
    else:
      n = max((n * (alfa)), sp)
    S.append(n)
    t += 1
  return S


def test_random_rows_are_the_random_order_computed_row_by_row_at_any_size():
  for seed, key, epoch in ((0, 7, 0), (3, 2**31, 5)):
    order = orderings.random_order(50, seed, key, epoch)
    np.testing.assert_array_equal(np.sort(order), np.arange(50))
    positions = np.array([49, 0, 17])
    np.testing.assert_array_equal(orderings.random_rows(50, seed, key, epoch, positions),
                                  order[positions])
  # A task of 10^12 rows: a few positions of an epoch, no array of its rows.
  rows = orderings.random_rows(10**12, 0, 7, 3, np.arange(1000))
  assert len(set(rows.tolist())) == 1000 and rows.min() >= 0 and rows.max() < 10**12
  assert rows.max() > 10**11  # spread over the whole task, not its first rows
  assert pipeline.random_order is orderings.random_order


@pytest.mark.parametrize('name', ['random'] + _SCORED)
def test_orderings_are_seeded_permutations(name):
  scores = np.random.default_rng(0).integers(0, 4, 101).astype(float)  # many ties
  order = lambda seed, epoch: orderings.ORDERINGS[name].order(101, seed, 9, epoch, scores)
  for seed, epoch in ((0, 0), (0, 1), (2, 0)):
    np.testing.assert_array_equal(np.sort(order(seed, epoch)), np.arange(101))
    np.testing.assert_array_equal(order(seed, epoch), order(seed, epoch))
  assert not np.array_equal(order(0, 0), order(0, 1))  # ties fall in a fresh order every epoch
  assert not np.array_equal(order(0, 0), order(1, 0))


def test_easy_to_hard_and_hard_to_easy_sort_by_score():
  scores = np.random.default_rng(1).normal(size=64).round(1)
  assert np.all(np.diff(scores[orderings.easy_to_hard(64, 0, 1, 0, scores)]) >= 0)
  assert np.all(np.diff(scores[orderings.hard_to_easy(64, 0, 1, 0, scores)]) <= 0)


def test_folding_gives_l_ascending_passes_over_disjoint_interleaved_slices():
  scores = np.array([50., 10, 30, 20, 40, 0, 70, 60, 80, 90])  # row 5 easiest, row 9 hardest
  order = orderings.folding(10, 0, 1, 0, scores, folds=3)
  # sorted rows 5 1 3 2 4 0 7 6 8 9; fold f takes sorted positions f, f+3, f+6, (f+9)
  np.testing.assert_array_equal(order, [5, 2, 7, 9, 1, 4, 6, 3, 0, 8])
  np.testing.assert_array_equal(scores[order], [0, 30, 60, 90, 10, 40, 70, 20, 50, 80])
  passes = [order[:4], order[4:7], order[7:]]
  assert all(np.all(np.diff(scores[p]) > 0) for p in passes)
  assert sorted(np.concatenate(passes)) == list(range(10))
  np.testing.assert_array_equal(orderings.folding(10, 0, 1, 0, scores, folds=1),
                                orderings.easy_to_hard(10, 0, 1, 0, scores))
  np.testing.assert_array_equal(orderings.fold(np.arange(7), 2), [0, 2, 4, 6, 1, 3, 5])


@pytest.mark.parametrize('start, end, factor', [(0.25, 1.0, 0.5), (0.3, 1.0, 0.5), (0.1, 0.9, 0.3),
                                                (0.5, 0.5, 0.5), (0.2, 0.8, 0.75)])
def test_cyclical_sizes_follow_the_papers_cycle(start, end, factor):
  period = orderings.cycle_fractions(start, end, factor)
  reference = _reference_cycle_sizes(start, end, factor, 30)
  np.testing.assert_array_equal([period[e % len(period)] for e in range(len(reference))],
                                reference)
  assert orderings.cycle_fractions(0.25, 1.0, 0.5) == (0.25, 0.5, 1.0, 0.5)
  assert orderings.cyclical_sizes(10) == [2, 5, 10, 5]


def test_a_cyclical_epoch_is_its_easiest_rows_once_each_in_a_seeded_order():
  scores = np.random.default_rng(2).permutation(40).astype(float)
  for epoch, size in enumerate([10, 20, 40, 20, 10]):
    rows = orderings.cyclical(40, 0, 3, epoch, scores)
    assert len(rows) == len(set(rows.tolist())) == size
    assert scores[rows].max() == size - 1  # exactly the `size` easiest rows
    assert not np.all(np.diff(scores[rows]) > 0)  # read in a shuffled order
  np.testing.assert_array_equal(orderings.cyclical(40, 0, 3, 1, scores),
                                orderings.cyclical(40, 0, 3, 1, scores))


def test_locate_places_examples_in_periodic_epochs():
  lengths = np.array([2, 5, 10, 5])
  epochs = np.concatenate([np.full(lengths[e % 4], e) for e in range(9)])
  within = np.concatenate([np.arange(lengths[e % 4]) for e in range(9)])
  got_epochs, got_within = orderings.locate(np.arange(len(epochs)), lengths)
  np.testing.assert_array_equal(got_epochs, epochs)
  np.testing.assert_array_equal(got_within, within)
  e, w = orderings.locate(np.array([0, 99, 100]), np.array([100]))
  np.testing.assert_array_equal(e, [0, 0, 1])
  np.testing.assert_array_equal(w, [0, 99, 0])


def test_row_scores_combine_each_rows_documents_once():
  documents = np.array([[0, 0, 0, 1, -1], [2, 2, 2, 2, 2], [3, 1, -1, -1, -1]])
  scores = np.array([1.0, 2.0, 5.0, 7.0])
  np.testing.assert_allclose(orderings.row_scores(documents, scores, 'mean'), [1.5, 5, 4.5])
  np.testing.assert_allclose(orderings.row_scores(documents, scores, 'max'), [2, 5, 7])
  np.testing.assert_allclose(orderings.row_scores(documents, scores, 'min'), [1, 5, 2])


def _config(data_config, ordering, mixture=('sums',)):
  data_config.tasks = {'sums': {'source': 'arithmetic', 'num_documents': 300, 'max_digits': 4},
                       'chains': {'source': 'lego', 'num_documents': 300}}
  data_config.mixture = {name: 1.0 for name in mixture}
  data_config.seq_len = 64
  data_config.mixture_block = 16
  data_config.order.name = ordering
  return data_config


def _rows_read(data, num_steps):
  return np.concatenate([data.example_sources(step)[1] for step in range(num_steps)])


@pytest.mark.parametrize('name', _SCORED)
def test_a_scored_ordering_reads_every_row_once_per_epoch_in_its_order(data_config, name):
  data = pipeline.TrainData(_config(data_config, name), batch_size=8, seed=0, total_steps=100)
  num_rows = data.rows.num_rows['sums']
  rows = _rows_read(data, -(-2 * num_rows // 8))
  scores = data.rows.row_scores[False][0]
  for epoch in range(2):
    read = rows[epoch * num_rows:(epoch + 1) * num_rows]
    assert sorted(read) == list(range(num_rows))
    np.testing.assert_array_equal(read, orderings.ORDERINGS[name].order(
        num_rows, 0, task_rows.task_key('sums'), epoch, scores, **(
            {'folds': 3} if name == 'folding' else {})))
  if name == 'easy_to_hard':
    assert np.all(np.diff(scores[rows[:num_rows]]) >= 0) and np.ptp(scores) > 1


def test_cyclical_epochs_read_the_configured_fraction_of_rows(data_config):
  data = pipeline.TrainData(_config(data_config, 'cyclical'), batch_size=8, seed=0, total_steps=100)
  num_rows = data.rows.num_rows['sums']
  sizes = [max(1, int(f * num_rows)) for f in (0.25, 0.5, 1.0, 0.5, 0.25, 0.5)]
  rows = _rows_read(data, -(-sum(sizes) // 8))
  scores = data.rows.row_scores[False][0]
  start = 0
  for size in sizes:
    epoch = rows[start:start + size]
    assert len(set(epoch.tolist())) == size
    assert scores[epoch].max() <= np.sort(scores)[size - 1]  # the easiest `size` rows
    start += size
  assert len(set(rows[:sizes[0]].tolist())) < num_rows // 3


@pytest.mark.parametrize('name', _SCORED + ['cyclical', 'pacing'])
def test_batches_are_resumable_and_the_same_on_any_number_of_hosts(data_config, name):
  config = _config(data_config, name, mixture=('sums', 'chains'))
  data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  steps = [0, 1, 37, 90, 5, 10**5]
  batches = {step: data.batch(step) for step in steps}
  fresh = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  processes = [pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
               for _ in range(4)]  # one per host, each feeding its own rows of the global batch
  for step in reversed(steps):  # a resumed run starts anywhere
    batch = fresh.batch(step)
    for k in batch:
      np.testing.assert_array_equal(batch[k], batches[step][k])
    for hosts in (2, 4):
      parts = [processes[i].batch(step, rows=np.arange(8).reshape(hosts, -1)[i])
               for i in range(hosts)]
      for k in batch:
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts]), batch[k])
  other = pipeline.TrainData(config, batch_size=8, seed=1, total_steps=100)
  assert not np.array_equal(other.batch(0)['targets'], batches[0]['targets'])


@pytest.mark.parametrize('change, match', [
    ({'by': 'nll'}, r"data\.order\.by='nll'.*task 'sums'.*launch\.score"),
    ({'by': 'skill'}, r"data\.order\.by='skill'.*task 'sums'.*non-numeric"),
    ({'name': 'alphabetical'}, r"data\.order\.name='alphabetical' is not a known ordering"),
    ({'name': 'folding', 'folds': 0}, r'data\.order\.folds=0'),
    ({'name': 'cyclical', 'cyclical': {'start': 0.5, 'end': 0.25, 'factor': 0.5}},
     r'data\.order\.cyclical'),
    ({'name': 'cyclical', 'cyclical': {'start': 0.25, 'end': 1.0, 'factor': 1.0}},
     r'data\.order\.cyclical'),
    ({'row_score': 'median'}, r"data\.order\.row_score='median'"),
])
def test_bad_ordering_config_names_the_key(data_config, change, match):
  config = _config(data_config, 'easy_to_hard')
  for key, value in change.items():  # keys of data.order
    config.order[key] = value
  with pytest.raises(errors.UserError, match=match):
    pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)


def test_a_task_without_the_score_is_named(data_config):
  config = _config(data_config, 'folding', mixture=('chains', 'sums'))
  config.order.by = 'chain_length'  # lego's metadata has it, arithmetic's has not
  with pytest.raises(errors.UserError, match=r"task 'sums' has no per-document score "
                                             r"'chain_length'.*python -m launch\.score"):
    pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)


def test_a_rewriting_objective_orders_its_own_rows_by_their_scores(data_config):
  """MeCo packs rewritten documents into other rows until its cooldown; each packing has its own
  row scores and order."""
  config = base.get_config()
  config.data = _config(data_config, 'easy_to_hard')
  config.data.extra_ids = 8
  config.objective.name = 'meco'
  config.train.steps = 100  # the cooldown is the last 10%
  objective = registry.make_objective(config, vocabularies.make_vocabulary('byte', extra_ids=8))
  data = pipeline.TrainData(config.data, 8, 0, 100, objective)
  assert data.rows.rewrites(0) and not data.rows.rewrites(99)
  key = task_rows.task_key('sums')
  for step, rewritten in ((0, True), (99, False), (1, True)):
    scores = data.rows.row_scores[rewritten][0]
    epochs, within = np.divmod(step * 8 + np.arange(8), len(scores))  # one task: example = slot
    expected = [orderings.easy_to_hard(len(scores), 0, key, e, scores)[w]
                for e, w in zip(epochs, within)]
    np.testing.assert_array_equal(data.example_sources(step)[1], expected)
  assert len(data.rows.row_scores[True][0]) != len(data.rows.row_scores[False][0])


# --- document order before packing (data.order.pack) ---------------------------------------------

@pytest.mark.parametrize('pack_order', orderings.PACK_ORDERS)
def test_pack_order_is_the_order_packing_visits_documents_in(data_config, pack_order):
  config = _config(data_config, 'random')
  config.order.pack = pack_order
  data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  store = data.rows.stores['sums'] if pack_order != 'random' else store_lib.load_store(
      'sums', 'train', 'byte', config.store_dir)
  scores_D = orderings.document_scores(store, 'difficulty', 'sums', 'data.order.by')
  order_D = {'random': None, 'score': packing.by_score(scores_D, 0),
             'in_context': in_context.document_order(store, in_context.bind(config.order), 0),
             }[pack_order]
  # 'random': the rows store, its one shard's documents in the order seeded by the shard (0).
  expected = packing.pack_documents(store, 64, 0, order_D=order_D)
  rows = data.rows.first_rows(0, len(expected['targets']) + 1)
  for k in expected:
    np.testing.assert_array_equal(rows[k], expected[k])


def test_score_packing_keeps_the_spread_of_document_scores_in_the_rows(data_config):
  spread = {}
  for pack_order in ('random', 'score'):
    config = _config(data_config, 'easy_to_hard')
    config.order.pack, config.seq_len = pack_order, 256  # about 20 documents a row
    data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
    spread[pack_order] = np.std(data.rows.row_scores[False][0])
  scores_D = orderings.document_scores(data.rows.stores['sums'], 'difficulty', 'sums', 'data.order.by')
  assert spread['random'] < 0.5 * spread['score'] and spread['score'] > 0.8 * np.std(scores_D)


@pytest.mark.parametrize('pack_order', ['score', 'in_context'])
def test_packed_orders_are_resumable_and_seeded(data_config, pack_order):
  config = _config(data_config, 'random', mixture=('sums', 'chains'))
  config.order.pack = pack_order
  data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  again = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  for step in (7, 0, 10**4):
    np.testing.assert_array_equal(again.batch(step)['targets'], data.batch(step)['targets'])
  other = pipeline.TrainData(config, batch_size=8, seed=1, total_steps=100)
  assert not np.array_equal(other.rows.first_rows(0, 100)['targets'], data.rows.first_rows(0, 100)['targets'])


# --- pacing (competence-based curricula) ----------------------------------------------------------

def _pacing(**changes):
  config = ml_collections.ConfigDict(base.get_config().data.order.to_dict())
  config.pacing.update(changes)
  return config


@pytest.mark.parametrize('changes, total_steps, expected', [
    ({'function': 'linear', 'steps': 100}, 1000,
     {0: 0.1, 50: 0.1 + 0.9 * 0.5, 99: 0.1 + 0.9 * 0.99, 100: 1.0, 5000: 1.0}),
    ({'function': 'root'}, 200,  # T = half of 200 steps; Platanios' sqrt
     {0: 0.1, 25: math.sqrt(25 * 0.99 / 100 + 0.01), 100: 1.0, 101: 1.0}),
    ({'function': 'root', 'power': 3.0, 'start': 0.2, 'steps': 0.25}, 400,
     {50: (50 * (1 - 0.2**3) / 100 + 0.2**3) ** (1 / 3), 100: 1.0}),
    ({'function': 'step', 'step_length': 10, 'increase': 2.0}, 1000,
     {0: 0.1, 9: 0.1, 10: 0.2, 29: 0.4, 30: 0.8, 39: 0.8, 40: 1.0, 10**9: 1.0}),
    ({'function': 'step'}, 200,  # step_length 0: 4 doublings from 0.1 spread over T = 100
     {0: 0.1, 24: 0.1, 25: 0.2, 99: 0.8, 100: 1.0}),
])
def test_competence_follows_the_pacing_function(changes, total_steps, expected):
  params = orderings.ORDERINGS['pacing'].params(_pacing(**changes), total_steps)
  for step, value in expected.items():
    assert orderings.competence(step, **params) == pytest.approx(value, rel=1e-12)
    assert orderings.pool_size(1000, step, **params) == max(1, math.ceil(
        orderings.competence(step, **params) * 1000))
  assert orderings.pool_size(3, 0, **params) == 1


def test_pacing_reads_rows_from_the_easiest_pool_of_each_step(data_config):
  config = _config(data_config, 'pacing')
  config.order.pacing.function = 'linear'
  data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)  # T = 50
  num_rows = data.rows.num_rows['sums']
  scores = data.rows.row_scores[False][0]
  ranked = orderings.easy_to_hard(num_rows, 0, task_rows.task_key('sums'), 0, scores)
  params = orderings.ORDERINGS['pacing'].params(config.order, 100)
  seen = set()
  for step in range(0, 60):
    rows = data.example_sources(step)[1]
    size = orderings.pool_size(num_rows, step, **params)
    assert size == math.ceil((0.1 + 0.9 * min(step / 50, 1)) * num_rows)
    assert set(rows.tolist()) <= set(ranked[:size].tolist())
    assert scores[rows].max() <= np.sort(scores)[size - 1]
    seen.update(rows.tolist())
    if step < 10:
      assert len(seen) <= math.ceil(0.3 * num_rows)  # early steps draw from the easy rows only
  assert np.ptp(scores) > 1 and len(seen) > num_rows // 2
  # Draws are uniform over the pool, with replacement: late steps read hard rows too.
  late = np.concatenate([data.example_sources(step)[1] for step in range(50, 150)])
  assert np.mean(np.isin(late, ranked[num_rows // 2:])) > 0.3


@pytest.mark.parametrize('change, match', [
    ({'pack': 'sorted'}, r"data\.order\.pack='sorted' is not a known document order"),
    ({'name': 'random', 'pack': 'score', 'by': 'nll'},
     r"data\.order\.by='nll' \(data\.order\.pack='score'\): task 'sums'.*python -m launch\.score"),
    ({'name': 'random', 'pack': 'score', 'by': ''},
     r"data\.order\.by='' must name a per-document score.*data\.order\.pack='score'"),
    ({'pack': 'in_context', 'in_context': {'embedding': 'bert'}},
     r"data\.order\.in_context\.embedding='bert'"),
    ({'name': 'pacing', 'pacing': {'function': 'cubic'}},
     r"data\.order\.pacing\.function='cubic'"),
    ({'name': 'pacing', 'pacing': {'start': 0.0}}, r'data\.order\.pacing\.start=0\.0'),
    ({'name': 'pacing', 'pacing': {'steps': 1.5}}, r'data\.order\.pacing\.steps=1\.5'),
    ({'name': 'pacing', 'pacing': {'steps': 0.0}}, r'data\.order\.pacing\.steps=0\.0'),
    ({'name': 'pacing', 'pacing': {'power': -1.0}}, r'data\.order\.pacing\.power=-1\.0'),
    ({'name': 'pacing', 'pacing': {'increase': 1.0}}, r'data\.order\.pacing\.increase=1\.0'),
    ({'name': 'pacing', 'pacing': {'step_length': -5}},
     r'data\.order\.pacing\.step_length=-5'),
    ({'name': 'pacing', 'pacing': {'speed': 2}}, r'data\.order\.pacing=.*exactly the keys'),
])
def test_bad_pack_order_or_pacing_config_names_the_key(data_config, change, match):
  config = _config(data_config, 'easy_to_hard')
  order = config.order
  for key, value in change.items():  # keys of data.order
    order[key] = {**order[key].to_dict(), **value} if isinstance(value, dict) else value
  with pytest.raises(errors.UserError, match=match):
    pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
