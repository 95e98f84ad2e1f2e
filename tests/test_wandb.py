"""Weights & Biases logging (research/wandb_log.py), offline: the metrics of metrics.jsonl at the
same steps, the run's config, one W&B run continued across a resume, and the one-line errors."""

import glob
import json
import os
import struct
import sys

import jax
import pytest

from research import config as config_lib
from research import errors, metrics, train, wandb_log
from research.analysis import report
from tests.test_train import read_metrics, tiny_config

wandb = pytest.importorskip('wandb')
from wandb.proto import wandb_internal_pb2  # noqa: E402  (after the skip)


def _records(path: str):
  """The records of a W&B transaction log (run-ID.wandb): LevelDB's log format behind a 7-byte
  header, 32 KiB blocks of chunks (4-byte checksum, 2-byte length, 1-byte type: 1 = a whole
  record, 2/3/4 = its first/middle/last piece), each record a wandb_internal_pb2.Record."""
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:4] == b':W&B'
  block, position, pieces = 32768, 7, b''
  while position + 7 <= len(data):
    if block - position % block < 7:  # a block's tail too short for a chunk header is padding
      position += block - position % block
      continue
    _, length, kind = struct.unpack('<IHB', data[position:position + 7])
    pieces += data[position + 7:position + 7 + length]
    position += 7 + length
    if kind in (1, 4):
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pieces)
      pieces = b''
      yield record


def _offline_run(run_dir: str) -> dict:
  """The run id, config and history rows W&B wrote to the offline run directory `run_dir`."""
  [path] = glob.glob(os.path.join(run_dir, 'run-*.wandb'))
  run = {'history': []}
  for record in _records(path):
    kind = record.WhichOneof('record_type')
    if kind == 'run':
      run['id'] = record.run.run_id
      run['config'] = {item.key: json.loads(item.value_json) for item in record.run.config.update}
    elif kind == 'history':
      row = {item.key or '/'.join(item.nested_key): json.loads(item.value_json)
             for item in record.history.item}
      run['history'].append({k: v for k, v in row.items() if not k.startswith('_')})  # W&B's own
  return run


@pytest.fixture
def offline(tmp_path, monkeypatch):
  """W&B offline and silent, its settings and caches inside tmp_path; its service stopped after."""
  for name, value in (('WANDB_MODE', 'offline'), ('WANDB_SILENT', 'true'),
                      ('WANDB_CONFIG_DIR', 'config'), ('WANDB_CACHE_DIR', 'cache'),
                      ('WANDB_DATA_DIR', 'data')):
    monkeypatch.setenv(name, value if name in ('WANDB_MODE', 'WANDB_SILENT')
                       else str(tmp_path / value))
  monkeypatch.delenv('WANDB_DIR', raising=False)  # W&B's files go under the workdir
  yield
  wandb.teardown()


def _wandb_config(data_dir):
  config = tiny_config(data_dir, data=1)
  config.train.steps, config.eval.every, config.checkpoint.every = 4, 2, 2
  config.logging.wandb.project, config.logging.wandb.tags = 'tiny', ('test',)
  return config


def test_a_resumed_run_logs_the_metrics_jsonl_steps_to_the_same_wandb_run(
    data_dir, tmp_path, offline):
  workdir = str(tmp_path / 'run')
  config = _wandb_config(data_dir)
  train.train(config, workdir, stop_after=2, devices=jax.devices()[:1])
  train.train(config, workdir, devices=jax.devices()[:1])  # resumes at step 2
  run_dirs = sorted(glob.glob(os.path.join(workdir, 'wandb', 'offline-run-*')))
  runs = [_offline_run(run_dir) for run_dir in run_dirs]
  assert len(runs) == 2
  with open(os.path.join(workdir, 'wandb_id'), encoding='utf-8') as f:
    run_id = f.read()
  assert [run['id'] for run in runs] == [run_id, run_id]
  assert runs[0]['config']['train']['steps'] == 4
  assert runs[0]['config']['logging']['wandb']['tags'] == ['test']
  lines = read_metrics(workdir)
  logged = [{k: v for k, v in line.items() if isinstance(v, (int, float))} for line in lines]
  assert [row['step'] for row in runs[0]['history']] == [1, 2, 2]  # two steps, an evaluation
  assert [row['step'] for row in runs[1]['history']] == [3, 4, 4]
  assert runs[0]['history'] + runs[1]['history'] == logged  # every value, at its step
  assert 'eval/stdlib_prose/loss' in runs[1]['history'][-1]


def test_online_without_an_api_key_is_one_line_saying_how_to_log_in(data_dir, tmp_path, offline,
                                                                   monkeypatch):
  monkeypatch.setenv('WANDB_MODE', 'online')
  monkeypatch.setenv('HOME', str(tmp_path))  # no ~/.netrc holding a key
  monkeypatch.delenv('WANDB_API_KEY', raising=False)
  with pytest.raises(errors.UserError, match=r"^logging\.wandb\.project='tiny': W&B could not "
                     r'start the run \(.*\)\. Log in with `wandb login` \(or set WANDB_API_KEY\), '
                     r'or log offline with --config\.logging\.wandb\.mode=offline'):
    metrics.MetricsWriter(str(tmp_path / 'run'), config=_wandb_config(data_dir))


def test_only_an_enabled_writer_opens_a_wandb_run(data_dir, tmp_path, offline):
  workdir = str(tmp_path / 'other_process')
  metrics.MetricsWriter(workdir, enabled=False, config=_wandb_config(data_dir)).close()
  assert not os.path.exists(workdir)


def test_no_project_opens_no_wandb_run(data_dir, tmp_path):
  config = _wandb_config(data_dir)
  config.logging.wandb.project = ''
  writer = metrics.MetricsWriter(str(tmp_path), config=config)
  writer.write(1, {'loss': 2.0})
  writer.close()
  assert sorted(os.listdir(tmp_path)) == ['metrics.jsonl', 'tb']


def test_a_project_without_wandb_installed_says_pip_install_wandb(data_dir, monkeypatch):
  monkeypatch.setitem(sys.modules, 'wandb', None)  # `import wandb` raises ImportError
  config = _wandb_config(data_dir)
  with pytest.raises(errors.UserError, match=r"^logging\.wandb\.project is set but the wandb "
                     r"package is not installed; pip install wandb \(or set "
                     r"logging\.wandb\.project=''\)\.$"):
    config_lib.validate(config, '/tmp/unused', jax.devices()[:1])


def test_a_bad_mode_names_the_key_and_the_modes(data_dir):
  config = _wandb_config(data_dir)
  config.logging.wandb.mode = 'ofline'
  with pytest.raises(errors.UserError, match=r"^logging\.wandb\.mode='ofline' is not a W&B mode; "
                     r"use one of \['', 'online', 'offline', 'disabled'\]"):
    wandb_log.check_config(config.logging.wandb)


def test_wandb_names_are_not_swept_values_of_a_report():
  configs = [{'seed': seed, 'logging': {'wandb': {'project': 'p', 'name': f'seed{seed}'}}}
             for seed in (0, 1)]
  runs = [report.Run(f'r{k}', f'r{k}', config, {}) for k, config in enumerate(configs)]
  assert report.swept_values(runs) == {'r0': {'seed': 0}, 'r1': {'seed': 1}}
