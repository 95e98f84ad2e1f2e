"""The canary-order test (research/analysis/canary.py) and the launch.order_test command."""

import json
import math
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from launch import order_test as order_test_command
from research import finished, train
from research.analysis import canary
from tests import commands
from tests.test_train import read_metrics, tiny_config

STEPS, BATCH = 80, 16
LETTERS = 'letters.jsonl'  # relative: see `letters_dir`


def test_average_ranks_and_spearman_of_a_hand_made_example():
  np.testing.assert_array_equal(canary.average_ranks([10, 20, 20, 30]), [1, 2.5, 2.5, 4])
  np.testing.assert_array_equal(canary.average_ranks([3, 1, 3, 3]), [3, 1, 3, 3])
  # x ranks 1..5, centred [-2, -1, 0, 1, 2]; y = [2, 1, 4, 4, 5] ranks [2, 1, 3.5, 3.5, 5], centred
  # [-1, -2, 0.5, 0.5, 2]: sum of products 2 + 2 + 0 + 0.5 + 4 = 8.5, sums of squares 10 and 9.5.
  x, y = [1, 2, 3, 4, 5], [2, 1, 4, 4, 5]
  assert canary.spearman(x, y) == pytest.approx(8.5 / math.sqrt(95))
  assert canary.spearman(x, [-v for v in y]) == pytest.approx(-8.5 / math.sqrt(95))
  assert canary.spearman(x, np.exp(x)) == pytest.approx(1.0)  # any increasing function
  assert math.isnan(canary.spearman(x, [7] * 5))  # a constant sample has no ranks to correlate
  with pytest.raises(ValueError, match='one length >= 2'):
    canary.spearman([1, 2], [1, 2, 3])
  with pytest.raises(ValueError, match='finite'):
    canary.spearman([1, 2, 3], [1, np.nan, 3])


def test_spearman_is_the_correlation_of_average_ranks():
  rng = np.random.default_rng(0)
  for _ in range(5):
    x, y = rng.integers(0, 8, 60), rng.integers(0, 5, 60) + 0.5 * rng.integers(0, 8, 60)
    ranks = canary.average_ranks(x)
    # brute force: the values below, plus the mean of the tied values' ranks
    np.testing.assert_array_equal(ranks, [np.sum(x < v) + (np.sum(x == v) + 1) / 2 for v in x])
    expected = np.corrcoef(ranks, canary.average_ranks(y))[0, 1]
    assert canary.spearman(x, y) == pytest.approx(expected, abs=1e-12)


def test_permutation_p_value():
  rng = np.random.default_rng(1)
  positions = np.arange(200)
  decreasing = -0.01 * positions + rng.normal(size=200)
  assert canary.spearman(positions, decreasing) < -0.3  # measured: -0.55
  # No permutation of 1000 is as negative: the smallest p-value, 1 / 1001.
  assert canary.permutation_p_value(positions, decreasing, 1000, seed=0) == 1 / 1001
  assert canary.permutation_p_value(positions, decreasing, 1000, 0, 'two-sided') == 1 / 1001
  assert canary.permutation_p_value(positions, decreasing, 1000, 0, 'greater') > 0.99
  independent = np.random.default_rng(2).normal(size=200)
  # Measured: rho -0.030, p 0.34 (two-sided 0.67).
  assert canary.permutation_p_value(positions, independent, 1000, seed=0) > 0.05
  assert canary.permutation_p_value(positions, independent, 1000, 0, 'two-sided') > 0.05
  # Under the null the p-value is (about) uniform: 5% of independent samples fall at 0.05 or below
  # (measured: 3.7% of 300).
  p_values = [canary.permutation_p_value(np.arange(30), rng.normal(size=30), 99, seed)
              for seed in range(300)]
  assert 0.02 < np.mean(np.array(p_values) <= 0.05) < 0.09
  assert min(p_values) >= 1 / 100  # the +1 correction: never 0
  # Every permutation ties with a constant sample: p = 1.
  assert canary.permutation_p_value(positions, np.ones(200), 100) == 1.0
  same = [canary.permutation_p_value(positions, independent, 500, seed=3) for _ in range(2)]
  assert same[0] == same[1]  # seeded
  with pytest.raises(ValueError, match='alternative'):
    canary.permutation_p_value(positions, independent, alternative='lower')
  with pytest.raises(ValueError, match='permutations=0'):
    canary.permutation_p_value(positions, independent, 0)


@pytest.fixture(scope='module')
def letters_dir(tmp_path_factory):
  """A directory, the working directory of this module's tests, holding LETTERS: 1360 documents of
  63 random lowercase letters (64 tokens with EOS: one document is one packed row of
  data.seq_len=64). A files document's id is PATH:LINE and decides its split (research/data/
  tasks.py), so the task names the file by a relative path: every session then has the same
  training examples, and the measured statistics below are the same."""
  directory = tmp_path_factory.mktemp('letters')
  rng = np.random.default_rng(0)
  with open(directory / LETTERS, 'w', encoding='utf-8') as f:
    for letters_L in rng.integers(0, 26, (1360, 63)):
      f.write(json.dumps({'text': ''.join(chr(ord('a') + int(c)) for c in letters_L)}) + '\n')
  with pytest.MonkeyPatch.context() as patch:
    patch.chdir(directory)
    yield directory


