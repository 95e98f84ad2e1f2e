"""Continual pretraining: a run that starts from another run's (or an imported) checkpoint."""

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from research import errors, train
from tests.test_train import read_metrics, tiny_config


def _config(data_dir, **init):
  config = tiny_config(data_dir, data=1)
  config.eval.every = config.checkpoint.every = 1000
  config.init.update(init)
  return config


def _devices():
  return jax.devices()[:1]


@pytest.fixture(scope='module')
def pretrained(data_dir, tmp_path_factory):
  """A 6-step run stopped after step 4 (its checkpoint), and the same run uninterrupted."""
  stopped = str(tmp_path_factory.mktemp('stopped'))
  train.train(_config(data_dir), stopped, stop_after=4, devices=_devices())
  whole = str(tmp_path_factory.mktemp('whole'))
  state = train.train(_config(data_dir), whole, devices=_devices())
  return stopped, whole, state


def _first_state(config):
  trainer = train.Trainer(config, _devices())
  return train.state_from_checkpoint(trainer, config.init, config.train.steps), trainer


def test_parameters_only_gives_a_fresh_optimizer_and_a_restarted_schedule(pretrained, data_dir):
  stopped, _, _ = pretrained
  state, trainer = _first_state(_config(data_dir, path=stopped))
  saved = train.checkpoint.restore_latest(train.checkpoint.make_manager(
      stopped, trainer.config.checkpoint), trainer.abstract_state)
  assert int(saved.step) == 4
  jax.tree.map(np.testing.assert_array_equal, state.params, saved.params)
  assert int(state.step) == 0 and int(train.schedule_position(state.opt_state)) == 0
  moments = [np.abs(x).max() for x in jax.tree.leaves(state.opt_state)]
  assert max(moments) == 0  # Adam's moments and counts start over
  assert max(np.abs(x).max() for x in jax.tree.leaves(saved.opt_state)) > 0


def test_parameters_and_optimizer_continue_exactly(pretrained, data_dir, tmp_path):
  stopped, whole, whole_state = pretrained
  config = _config(data_dir, path=stopped, optimizer=True, step='keep', schedule='continue')
  state = train.train(config, str(tmp_path), devices=_devices())
  continued = [m for m in read_metrics(str(tmp_path)) if 'loss' in m]
  uninterrupted = [m for m in read_metrics(whole) if 'loss' in m][4:]
  assert [m['step'] for m in continued] == [5, 6]
  for key in ('loss', 'learning_rate', 'grad_norm'):
    np.testing.assert_allclose([m[key] for m in continued], [m[key] for m in uninterrupted],
                               rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), state.params,
               whole_state.params)


def test_a_restarted_schedule_with_the_optimizer_warms_up_again(pretrained, data_dir, tmp_path):
  stopped, whole, _ = pretrained
  config = _config(data_dir, path=stopped, optimizer=True)  # step reset, schedule restart
  config.train.steps = 2
  config.data.mixture = ml_collections.ConfigDict({'stdlib_code': 1.0})
  config.eval.tasks = ('stdlib_prose',)  # the old domain, evaluated though not trained on
  train.train(config, str(tmp_path), devices=_devices())
  lines = [m for m in read_metrics(str(tmp_path)) if 'loss' in m]
  first_run = [m for m in read_metrics(whole) if 'loss' in m]
  assert [m['step'] for m in lines] == [1, 2]
  # Warmup over 2 steps to 3e-3: step 0 uses half the peak, as the first run's step 0 did.
  assert lines[0]['learning_rate'] == pytest.approx(first_run[0]['learning_rate']) == 1.5e-3
  assert lines[0]['loss'] < first_run[0]['loss'] - 0.5  # it starts from the trained parameters
  # Evaluated before its first step (where forgetting and adaptation are measured from) and at
  # the end.
  evals = [m for m in read_metrics(str(tmp_path)) if 'eval/stdlib_code/loss' in m]
  assert [m['step'] for m in evals] == [0, 2]
  assert all('eval/stdlib_prose/loss' in m for m in evals)


def test_an_imported_parameters_only_checkpoint_starts_a_run(data_dir, tmp_path):
  trainer = train.Trainer(_config(data_dir), _devices())
  params = trainer.init_state().params
  manager = ocp.CheckpointManager(tmp_path / 'imported' / 'checkpoints',
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.StandardSave({'params': params}))
  manager.wait_until_finished()
  config = _config(data_dir, path=str(tmp_path / 'imported'))
  state, _ = _first_state(config)
  jax.tree.map(np.testing.assert_array_equal, state.params, params)
  with pytest.raises(errors.UserError, match=r'holds parameters only .* set init.optimizer=False'):
    _first_state(_config(data_dir, path=str(tmp_path / 'imported'), optimizer=True))


def test_bad_init_paths_and_shapes_are_named(pretrained, data_dir, tmp_path):
  stopped, _, _ = pretrained
  with pytest.raises(errors.UserError, match=f'init.path={tmp_path} holds no checkpoint'):
    _first_state(_config(data_dir, path=str(tmp_path)))
  wider = _config(data_dir, path=stopped)
  wider.model.mlp_dim = 256
  with pytest.raises(errors.UserError, match=r'init.path=.* \(checkpoint 4\): layers/mlp/down has '
                     r'shape \(2, 128, 64\) in the checkpoint but shape \(2, 256, 64\) in the '
                     r'model; set model.\* as in the checkpoint'):
    _first_state(wider)
  with pytest.raises(errors.UserError, match=r"train.steps=4 is not past step 4, where "
                     r"init.step='keep' goes on from"):
    config = _config(data_dir, path=stopped, step='keep')
    config.train.steps = 4
    _first_state(config)
