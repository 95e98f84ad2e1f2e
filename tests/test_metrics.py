"""TensorBoard hparams: a run's command-line config overrides, written once to DIR/tb."""

import glob
import os

import jax
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from experiments import base
from research import config as config_lib
from research import metrics, train
from tests.test_train import tiny_config


def _hparams_written(tb_dir):
  """{name: value} of every hparams session-start summary in the event files under `tb_dir`."""
  found = {}
  for path in glob.glob(os.path.join(tb_dir, '*tfevents*')):
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == hparams_metadata.PLUGIN_NAME:
          data = hparams_metadata.parse_session_start_info_plugin_data(
              value.metadata.plugin_data.content)
          for name, hparam in data.hparams.items():
            found[name] = getattr(hparam, hparam.WhichOneof('kind'))
  return found


def test_a_run_writes_its_hparams_to_tensorboard(data_dir, tmp_path):
  config = tiny_config(data_dir, data=1)
  config.train.steps, config.eval.every, config.checkpoint.every = 2, 2, 2
  train.train(config, str(tmp_path), devices=jax.devices()[:1],
              hparams={'schedule.peak_lr': 0.002, 'seed': 1})
  assert _hparams_written(os.path.join(str(tmp_path), 'tb')) == {'schedule.peak_lr': 0.002, 'seed': 1}


def test_hparams_of_other_types_are_written_as_text(tmp_path):
  writer = metrics.MetricsWriter(str(tmp_path), hparams={
      'train.profile_steps': (1, 3), 'eval.objectives': (), 'mesh.rules.kv': None,
      'model.qk_norm': True, 'model.dtype': 'bfloat16'})
  writer.close()
  assert _hparams_written(os.path.join(str(tmp_path), 'tb')) == {
      'train.profile_steps': '(1, 3)', 'eval.objectives': '()', 'mesh.rules.kv': 'None',
      'model.qk_norm': True, 'model.dtype': 'bfloat16'}


def test_no_hparams_no_hparams_summary(tmp_path):
  metrics.MetricsWriter(str(tmp_path)).close()
  assert _hparams_written(os.path.join(str(tmp_path), 'tb')) == {}


def test_command_line_overrides_are_the_overridden_keys_with_their_values():
  config = base.get_config()
  config.seed, config.schedule.peak_lr, config.checkpoint.async_save = 3, 1e-3, False
  argv = ['x', '--config=experiments/quickstart.py', '--config.seed=3', '--workdir=/w']
  assert config_lib.command_line_overrides(argv, config) == {'seed': 3}
  argv = ['x', '--config.schedule.peak_lr', '0.001', '--noconfig.checkpoint.async_save',
          '--config.data.mixture.stdlib_code=0.5', '--', '--config.train.steps=9']
  assert config_lib.command_line_overrides(argv, config) == {
      'schedule.peak_lr': 1e-3, 'checkpoint.async_save': False, 'data.mixture.stdlib_code': 0.5}
  assert config_lib.command_line_overrides(['x', '--config=experiments/quickstart.py'], config) == {}