def _config(data_dir):
  """STEPS steps of BATCH rows over the letters (a single epoch of their ~1290 training rows), at a
  constant learning rate of 3e-3 and without momentum (train.b1 = 0: an example's gradient moves
  the weights at its own step, not over the next ~10 steps as with b1 = 0.9, so the last steps'
  examples are the ones remembered best)."""
  config = tiny_config(data_dir, data=1)
  config.seed = 0
  config.data.tasks = ml_collections.ConfigDict(
      {'letters': {'source': 'files', 'pattern': LETTERS, 'format': 'jsonl'}})
  config.data.mixture = ml_collections.ConfigDict({'letters': 1.0})
  config.train.steps, config.train.batch_size, config.train.log_every = STEPS, BATCH, 1
  config.train.b1 = 0.0
  config.schedule.name, config.schedule.peak_lr, config.schedule.warmup_steps = 'constant', 3e-3, 10
  config.eval.every, config.checkpoint.every = STEPS, STEPS // 2
  return config


@pytest.fixture(scope='module')
def run(letters_dir, data_dir):
  workdir = str(letters_dir / 'run')
  train.train(_config(data_dir), workdir, devices=jax.devices()[:1])
  return workdir


def _losses(checkpoint, seed, first, last, devices=None):
  loaded = finished.load_checkpoint(checkpoint, devices=devices)  # default: 8 devices, data-parallel
  config = loaded.config.copy_and_resolve_references()
  config.seed = seed
  return canary.example_losses(loaded, canary.training_data(config), first, last)


def test_example_losses_are_the_losses_training_saw(run):
  data = canary.training_data(finished.checkpoint_config(run))
  assert canary.epoch_steps(data, BATCH) >= STEPS  # a single epoch: each example seen once
  # The checkpoint at step 40 on step 40's batch: the loss training logged for that step (every
  # row is one 64-token document, so the mean over rows is the token mean).
  examples = _losses(os.path.join(run, 'checkpoints', '40'), 0, 40, 41)
  np.testing.assert_array_equal(examples.positions, 40 * BATCH + np.arange(BATCH))
  logged = next(m['loss'] for m in read_metrics(run) if m['step'] == 41 and 'loss' in m)
  assert np.mean(examples.losses) == pytest.approx(logged, rel=1e-5)
  # On 3 devices each batch of 8 rows is padded to 9; the padding row is dropped.
  padded = _losses(run, 0, 78, 80, devices=jax.devices()[:3])
  np.testing.assert_array_equal(padded.positions, np.arange(78 * BATCH, 80 * BATCH))
  np.testing.assert_allclose(padded.losses, _losses(run, 0, 78, 80).losses, rtol=1e-5)


def test_rows_a_knowledge_probe_injected_are_left_out(run):
  """An order with data.probes: at the probe's exposure steps its rows replace the first rows of
  the batch; they are not a shuffle's draw, so the examples skip them."""
  config = finished.checkpoint_config(run).copy_and_resolve_references()
  config.data.tasks.arith_probe = {'source': 'arithmetic', 'seed': 5, 'num_documents': 200}
  config.data.probes = ml_collections.ConfigDict(
      {'facts': {'task': 'arith_probe', 'documents': 4, 'at_step': 77, 'times': 2, 'every': 2}})
  data = canary.training_data(config)
  rows = len(data.probes[0].rows['targets'])
  assert 1 <= rows < BATCH
  examples = canary.example_losses(finished.load_checkpoint(run), data, 76, 80)
  kept = [76 * BATCH + np.arange(BATCH), 77 * BATCH + np.arange(rows, BATCH),
          78 * BATCH + np.arange(BATCH), 79 * BATCH + np.arange(rows, BATCH)]
  np.testing.assert_array_equal(examples.positions, np.concatenate(kept))
  # The rows kept are the ones the order without the probe has there, with the same losses.
  plain = _losses(run, 0, 76, 80)
  np.testing.assert_allclose(examples.losses, plain.losses[np.isin(plain.positions,
                                                                   examples.positions)], rtol=1e-5)


