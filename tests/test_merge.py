"""Checkpoint arithmetic (research/merge.py, launch.merge): averages, task vectors, the output's
layout and the errors, on tiny freshly initialised models."""

import json
import os
import re
import shutil

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from experiments import base
from launch import generate as generate_command
from launch import merge as merge_command
from research import checkpoint, errors, finished, merge
from tests import commands
from tests.test_generate import _saved_run


def _config(seed: int, mlp_dim: int = 64) -> ml_collections.ConfigDict:
  config = base.get_config()
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 1, mlp_dim
  config.model.num_heads, config.model.head_dim = 2, 16
  config.data.seq_len, config.seed = 32, seed
  return config


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
  """Checkpoints of three initialisations of one model ('a', 'b', 'c') and of a wider one."""
  made = {}
  for name, config in [('a', _config(0)), ('b', _config(1)), ('c', _config(2)),
                       ('wide', _config(0, mlp_dim=128))]:
    made[name] = tmp_path_factory.mktemp(name)
    _saved_run(made[name], config)
  return {name: str(path) for name, path in made.items()}


def _params(path):
  config = finished.checkpoint_config(path)
  return jax.tree.map(np.asarray, finished.load_checkpoint(path, config, jax.devices()[:1]).params)


def _merge(**flag_values):
  return commands.run_main(merge_command.main, **flag_values)


def test_weighted_sum_is_float32_arithmetic_cast_back_to_the_stored_dtype():
  a = {'w': np.array([1.0, 2.0], jnp.bfloat16), 's': np.float32(3.0)}
  b = {'w': np.array([3.0, -2.0], jnp.bfloat16), 's': np.float32(1.0)}
  summed = merge.weighted_sum(iter([a, b]), [0.25, 0.75])
  assert summed['w'].dtype == jnp.bfloat16 and summed['s'].dtype == np.float32
  np.testing.assert_array_equal(summed['w'].astype(np.float32), [2.5, -1.0])
  assert summed['s'] == 1.5
  assert a['w'][0] == 1.0  # the inputs are left as they were


def test_averaging_identical_checkpoints_is_the_identity(runs, tmp_path):
  out = str(tmp_path / 'soup')
  printed = _merge(checkpoint=[runs['a'], runs['a']], out=out)
  assert printed.startswith(f'Wrote {out}: +0.5 * {runs["a"]} +0.5 * {runs["a"]}')
  for got, want in zip(jax.tree.leaves(_params(out)), jax.tree.leaves(_params(runs['a']))):
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))  # bit for bit
  record = json.loads((tmp_path / 'soup' / 'config.json').read_text())['merge']
  assert record == {'checkpoints': [runs['a']] * 2, 'steps': [0, 0], 'weights': [0.5, 0.5]}
  assert os.listdir(tmp_path) == ['soup']  # no staging directory left


def test_average_of_two_checkpoints_is_their_mean_leaf_by_leaf(runs, tmp_path):
  out = str(tmp_path / 'soup')
  _merge(checkpoint=[runs['a'], runs['b']], out=out)
  a, b = jax.tree.leaves(_params(runs['a'])), jax.tree.leaves(_params(runs['b']))
  for got, x, y in zip(jax.tree.leaves(_params(out)), a, b):
    np.testing.assert_allclose(got, (x + y) / 2, rtol=1e-6, atol=1e-7)
  assert any(not np.array_equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize('form', ['weights', 'task_vector'])
def test_base_plus_the_task_vector_reproduces_the_fine_tuned_model(runs, tmp_path, form):
  out = str(tmp_path / 'edited')
  if form == 'weights':
    _merge(checkpoint=[runs['a'], runs['b'], runs['a']], weights=['1', '1', '-1'], out=out)
  else:
    _merge(task_vector=[runs['b'], runs['a']], scale=1.0, onto=runs['a'], out=out)
  for got, want in zip(jax.tree.leaves(_params(out)), jax.tree.leaves(_params(runs['b']))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_task_vector_onto_another_model_adds_the_scaled_difference(runs, tmp_path):
  out = str(tmp_path / 'edited')
  _merge(task_vector=[runs['b'], runs['a']], scale=0.5, onto=runs['c'], out=out)
  a, b, c = (jax.tree.leaves(_params(runs[name])) for name in 'abc')
  for got, x, y, z in zip(jax.tree.leaves(_params(out)), a, b, c):
    np.testing.assert_allclose(got, z + 0.5 * (y - x), rtol=1e-5, atol=1e-6)


def test_the_merged_checkpoint_generates(runs, tmp_path):
  out = str(tmp_path / 'soup')
  _merge(checkpoint=[runs['a'], runs['b'], runs['c']], out=out)
  printed = commands.run_main(generate_command.main, checkpoint=[out], prompt=['def f(x):'],
                              max_new_tokens=3)
  assert printed.startswith(f'{out} (step 0, decoder), greedy:')
  assert '--- continuation (3 tokens' in printed


def test_a_model_config_that_differs_without_changing_shapes_is_noted(runs, tmp_path):
  other = tmp_path / 'other'
  shutil.copytree(runs['b'], other)
  config = json.loads((other / 'config.json').read_text())
  config['model']['dtype'] = 'bfloat16'
  (other / 'config.json').write_text(json.dumps(config))
  printed = _merge(checkpoint=[runs['a'], str(other)], out=str(tmp_path / 'soup'))
  assert (f'note: --checkpoint={other} differs from --checkpoint={runs["a"]} in model.dtype: '
          f'"bfloat16" there, "float32" in {runs["a"]}\n') in printed


def test_mismatched_shapes_name_the_parameter_and_write_nothing(runs, tmp_path):
  out = tmp_path / 'soup'
  with pytest.raises(errors.UserError, match=re.escape(
      f"--checkpoint={runs['wide']}: parameter layers/mlp/down has shape (1, 128, 32) there but "
      f"shape (1, 64, 32) in --checkpoint={runs['a']}; merge checkpoints of one model config")):
    merge.merge([runs['a'], runs['wide']], [0.5, 0.5], str(out))
  assert not os.listdir(tmp_path)


def test_an_existing_out_is_refused_and_left_as_it_was(runs, tmp_path):
  (tmp_path / 'old.txt').write_text('keep')
  with pytest.raises(SystemExit, match='exists and is not empty'):
    _merge(checkpoint=[runs['a'], runs['b']], out=str(tmp_path))
  assert os.listdir(tmp_path) == ['old.txt']


def test_a_failed_write_leaves_nothing(runs, tmp_path, monkeypatch):
  def full_disk(directory, params):
    os.makedirs(os.path.join(directory, 'checkpoints', '0'))
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(checkpoint, 'save_params', full_disk)
  with pytest.raises(errors.UserError, match='No space left on device'):
    merge.merge([runs['a'], runs['b']], [0.5, 0.5], str(tmp_path / 'soup'))
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize('flag_values, message', [
    ({'weights': ['1', '2', '3']}, 'give one finite number per --checkpoint'),
    ({'weights': ['1', 'x']}, 'give one finite number per --checkpoint'),
    ({'task_vector': ['B']}, 'replaces --checkpoint'),
])
def test_bad_flags_are_one_line_errors(runs, tmp_path, flag_values, message):
  with pytest.raises(SystemExit, match=message):
    _merge(checkpoint=[runs['a'], runs['b']], out=str(tmp_path / 'soup'), **flag_values)
  assert not os.listdir(tmp_path)
