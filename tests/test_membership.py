"""Membership inference (research/analysis/membership.py) and the launch.membership command."""

import itertools
import json

import jax
import ml_collections
import numpy as np
import pytest

from launch import membership as membership_command
from research import finished, train
from research.analysis import membership, scores
from research.data import store as store_lib
from research.data import tasks, vocabularies
from tests import commands
from tests.test_train import tiny_config

# 64 five-digit additions per split, each with ten random digits: the train split is the member set,
# the validation split (same distribution, its own seeded stream) the non-members.
TASK = {'source': 'arithmetic', 'num_documents': 64, 'min_digits': 5, 'max_digits': 5,
        'operations': ['addition']}


def test_roc_auc_of_hand_made_scores():
  assert membership.roc_auc([3, 4, 5], [0, 1, 2]) == 1.0  # perfect separation
  assert membership.roc_auc([3, 4, 5], [0, 1, 2], higher_is_member=False) == 0.0
  assert membership.roc_auc([0, 1], [2, 3], higher_is_member=False) == 1.0
  assert membership.roc_auc([1, 2, 3], [1, 2, 3]) == 0.5  # identical sets
  assert membership.roc_auc([7, 7], [7, 7, 7]) == 0.5  # all tied
  # Members [3, 2, 2], non-members [2, 1]: the 6 pairs (member, non-member) score
  # (3, 2) 1, (3, 1) 1, (2, 2) 1/2, (2, 1) 1, (2, 2) 1/2, (2, 1) 1: U = 5, AUC = 5 / 6.
  assert membership.roc_auc([3, 2, 2], [2, 1]) == pytest.approx(5 / 6)
  assert membership.roc_auc([3, 2, 2], [2, 1], higher_is_member=False) == pytest.approx(1 / 6)


def test_roc_auc_is_the_mann_whitney_statistic():
  rng = np.random.default_rng(0)
  member, nonmember = rng.integers(0, 6, 40), rng.integers(0, 6, 30)  # many ties
  pairs = [(a > b) + 0.5 * (a == b) for a, b in itertools.product(member, nonmember)]
  assert membership.roc_auc(member, nonmember) == pytest.approx(np.mean(pairs))
  with pytest.raises(ValueError, match='need members and non-members'):
    membership.roc_auc([], [1.0])


def test_tpr_at_fpr_of_hand_made_scores():
  nonmember = np.arange(100.0)  # 0, 1, ..., 99
  member = [99.0, 98.5, 100.0, 50.0]
  # 1 of the 100 non-members may be flagged: the threshold is 98, flagging 99 of the non-members and
  # the members 99, 98.5 and 100.
  assert membership.tpr_at_fpr(member, nonmember, 0.01) == 0.75
  assert membership.tpr_at_fpr(member, nonmember, 0.0) == 0.25  # only 100 is above every one
  assert membership.tpr_at_fpr(member, nonmember, 0.5) == 1.0  # threshold 49
  assert membership.tpr_at_fpr(member, nonmember, 1.0) == 1.0  # every document flagged
  assert membership.tpr_at_fpr(member, nonmember, 0.29) == 0.75  # 29 allowed: threshold 70
  # Lower is member: the same, negated.
  assert membership.tpr_at_fpr([-99.0, -98.5, -100.0, -50.0], -nonmember, 0.01,
                               higher_is_member=False) == 0.75
  # Ties at the threshold are not flagged: the non-members' FPR stays at most fpr.
  assert membership.tpr_at_fpr([1.0, 2.0], [1.0, 1.0, 1.0, 0.0], 0.25) == 0.5
  # Fewer than 1 / fpr non-members: the TPR is the share above every non-member.
  assert membership.tpr_at_fpr([1.0, 3.0, 5.0], [2.0, 4.0], 0.01) == pytest.approx(1 / 3)


def test_tpr_at_fpr_flags_at_most_fpr_of_the_nonmembers():
  rng = np.random.default_rng(1)
  for _ in range(20):
    nonmember = rng.integers(0, 10, rng.integers(1, 60)).astype(float)
    member = rng.integers(0, 12, 30).astype(float)
    fpr = rng.uniform()
    tpr = membership.tpr_at_fpr(member, nonmember, fpr)
    # the brute force: the highest TPR of a threshold (among the scores and -inf) within the FPR
    thresholds = [t for t in [-np.inf, *nonmember] if np.mean(nonmember > t) <= fpr + 1e-12]
    assert tpr == max(np.mean(member > t) for t in thresholds)


def test_attack_report_directions():
  member = {'nll': np.array([1.0, 2.0]), 'min_k_prob': np.array([-1.0, -2.0]),
            'zlib_bits': np.array([80.0, 80.0]), 'reference_nll': np.array([3.0, 3.0])}
  nonmember = {'nll': np.array([3.0, 4.0]), 'min_k_prob': np.array([-5.0, -6.0]),
               'zlib_bits': np.array([80.0, 80.0]), 'reference_nll': np.array([1.0, 1.0])}
  report = membership.attack_report(member, nonmember)
  assert list(report) == ['loss', 'zlib', 'min_k', 'reference']
  assert {name: r['higher_is_member'] for name, r in report.items()} == membership.ATTACKS
  assert [r['auc'] for r in report.values()] == [1.0, 1.0, 1.0, 1.0]
  assert [r['tpr_at_fpr'] for r in report.values()] == [1.0, 1.0, 1.0, 1.0]
  del member['reference_nll']
  assert list(membership.attack_report(member, nonmember)) == ['loss', 'zlib', 'min_k']
  texts = ['', 'a', 'ab' * 50]
  np.testing.assert_array_equal(
      membership.zlib_bits(texts),
      [8.0, *(8.0 * round(scores.zlib_ratio(t) * len(t)) for t in texts[1:])])