def test_the_training_order_is_told_from_another_seeds(run):
  # The palimpsest of this tiny model lasts a few steps: over the last 5 steps (80 examples) its
  # loss falls with the step in its own order, and not in seed 1's. Measured under conftest's XLA
  # flags: own rho -0.35, p 0.002; seed 1's order rho 0.08, p 0.77 (with LLVM's optimisations on:
  # -0.34, p 0.001; 0.02, p 0.56). Batches of 8 (40 examples) gave too weak a signal to rely on:
  # own p 0.012 with those optimisations, 0.054 without.
  own = _losses(run, 0, STEPS - 5, STEPS)
  other = _losses(run, 1, STEPS - 5, STEPS)
  assert len(own.losses) == len(other.losses) == 5 * BATCH
  np.testing.assert_array_equal(own.steps, own.positions // BATCH)
  assert canary.spearman(own.steps, own.losses) < -0.25
  assert canary.permutation_p_value(own.steps, own.losses) < 0.02
  assert canary.permutation_p_value(other.steps, other.losses) > 0.1


def test_command_prints_and_writes_the_json(run, tmp_path):
  out = tmp_path / 'order.json'
  steps = f'{STEPS - 5}:{STEPS}'
  printed = commands.run_main(order_test_command.main, checkpoint=[run], steps=steps, out=str(out))
  assert f'steps {STEPS - 5}:{STEPS}' in printed and f'n={5 * BATCH} examples' in printed
  result = json.loads(out.read_text())
  own = _losses(run, 0, STEPS - 5, STEPS)
  assert (result['step'], result['steps'], result['examples']) == (STEPS, [STEPS - 5, STEPS],
                                                                   5 * BATCH)
  assert result['spearman'] == pytest.approx(canary.spearman(own.steps, own.losses))
  assert result['p_value'] == canary.permutation_p_value(own.steps, own.losses)
  assert result['positions'] == own.positions.tolist()
  assert (result['order_seed'], result['permutations'], result['alternative']) == (0, 1000, 'less')
  assert result['confounds'] == [] and 'warning' not in printed
  assert f'rho={result["spearman"]:.4f}' in printed and f'p={result["p_value"]:.4g}' in printed
  # --order_of another run: the same config but seed 1 (its checkpoint is never read).
  other = tmp_path / 'other'
  shutil.copytree(os.path.join(run, 'checkpoints'), other / 'checkpoints')
  with open(os.path.join(run, 'config.json'), encoding='utf-8') as f:
    config = json.load(f)
  (other / 'config.json').write_text(json.dumps({**config, 'seed': 1}))
  commands.run_main(order_test_command.main, checkpoint=[run], order_of=str(other), steps=steps,
                    out=str(out))
  result = json.loads(out.read_text())
  assert result['order_seed'] == 1 and result['p_value'] > 0.1
  # The default range: the last epoch's worth of steps (here more than the run): the whole run.
  printed = commands.run_main(order_test_command.main, checkpoint=[run], steps=None, out=None)
  assert f'steps 0:{STEPS}' in printed and f'n={STEPS * BATCH} examples' in printed


def test_user_errors_name_the_flag(run, tmp_path):
  nowhere, out = tmp_path / 'nowhere', tmp_path / 'out.json'
  cases = [
      (dict(checkpoint=[str(nowhere)]), f'--checkpoint={nowhere} does not exist'),
      (dict(checkpoint=[run, run]), 'must name one workdir'),
      (dict(checkpoint=[run], steps='70-80'), '--steps=70-80 must be A:B'),
      (dict(checkpoint=[run], steps='80:70'), '--steps=80:70 must be A:B'),
      (dict(checkpoint=[run], steps=f'0:{STEPS + 1}'), f"--steps=0:{STEPS + 1} ends past the order "
       f"run's train.steps={STEPS}"),
      (dict(checkpoint=[run], order_of=str(nowhere)), f'--order_of={nowhere} does not exist'),
      (dict(checkpoint=[run], permutations=0), '--permutations=0 must be at least 1'),
      (dict(checkpoint=[run], seed=-1), '--seed=-1 must be'),
      (dict(checkpoint=[run], out=str(tmp_path)), f'--out={tmp_path} is a directory'),
  ]
  for flag_values, message in cases:
    with pytest.raises(SystemExit, match=r'^error: .*' + message):
      commands.run_main(order_test_command.main, **{'out': str(out), **flag_values})
  assert not out.exists()


def test_order_confounds_name_the_config_keys():
  config = tiny_config('unused')
  assert canary.order_confounds(config) == []
  config.data.order.name = 'easy_to_hard'
  config.data.stages = ml_collections.ConfigDict({'late': {'at_step': 3, 'mixture': {'a': 1.0}}})
  config.phases = ml_collections.ConfigDict(
      {'rewarm': {'at_step': 3, 'schedule': {'peak_lr': 1e-3}}})  # the data stay as they are
  config.objective.name = 'masked_thought'
  assert len(canary.order_confounds(config)) == 3
  config.phases.adapt = ml_collections.ConfigDict({'at_step': 4, 'objective': {'name': 'mlm'}})
  confounds = canary.order_confounds(config)
  assert len(confounds) == 4
  assert "data.order.name='easy_to_hard'" in confounds[0] and 'data.stages' in confounds[1]
  assert 'config.phases.NAME.objective' in confounds[2]
  assert "objective.name='masked_thought'" in confounds[3]
  config.phases.short = ml_collections.ConfigDict({'at_step': 0, 'seq_len': 32})  # length warm-up
  assert 'config.phases.NAME.seq_len' in canary.order_confounds(config)[3]
