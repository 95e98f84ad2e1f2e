"""TensorBoard hparams (a run's command-line config overrides, written once to DIR/tb), and
metrics.jsonl appended in new part objects in a bucket: ram://, TensorFlow's in-memory file system,
stands in for gs:// (research/appendable.py)."""

import glob
import json
import os
import types

import jax
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import metadata as hparams_metadata

from experiments import base
from launch import report as report_command
from research import appendable, errors
from research.analysis import report
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


def _line(step: int, loss: float) -> str:
  return json.dumps({'step': step, 'loss': loss}) + '\n'


def _parts(path: str) -> dict[str, bytes]:
  """{name: contents} of the part objects of `path` in a bucket."""
  directory = path + '.parts'
  return {name: tf.io.gfile.GFile(f'{directory}/{name}', 'rb').read()
          for name in sorted(tf.io.gfile.listdir(directory))}


def test_a_bucket_appender_writes_each_flush_as_a_new_part_and_never_rewrites_one(
    tmp_path, monkeypatch):
  path = f'ram://{tmp_path}/metrics.jsonl'
  clock = [0.0]
  monkeypatch.setattr(appendable, 'time', types.SimpleNamespace(monotonic=lambda: clock[0]))
  opened = []  # (path, mode) of every file opened
  gfile = tf.io.gfile.GFile

  def recording_gfile(name, mode):
    opened.append((name, mode))
    return gfile(name, mode)

  monkeypatch.setattr(tf.io.gfile, 'GFile', recording_gfile)
  appender = appendable.Appender(path, flush_seconds=30)
  appender.write(_line(1, 4.0))
  clock[0] = 10.0
  appender.write(_line(2, 3.0))
  assert not appendable.exists(path)  # kept in memory until 30 seconds have passed
  clock[0] = 31.0
  appender.write(_line(3, 2.5))
  first = _parts(path)
  assert first == {'000000': (_line(1, 4.0) + _line(2, 3.0) + _line(3, 2.5)).encode()}
  clock[0] = 40.0
  appender.write(_line(4, 2.0))
  appender.flush()
  clock[0] = 100.0
  appender.flush()  # nothing kept: no part
  appender.write(_line(5, 1.5))
  appender.close()
  parts = _parts(path)
  assert list(parts) == ['000000', '000001', '000002']
  assert parts['000000'] == first['000000']
  assert parts['000001'] == _line(4, 2.0).encode() and parts['000002'] == _line(5, 1.5).encode()
  assert [(name, mode) for name, mode in opened if 'w' in mode] == [
      (f'{path}.parts/{name}', 'wb') for name in parts]  # each part written once, in order


def test_a_resumed_bucket_run_appends_parts_after_the_earlier_runs(tmp_path):
  workdir = f'ram://{tmp_path}/run'
  path = f'{workdir}/metrics.jsonl'
  writer = metrics.MetricsWriter(workdir)
  writer.write(1, {'loss': 4.0})
  writer.write(2, {'loss': 3.0})
  writer.close()
  first = _parts(path)
  assert first == {'000000': (_line(1, 4.0) + _line(2, 3.0)).encode()}
  writer = metrics.MetricsWriter(workdir)  # resumed from the step-1 checkpoint: logs 2 again
  writer.write(2, {'loss': 2.9})
  writer.write(3, {'loss': 2.5})
  writer.close()
  parts = _parts(path)
  assert list(parts) == ['000000', '000001'] and parts['000000'] == first['000000']
  assert appendable.exists(path) and not appendable.exists(f'{workdir}/other.jsonl')
  assert appendable.read_text(path) == (_line(1, 4.0) + _line(2, 3.0) + _line(2, 2.9) +
                                        _line(3, 2.5))


def test_a_local_appender_writes_each_line_at_once_to_the_file(tmp_path):
  path = str(tmp_path / 'metrics.jsonl')
  appender = appendable.Appender(path)
  appender.write(_line(1, 4.0))
  assert (tmp_path / 'metrics.jsonl').read_text() == _line(1, 4.0)
  appender.close()
  appender = appendable.Appender(path)
  appender.write(_line(2, 3.0))
  appender.close()
  assert appendable.read_text(path) == _line(1, 4.0) + _line(2, 3.0)
  assert not os.path.exists(path + '.parts')


def test_the_report_reads_a_bucket_runs_metrics_parts_brought_back_by_rsync(tmp_path):
  run = tmp_path / 'run'
  (run / 'metrics.jsonl.parts').mkdir(parents=True)
  (run / 'metrics.jsonl.parts' / '000000').write_text(_line(1, 4.0) + _line(2, 3.0))
  (run / 'metrics.jsonl.parts' / '000001').write_text(_line(2, 2.9) + _line(3, 2.5))
  assert report_command.run_directories(str(run)) == [str(run)]
  with pytest.raises(errors.UserError, match=f'Run directory {run} has no config.json'):
    report.load_run(str(run))
  (run / 'config.json').write_text('{"seed": 3}')
  loaded = report.load_run(str(run))
  assert loaded.config == {'seed': 3} and loaded.skipped_lines == ()
  assert loaded.metrics == {1: {'loss': 4.0}, 2: {'loss': 2.9}, 3: {'loss': 2.5}}
