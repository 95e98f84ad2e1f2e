"""Training end to end with the objectives: UL2 on both architectures, and distillation."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import base
from research import errors, sharding, train


def _config(data_dir, **overrides):
  config = base.get_config()
  config.data.store_dir = data_dir
  config.data.seq_len, config.data.extra_ids = 128, 100
  config.model.update(d_model=64, num_layers=2, num_heads=2, head_dim=32, mlp_dim=128)
  config.train.update(steps=40, batch_size=8, log_every=10)
  config.schedule.update(peak_lr=3e-3, warmup_steps=5)
  config.eval.update(every=40, batches=1, batch_size=8)
  config.checkpoint.every = 40
  for key, value in overrides.items():
    section, field = key.split('__')
    config[section][field] = value
  return config


def _metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    lines = [json.loads(line) for line in f]
  merged = {}
  for line in lines:
    merged.setdefault(line['step'], {}).update(line)
  return merged


@pytest.mark.parametrize('architecture', ['decoder', 'encoder_decoder'])
def test_ul2_trains_with_falling_loss_and_reports_each_denoiser(data_dir, tmp_path, architecture):
  config = _config(data_dir, objective__name='ul2', model__architecture=architecture,
                   objective__target_len=64 if architecture == 'encoder_decoder' else 0,
                   eval__objectives=('R3_15',))
  train.train(config, str(tmp_path), devices=jax.devices()[:1])
  metrics = _metrics(str(tmp_path))
  assert metrics[40]['loss'] < 0.8 * metrics[10]['loss']
  for task in ('stdlib_prose', 'stdlib_code'):
    assert metrics[40][f'eval/{task}/loss'] < 4.5  # ln(384) = 5.95 at initialisation
    for denoiser in ('R3_15', 'R8_15', 'X3_50', 'X8_50', 'X64_15', 'X64_50', 'S_25'):
      assert 0 < metrics[40][f'eval/{task}/{denoiser}/loss'] < 6
    # The loss on the spans' text alone, without the sentinels' and EOS.
    text_loss = metrics[40][f'eval/{task}/R3_15/text_loss']
    assert 0 < text_loss < 6 and text_loss != metrics[40][f'eval/{task}/R3_15/loss']


@pytest.fixture(name='teacher_dir', scope='module')
def _teacher_dir_fixture(data_dir, tmp_path_factory):
  """A teacher run of 20 steps, shared by the distillation tests."""
  teacher_dir = str(tmp_path_factory.mktemp('teacher'))
  train.train(_config(data_dir, train__steps=20), teacher_dir, devices=jax.devices()[:1])
  return teacher_dir


def test_distillation_trains_a_student_on_a_teachers_logits(data_dir, teacher_dir, tmp_path):
  student_dir = str(tmp_path / 'student')
  student = _config(data_dir, model__d_model=32, model__mlp_dim=64, model__head_dim=16)
  student.objective.distill.update(teacher=teacher_dir, weight=0.5, temperature=2.0)
  train.train(student, student_dir, devices=jax.devices()[:1])
  metrics = _metrics(student_dir)
  assert metrics[40]['distill'] < 0.7 * metrics[10]['distill']
  assert metrics[40]['loss'] < metrics[10]['loss']


def test_salt_distills_until_its_step_then_trains_on_the_data_alone(data_dir, teacher_dir,
                                                                     tmp_path):
  """objective.distill.until (SALT): the weight is reported each step, 0 from `until` on, and a
  step there updates the parameters exactly as a run without a teacher does."""
  student = _config(data_dir, train__steps=4, train__log_every=1)
  student.objective.distill.update(teacher=teacher_dir, weight=0.5, until=0.5, shape='linear')
  train.train(student, str(tmp_path / 'student'), devices=jax.devices()[:1])
  metrics = _metrics(str(tmp_path / 'student'))
  assert [metrics[s]['distill_weight'] for s in (1, 2, 3, 4)] == [0.5, 0.25, 0.0, 0.0]
  assert metrics[2]['distill'] > 0 and metrics[3]['distill'] == metrics[4]['distill'] == 0
  plain = student.copy_and_resolve_references()
  plain.objective.distill.teacher = ''
  tokens = np.random.default_rng(0).integers(1, 256, size=(8, 129)).astype(np.int32)
  rows = np.ones((8, 128), np.int32)
  batch = {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:], 'segment_ids': rows,
           'positions': np.cumsum(rows, 1) - 1, 'weights': rows.astype(np.float32)}
  updated = []
  for config in (student, plain):
    trainer = train.Trainer(config, devices=jax.devices()[:1])
    for step in (1, 2):  # before `until` the teacher changes the update; from it on, not
      state = trainer.init_state().replace(step=step)  # the same parameters (seed) every time
      new_state, _ = trainer.step(state, trainer.place(batch), train.step_rng(0, step))
      updated.append(jax.device_get(new_state.params))
  distilled_1, distilled_2, plain_1, plain_2 = updated
  jax.tree.map(np.testing.assert_array_equal, distilled_2, plain_2)
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, distilled_1, plain_1)))


def test_the_coverage_loss_trains_and_logs_below_the_cross_entropy(data_dir, tmp_path):
  """objective.loss='coverage': -log(1 - (1 - p)^N) <= -log p, so per token the trained loss is
  below the cross-entropy `loss` still reports; both fall."""
  config = _config(data_dir, train__steps=10, train__log_every=5, objective__loss='coverage',
                   objective__coverage_n=4)
  train.train(config, str(tmp_path), devices=jax.devices()[:1])
  metrics = _metrics(str(tmp_path))
  assert all(metrics[s]['coverage'] <= metrics[s]['loss'] for s in (5, 10))
  assert metrics[10]['loss'] < metrics[5]['loss']


def test_hidden_state_matching_pulls_the_students_hidden_states_to_the_teachers(
    data_dir, teacher_dir, tmp_path):
  """objective.distill.hidden_weight with weight 0 (Lee et al. 2022's self-distillation): only the
  squared error of the final hidden states is added, and it falls; a student of another width is
  refused."""
  student = _config(data_dir, train__steps=10, train__log_every=5)
  student.objective.distill.update(teacher=teacher_dir, weight=0.0, hidden_weight=1.0)
  train.train(student, str(tmp_path / 'student'), devices=jax.devices()[:1])
  metrics = _metrics(str(tmp_path / 'student'))
  assert metrics[5]['distill_weight'] == 0  # the KL is logged (`distill`), not trained
  assert metrics[10]['distill_hidden'] < metrics[5]['distill_hidden']
  student.model.update(d_model=32, mlp_dim=64, head_dim=16)
  with pytest.raises(errors.UserError, match=r'has model\.d_model=64 but this run has 32'):
    train.train(student, str(tmp_path / 'narrow'), devices=jax.devices()[:1])


def test_logit_swap_changes_the_update_only_where_the_teacher_is_wrong(data_dir, teacher_dir):
  """objective.distill.swap (Mix-CPT): on targets the teacher ranks first the swap changes
  nothing, so the update is the unswapped one; on other targets it changes the update."""
  student = _config(data_dir, train__steps=4)
  student.objective.distill.update(teacher=teacher_dir, weight=0.5)
  swapped = student.copy_and_resolve_references()
  swapped.objective.distill.swap = True
  trainers = [train.Trainer(config, devices=jax.devices()[:1]) for config in (student, swapped)]
  tokens = np.random.default_rng(0).integers(1, 256, size=(8, 128)).astype(np.int32)
  rows = np.ones((8, 128), np.int32)
  batch = {'inputs': tokens, 'targets': np.roll(tokens, -1, axis=1), 'segment_ids': rows,
           'positions': np.cumsum(rows, 1) - 1, 'weights': rows.astype(np.float32)}
  first = trainers[0]
  with sharding.activate(first.mesh, first.rules):
    logits = first.teacher.apply({'params': first.teacher_params}, first.place(batch))
  right = {**batch, 'targets': np.asarray(jnp.argmax(logits, axis=-1), np.int32)}

  def update(trainer, batch):
    state, _ = trainer.step(trainer.init_state(), trainer.place(batch), train.step_rng(0, 0))
    return jax.device_get(state.params)

  jax.tree.map(np.testing.assert_array_equal, update(trainers[0], right),
               update(trainers[1], right))
  assert not all(jax.tree.leaves(jax.tree.map(np.array_equal, update(trainers[0], batch),
                                              update(trainers[1], batch))))
