"""Skill-it online mixing: the multiplicative-weights rule, its config errors, and the rule in the
training loop (updates every K steps, logged, resumed exactly)."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest

from research import errors, train

from research.data import skillit
from research.data import sampler
from tests.test_train import read_metrics, tiny_config


def _data_config(**skillit_values):
  config = tiny_config('unused').data
  config.mixture = ml_collections.ConfigDict({'lego_1': 1.0, 'lego_2': 1.0})
  config.skillit.every = 10
  for key, value in skillit_values.items():
    config.skillit[key] = value
  return config


def test_update_matches_a_hand_computed_two_step_example(tmp_path):
  # A = [[1, 0.5], [0, 1]]: training on lego_1 helps lego_2 by half as much as itself.
  config = skillit.bind(_data_config(eta=0.5, window=2, graph=ml_collections.ConfigDict(
      {'lego_1': {'lego_1': 1.0, 'lego_2': 0.5}, 'lego_2': {'lego_2': 1.0}})))
  np.testing.assert_array_equal(config.graph_KM, [[1.0, 0.5], [0.0, 1.0]])
  mixing = skillit.OnlineMixture(config, block_size=100_000, workdir=str(tmp_path), first_step=0)
  # p_1 ∝ exp(0.5 * A 1) = exp([0.75, 0.5]).
  np.testing.assert_allclose(config.mixture(None), [0.562177, 0.437823], atol=1e-6)
  assert mixing.stages()[0].weights == {'lego_1': 0.56218, 'lego_2': 0.43782}
  # Step 1 losses L = [2, 4]: A L = [4, 4], so p_2 is uniform.
  first = mixing.update(10, {'eval/lego_1/loss': 2.0, 'eval/lego_2/loss': 4.0})
  assert first.weights == {'lego_1': 0.5, 'lego_2': 0.5}
  # Step 2 losses L = [1, 3]; the window of 2 sums [3, 7]: A [3, 7] = [6.5, 7], so p_3 ∝
  # exp(0.5 * [6.5, 7]) = exp([3.25, 3.5]), p_3[0] = 1 / (1 + e^0.25) = 0.437823.
  second = mixing.update(20, {'eval/lego_1/loss': 1.0, 'eval/lego_2/loss': 3.0})
  assert second.weights == {'lego_1': 0.43782, 'lego_2': 0.56218}
  # A third update with window 2 forgets the first losses: [1, 3] + [5, 1] = [6, 4], A [6, 4] =
  # [8, 4], p_4[0] = 1 / (1 + e^-2) = 0.880797.
  third = mixing.update(30, {'eval/lego_1/loss': 5.0, 'eval/lego_2/loss': 1.0})
  assert third.weights == {'lego_1': 0.8808, 'lego_2': 0.1192}
  assert [s.start_step for s in mixing.stages()] == [0, 10, 20, 30]
  lines = (tmp_path / skillit.FILE).read_text().splitlines()
  assert [json.loads(line)['step'] for line in lines] == [10, 20, 30]
  # A resumed run at step 20 keeps the updates up to 20 and drops the later one from the file.
  resumed = skillit.OnlineMixture(config, block_size=100_000, workdir=str(tmp_path), first_step=20)
  assert [u.weights for u in resumed.updates] == [first.weights, second.weights]
  assert len((tmp_path / skillit.FILE).read_text().splitlines()) == 2


def test_sec_values_follow_td0_on_loss_drops_and_set_a_boltzmann_mixture(tmp_path):
  # Identity graph, equal prior, alpha 0.5, temperature 0.1 (Self-Evolving Curriculum's bandit).
  config = skillit.bind(_data_config(rule='sec', alpha=0.5, temperature=0.1))
  mixing = skillit.OnlineMixture(config, block_size=100_000, workdir=str(tmp_path), first_step=0)
  assert mixing.stages()[0].weights == {'lego_1': 0.5, 'lego_2': 0.5}
  # The first update has no earlier loss to drop from: Q = 0, the prior.
  first = mixing.update(10, {'eval/lego_1/loss': 2.0, 'eval/lego_2/loss': 4.0})
  assert first.weights == {'lego_1': 0.5, 'lego_2': 0.5}
  # Drops [0.2, 0.1]: Q = 0.5 * [0.2, 0.1] = [0.1, 0.05]; p ∝ exp([1, 0.5]), p[0] = 0.622459.
  second = mixing.update(20, {'eval/lego_1/loss': 1.8, 'eval/lego_2/loss': 3.9})
  assert second.weights == {'lego_1': 0.62246, 'lego_2': 0.37754}
  # lego_1 stalls, lego_2 drops 0.3: Q = 0.5 * [0, 0.3] + 0.5 * [0.1, 0.05] = [0.05, 0.175];
  # p ∝ exp([0.5, 1.75]), p[0] = 1 / (1 + e^1.25) = 0.222700: the skill still learning gains.
  third = mixing.update(30, {'eval/lego_1/loss': 1.8, 'eval/lego_2/loss': 3.6})
  assert third.weights == {'lego_1': 0.2227, 'lego_2': 0.7773}
  np.testing.assert_allclose(skillit.sec_values(np.eye(2), 0.5, [[2, 4], [1.8, 3.9], [1.8, 3.6]]),
                             [0.05, 0.175])
  # A resumed run recomputes the values from the logged losses: the same mixture.
  resumed = skillit.OnlineMixture(config, block_size=100_000, workdir=str(tmp_path), first_step=30)
  assert resumed.stages()[-1].weights == third.weights


def test_an_empty_graph_is_the_identity_and_the_mixture_is_the_prior():
  config = skillit.bind(_data_config(eta=1.0))
  np.testing.assert_array_equal(config.graph_KM, np.eye(2))
  data = _data_config(eta=1.0, eval_tasks=('lego_2',))
  data.mixture.lego_1 = 3.0
  config = skillit.bind(data)
  np.testing.assert_array_equal(config.graph_KM, [[0.0], [1.0]])
  # p_1 ∝ prior * exp(A 1) = [0.75, 0.25 e].
  prior_times_exp = np.array([0.75, 0.25 * np.e])
  np.testing.assert_allclose(config.mixture(None), prior_times_exp / prior_times_exp.sum())


@pytest.mark.parametrize('values, message', [
    ({'graph': ml_collections.ConfigDict({'lego_9': {'lego_1': 1.0}})},
     'data.skillit.graph.lego_9 is not a task of data.mixture'),
    ({'graph': ml_collections.ConfigDict({'lego_1': {'lego_7': 1.0}})},
     'data.skillit.graph.lego_1.lego_7 is not an evaluation skill'),
    ({'eta': -1.0}, 'data.skillit.eta=-1.0 must be a finite number >= 0'),
    ({'window': 0}, 'data.skillit.window=0 must be a finite integer >= 1'),
    ({'eval_tasks': ('lego_1', 'lego_1')}, 'names a task twice'),
    ({'rule': 'ucb'}, r"data.skillit.rule='ucb' must be one of \['skillit', 'sec'\]"),
    ({'rule': 'sec', 'alpha': 0.0}, 'data.skillit.alpha=0.0 must be a finite number > 0'),
    ({'rule': 'sec', 'alpha': 1.5}, r'data.skillit.alpha=1.5 must be in \(0, 1\]'),
    ({'rule': 'sec', 'temperature': 0.0},
     'data.skillit.temperature=0.0 must be a finite number > 0'),
])
def test_bad_skillit_config_names_the_key(values, message):
  with pytest.raises(errors.UserError, match=message):
    skillit.bind(_data_config(**values))


def test_skillit_and_mixture_stages_exclude_each_other():
  data = _data_config()
  data.stages = ml_collections.ConfigDict(
      {'late': {'at_step': 5, 'mixture': {'lego_1': 1.0}}})
  with pytest.raises(errors.UserError, match='data.stages .* cannot also set it'):
    skillit.bind(data)


def _skillit_run_config(data_dir):
  config = tiny_config(data_dir, data=1)
  config.data.skillit.update(every=2, eta=1.0, window=2)
  config.data.skillit.graph = ml_collections.ConfigDict(
      {'stdlib_prose': {'stdlib_prose': 1.0, 'stdlib_code': 0.5},
       'stdlib_code': {'stdlib_code': 1.0}})
  return config


@pytest.fixture(scope='module')
def skillit_run(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('skillit'))
  state = train.train(_skillit_run_config(data_dir), workdir, devices=jax.devices()[:1])
  return workdir, state


def test_training_updates_the_mixture_every_k_steps_from_eval_losses(skillit_run, data_dir):
  workdir, _ = skillit_run
  updates = [json.loads(line) for line in open(os.path.join(workdir, skillit.FILE))]
  assert [u['step'] for u in updates] == [2, 4]  # every 2 steps, not at the last step (6)
  metrics = read_metrics(workdir)
  evals = {m['step']: m for m in metrics if 'eval/stdlib_code/loss' in m}
  assert sorted(evals) == [2, 3, 4, 6]  # eval.every=3 and the Skill-it updates
  config = skillit.bind(_skillit_run_config(data_dir).data)
  losses_WM = []
  for update in updates:
    losses = [evals[update['step']][f'eval/{name}/loss'] for name in config.eval_tasks]
    assert [update['losses'][name] for name in config.eval_tasks] == losses
    losses_WM.append(losses)
    expected = sampler.block_shares(
        dict(zip(config.train_tasks, config.mixture(np.array(losses_WM)))), 1024)
    assert update['weights'] == expected
  # The logged mixture weights follow the updates: step 3 logs the mixture of step 2 (update 1),
  # step 5 that of step 4 (update 2), steps 1 and 2 the initial p_1.
  weights = {m['step']: m['data/stdlib_code/weight'] for m in metrics if 'loss' in m}
  p_1 = sampler.block_shares(dict(zip(config.train_tasks, config.mixture(None))), 1024)
  assert weights[1] == weights[2] == pytest.approx(p_1['stdlib_code'])
  assert weights[3] == pytest.approx(updates[0]['weights']['stdlib_code'])
  assert weights[5] == weights[6] == pytest.approx(updates[1]['weights']['stdlib_code'])
  assert weights[3] != weights[2] and weights[5] != weights[3]


def test_a_resumed_skillit_run_is_bit_identical(skillit_run, data_dir, tmp_path):
  workdir, uninterrupted = skillit_run
  config = _skillit_run_config(data_dir)
  train.train(config, str(tmp_path), stop_after=3, devices=jax.devices()[:1])
  # An update written after the checkpoint (as a kill between the two would leave) is recomputed.
  with open(tmp_path / skillit.FILE, 'a') as f:
    f.write(json.dumps({'step': 4, 'losses': {}, 'weights': {'stdlib_code': 1.0}}) + '\n')
  resumed = train.train(config, str(tmp_path), devices=jax.devices()[:1])
  assert (tmp_path / skillit.FILE).read_text() == open(os.path.join(workdir, skillit.FILE)).read()
  for a, b in zip(jax.tree.leaves(uninterrupted.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _single_skill_run(directory, skill, losses_by_step):
  os.makedirs(directory)
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump({'data': {'mixture': {skill: 1.0, 'other': 0.0}}, 'train': {'steps': 20}}, f)
  with open(os.path.join(directory, 'metrics.jsonl'), 'w') as f:
    for step, losses in losses_by_step.items():
      f.write(json.dumps({'step': step, **{f'eval/{k}/loss': v for k, v in losses.items()},
                          **{f'eval/{k}/answer_loss': v / 2 for k, v in losses.items()}}) + '\n')


def test_skill_graph_command_writes_the_loss_drops_of_single_skill_runs(tmp_path):
  from launch import skill_graph
  from tests.commands import run_main
  # Training on lego_1 lowers lego_1 by 1.0 and lego_2 by 0.25; on lego_2 lowers lego_2 by 0.5
  # and raises lego_1 (no edge). The first evaluation is before training (an init.path run).
  _single_skill_run(tmp_path / 'runs' / 'a', 'lego_1', {
      0: {'lego_1': 3.0, 'lego_2': 3.5}, 10: {'lego_1': 2.5, 'lego_2': 3.4},
      20: {'lego_1': 2.0, 'lego_2': 3.25}})
  _single_skill_run(tmp_path / 'runs' / 'b', 'lego_2', {
      0: {'lego_1': 3.0, 'lego_2': 3.5}, 20: {'lego_1': 3.1, 'lego_2': 3.0}})
  out = tmp_path / 'graph.py'
  printed = run_main(lambda _: skill_graph.main(['launch.skill_graph', str(tmp_path / 'runs')]),
                     out=str(out), eval_tasks=[])
  assert 'lego_1: lego_1=1.0000 lego_2=0.2500' in printed
  config = tiny_config('unused')
  exec(out.read_text(), {'config': config})
  assert config.data.skillit.graph.to_dict() == {'lego_1': {'lego_1': 1.0, 'lego_2': 0.25},
                                                 'lego_2': {'lego_2': 0.5}}
  config.data.mixture = ml_collections.ConfigDict({'lego_1': 1.0, 'lego_2': 1.0})
  config.data.skillit.every = 5
  np.testing.assert_allclose(skillit.bind(config.data).graph_KM, [[1.0, 0.25], [0.0, 0.5]])
  # With --metric=answer_loss the drops are those of eval/<task>/answer_loss (here half as large).
  printed = run_main(lambda _: skill_graph.main(['launch.skill_graph', str(tmp_path / 'runs')]),
                     out=str(out), eval_tasks=[], metric='answer_loss')
  assert 'lego_1: lego_1=0.5000 lego_2=0.1250' in printed
  assert '--metric=answer_loss' in out.read_text()


def test_skill_graph_command_refuses_a_run_of_several_skills(tmp_path):
  from launch import skill_graph
  from tests.commands import run_main
  _single_skill_run(tmp_path / 'runs' / 'a', 'lego_1', {0: {'lego_1': 3.0}, 20: {'lego_1': 2.0}})
  with open(tmp_path / 'runs' / 'a' / 'config.json', 'w') as f:
    json.dump({'data': {'mixture': {'lego_1': 1.0, 'lego_2': 1.0}}}, f)
  with pytest.raises(SystemExit, match='error: .*a/config.json: .* trains on 2 tasks; a run that '
                     'estimates the skills graph trains on exactly one skill'):
    run_main(lambda _: skill_graph.main(['launch.skill_graph', str(tmp_path / 'runs')]),
             out=str(tmp_path / 'g.py'), eval_tasks=[])


def test_a_metric_the_evaluation_did_not_log_names_the_key(tmp_path):
  config = skillit.bind(_data_config(metric='answer_loss'))
  mixing = skillit.OnlineMixture(config, block_size=1024, workdir=str(tmp_path), first_step=0)
  with pytest.raises(errors.UserError, match=r"data.skillit.metric='answer_loss': the evaluation "
                     r"logged no \['eval/lego_1/answer_loss', 'eval/lego_2/answer_loss'\]"):
    mixing.update(10, {'eval/lego_1/loss': 1.0, 'eval/lego_2/loss': 1.0})
  with pytest.raises(errors.UserError, match="data.skillit.metric='accuracy' must be one of"):
    skillit.bind(_data_config(metric='accuracy'))


def test_answer_loss_on_a_task_without_answers_fails_before_training(data_dir, tmp_path):
  config = tiny_config(data_dir, data=1)
  config.data.skillit.update(every=2, metric='answer_loss')
  with pytest.raises(errors.UserError, match=r"data.skillit.metric='answer_loss', but the "
                     r"evaluation of \['stdlib_code', 'stdlib_prose'\] scores no answers"):
    train.train(config, str(tmp_path), devices=jax.devices()[:1])
  assert not os.listdir(tmp_path / 'checkpoints') and not os.path.exists(tmp_path / skillit.FILE)
