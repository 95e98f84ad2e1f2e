"""python -m launch.build_data builds an experiment's stores with Beam; training refuses to build a
large one, before anything compiles."""

import json
import os
import subprocess
import sys

import pytest

from research import errors, train
from research.data import build, records
from research.data import store as store_lib
from tests.test_train import tiny_config

_EXPERIMENT = '''
from experiments import quickstart

def get_config():
  config = quickstart.get_config()
  config.data.tasks = {{'notes': {{'source': 'files', 'pattern': {pattern!r}, 'format': 'jsonl'}}}}
  config.data.mixture = {{'notes': 1.0}}
  return config
'''


def _experiment(tmp_path) -> str:
  source = tmp_path / 'notes'
  source.mkdir()
  for f in range(3):
    with open(source / f'part{f}.jsonl', 'w', encoding='utf-8') as out:
      for i in range(200):
        out.write(json.dumps({'text': f'note {f}.{i}: ' + 'abc ' * (i % 11)}) + '\n')
  path = tmp_path / 'notes_experiment.py'
  path.write_text(_EXPERIMENT.format(pattern=str(source / '*.jsonl')))
  return str(path)


def test_the_command_builds_every_store_of_the_experiment_with_two_workers(tmp_path):
  experiment, stores = _experiment(tmp_path), str(tmp_path / 'stores')
  command = [sys.executable, '-m', 'launch.build_data', f'--config={experiment}',
             f'--config.data.store_dir={stores}', '--num_workers=2']
  result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert [line.split(':')[0] for line in lines] == ['notes train', 'notes validation',
                                                    'notes train']
  # The train split packed into rows of the experiment's objective, beside its documents.
  rows_directory = lines[2].rsplit(' in ', 1)[1]
  with open(os.path.join(rows_directory, records.MANIFEST)) as f:
    rows_manifest = json.load(f)
  assert f"{rows_manifest['num_rows']} rows of 256 tokens, 1 shards" in lines[2]  # one part: 3 small files
  train_line = lines[0]
  documents = int(train_line.split(': ')[1].split(' documents')[0])
  validation = int(lines[1].split(': ')[1].split(' documents')[0])
  assert documents + validation == 600 and 0 < validation < 60  # the md5 5% holdout
  directory = train_line.rsplit(' in ', 1)[1]
  with open(os.path.join(directory, records.MANIFEST)) as f:
    manifest = json.load(f)
  assert manifest['num_documents'] == documents and manifest['vocabulary'] == 'byte'
  assert rows_manifest['num_tokens'] == manifest['num_tokens']  # every token in a row
  assert rows_directory.startswith(directory)
  # A rerun keeps every complete shard: tests/data/test_store.py (documents), test_rows.py (rows).


def test_training_refuses_a_large_unbuilt_store_before_it_compiles(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir)
  config.data.store_dir = str(tmp_path / 'stores')
  monkeypatch.setattr(store_lib, 'builds_on_first_use', lambda task: False)  # as for 1 TB
  monkeypatch.setattr(build, 'build', lambda *args: pytest.fail('training built a large store'))
  with pytest.raises(errors.UserError, match=r'are not built .* over 64 MiB, so training does not '
                     r'build them: run `python -m launch\.build_data --config='):
    train.train(config, str(tmp_path / 'run'))
  assert not os.path.exists(tmp_path / 'run')