def _config(data_dir, steps, peak_lr):
  config = tiny_config(data_dir, data=1)
  config.seed = 0
  config.data.tasks = ml_collections.ConfigDict({'sums': TASK})
  config.data.mixture = ml_collections.ConfigDict({'sums': 1.0})
  config.train.steps, config.train.log_every = steps, steps
  config.schedule.peak_lr, config.schedule.warmup_steps = peak_lr, min(10, steps)
  config.eval.every = config.checkpoint.every = steps
  return config


@pytest.fixture(scope='module')
def runs(data_dir, tmp_path_factory):
  """`trained`: 400 steps of 8 rows of 64 tokens over the 64 member documents (~19 tokens each),
  about 160 epochs; `fresh`: one step at a learning rate of 1e-6."""
  root = tmp_path_factory.mktemp('membership')
  result = {}
  for name, steps, peak_lr in (('trained', 400, 3e-3), ('fresh', 1, 1e-6)):
    result[name] = str(root / name)
    train.train(_config(data_dir, steps, peak_lr), result[name], devices=jax.devices()[:1])
  return result


def _report(run, data_dir):
  loaded = finished.load_checkpoint(run)  # on the 8 test devices, data-parallel
  tasks.register_config_tasks(loaded.config.data)
  vocabulary = vocabularies.make_vocabulary('byte', 0)
  member, nonmember = (
      membership.document_scores(loaded, store_lib.load_store('sums', split, 'byte', data_dir),
                                 vocabulary)
      for split in ('train', 'validation'))
  assert len(member['nll']) == len(nonmember['nll']) == 64
  return membership.attack_report(member, nonmember)


def test_a_model_trained_for_epochs_is_told_from_a_fresh_one(runs, data_dir):
  # Measured: trained loss 0.992 / zlib 0.982 / min_k 0.989 AUC, TPR@1%FPR 0.83 / 0.80 / 0.86;
  # fresh loss 0.536 / zlib 0.504 / min_k 0.488 AUC.
  trained, fresh = _report(runs['trained'], data_dir), _report(runs['fresh'], data_dir)
  assert trained['min_k']['auc'] > 0.9 and trained['min_k']['tpr_at_fpr'] > 0.4
  assert trained['loss']['auc'] > 0.9 and trained['zlib']['auc'] > 0.9
  for name, result in fresh.items():
    assert abs(result['auc'] - 0.5) < 0.15, name


def test_command_prints_the_table_and_writes_the_json(runs, data_dir, tmp_path):
  out = tmp_path / 'report.json'
  printed = commands.run_main(membership_command.main, checkpoint=[runs['trained']], task='sums',
                              reference=runs['fresh'], members=64, out=str(out))
  assert '64 members (train) vs 64 non-members (validation) of --task=sums' in printed
  assert 'attack' in printed and 'TPR@1%FPR' in printed
  for line in ('min_k (higher = member)', 'loss (lower = member)', 'reference (lower = member)'):
    assert line in printed
  result = json.loads(out.read_text())
  assert (result['task'], result['step'], result['reference_step']) == ('sums', 400, 1)
  assert (result['members'], result['nonmembers'], result['min_k'], result['fpr']) == (
      64, 64, 0.2, 0.01)
  assert list(result['attacks']) == ['loss', 'zlib', 'min_k', 'reference']
  expected = _report(runs['trained'], data_dir)  # all 64 of each split: the same sets
  for name, values in expected.items():
    assert result['attacks'][name] == pytest.approx(values)
  assert f'{result["attacks"]["min_k"]["auc"]:.4f}' in printed
  assert result['attacks']['reference']['auc'] > 0.9


def test_user_errors_name_the_flag(runs, tmp_path):
  # A files task whose every document id hashes into the train split: no validation documents.
  notes = next(path for path in (str(tmp_path / f'notes{k}.jsonl') for k in range(1000))
               if not any(tasks.is_validation(f'{path}:{i + 1}') for i in range(4)))
  with open(notes, 'w', encoding='utf-8') as f:
    f.writelines(json.dumps({'text': f'note {i}'}) + '\n' for i in range(4))
  config = _config(str(tmp_path / 'cache'), 1, 1e-6)
  config.data.tasks = ml_collections.ConfigDict(
      {'notes': {'source': 'files', 'pattern': notes, 'format': 'jsonl'}})
  nowhere, out = tmp_path / 'nowhere', tmp_path / 'out.json'
  cases = [
      (dict(checkpoint=[str(nowhere)], task='sums'), f'--checkpoint={nowhere} does not exist'),
      (dict(checkpoint=[runs['trained'], runs['fresh']], task='sums'), 'must name one workdir'),
      (dict(checkpoint=[runs['trained']], task='sums', reference=str(nowhere)),
       f'--reference={nowhere} does not exist'),
      (dict(checkpoint=[runs['trained']], task='notes', config=config),
       '--task=notes has no validation documents'),
      (dict(checkpoint=[runs['trained']], task='sums', members=0), '--members=0 must be'),
      (dict(checkpoint=[runs['trained']], task='sums', fpr=1.5), r'--fpr=1.5 must be in \[0, 1\]'),
      (dict(checkpoint=[runs['trained']], task='sums', min_k=0.0), r'--min_k=0.0 must be in'),
      (dict(checkpoint=[runs['trained']]), '--task is required'),
  ]
  for flag_values, message in cases:
    with pytest.raises(SystemExit, match=r'^error: .*' + message):
      commands.run_main(membership_command.main, out=str(out), **flag_values)
  assert not out.exists()
