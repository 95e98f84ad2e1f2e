"""Sweeps: points from the experiment file, the local runner, skipping, resuming, failures."""

import json
import os
import subprocess
import sys

import pytest

from experiments import base, quickstart
from launch import device_shares
from research import errors, sweep

EXPERIMENT = '''
from experiments import base
from research import sweep


def get_config():
  config = base.get_config()
  config.model.update(d_model=32, num_layers=1, num_heads=2, head_dim=16, mlp_dim=64)
  config.data.seq_len = 32
  config.train.update(batch_size=8, log_every=1)
  config.eval.update(every=1000, batches=1, batch_size=8)
  config.checkpoint.every = 1000
  return config


def get_sweep():
  return sweep.grid(**{'schedule.peak_lr': [1e-3], 'seed': [0, 1]}) + [{'model.dtype': 'float16'}]
'''


def test_grid_zipped_names_and_flags():
  assert sweep.grid(a=[1, 2], b=['x', 'y']) == [
      {'a': 1, 'b': 'x'}, {'a': 1, 'b': 'y'}, {'a': 2, 'b': 'x'}, {'a': 2, 'b': 'y'}]
  assert sweep.zipped(a=[1, 2], b=[3, 4]) == [{'a': 1, 'b': 3}, {'a': 2, 'b': 4}]
  with pytest.raises(errors.UserError, match='one length'):
    sweep.zipped(a=[1, 2], b=[3])
  assert sweep.point_name({'schedule.peak_lr': 0.001, 'data.vocabulary': 'spm:/a b'}) == (
      'schedule.peak_lr=0.001,data.vocabulary=spm__a_b')
  assert sweep.override_flags({'seed': 1, 'eval.objectives': ('causal_lm',)}) == [
      '--config.seed=1', "--config.eval.objectives=('causal_lm',)"]


def test_quickstart_sweep_is_two_learning_rates_by_two_seeds():
  points = sweep.points(quickstart.get_sweep(), quickstart.get_config())
  assert [p.name for p in points] == [f'schedule.peak_lr={lr},seed={seed}'
                                      for lr in (0.001, 0.003) for seed in (0, 1)]


def test_an_unknown_or_mistyped_key_fails_before_any_run():
  with pytest.raises(errors.UserError, match=r"get_sweep\(\)\[1\] overrides 'schedule.peak'"):
    sweep.points([{'seed': 1}, {'schedule.peak': 1e-3}], base.get_config())
  with pytest.raises(errors.UserError, match=r"get_sweep\(\)\[0\] sets 'seed' to 'one'"):
    sweep.points([{'seed': 'one'}], base.get_config())


def _sweep(tmp_path, data_dir, *flags):
  command = [sys.executable, '-m', 'launch.sweep', f'--config={tmp_path / "experiment.py"}',
             f'--workdir={tmp_path / "sweep"}', f'--config.data.store_dir={data_dir}', *flags]
  result = subprocess.run(command, capture_output=True, text=True, cwd=os.getcwd())
  return result.returncode, result.stdout


def test_local_sweep_runs_skips_resumes_and_reports_failures(tmp_path, data_dir):
  (tmp_path / 'experiment.py').write_text(EXPERIMENT)
  code, printed = _sweep(tmp_path, data_dir, '--dry_run')
  assert code == 0 and printed.count('-m launch.train') == 3
  assert '--config.data.store_dir=' in printed and '--config.seed=1' in printed

  code, printed = _sweep(tmp_path, data_dir, '--config.train.steps=2')
  assert code == 0
  lines = printed.strip().splitlines()[-3:]
  assert lines[0].split() == ['schedule.peak_lr=0.001,seed=0', 'done']
  assert lines[1].split() == ['schedule.peak_lr=0.001,seed=1', 'done']
  assert lines[2].split()[:4] == ['model.dtype=float16', 'failed', 'error:', "model.dtype='float16'"]

  # Longer training: the finished points are interrupted ones now and resume from step 2, side by
  # side when the machine's cores split in two.
  parallel = 2 if len(os.sched_getaffinity(0)) % 2 == 0 else 1
  code, printed = _sweep(tmp_path, data_dir, '--config.train.steps=4', f'--parallel={parallel}')
  assert code == 0 and printed.count('resuming') == 2
  for seed in (0, 1):
    point = tmp_path / 'sweep' / f'schedule.peak_lr=0.001,seed={seed}'
    with open(point / 'metrics.jsonl') as f:
      steps = [json.loads(line)['step'] for line in f]
    assert set(steps) == {1, 2, 3, 4} and steps[-1] == 4
    assert 'Resuming from the checkpoint at step 2' in (point / 'train.log').read_text()

  code, printed = _sweep(tmp_path, data_dir, '--config.train.steps=4')
  assert printed.count('done, skipped') == 2


def test_device_shares_split_the_machine_evenly():
  cpu = device_shares.shares('cpu', [0, 1, 2, 3], 2)
  assert [(s.env, sorted(s.cpus)) for s in cpu] == [({}, [0, 1]), ({}, [2, 3])]
  gpu = device_shares.shares('gpu', [0, 1, 2, 3, 4, 5, 6, 7], 4)
  assert [s.env['CUDA_VISIBLE_DEVICES'] for s in gpu] == ['0,1', '2,3', '4,5', '6,7']
  tpu = device_shares.shares('tpu', [0, 1, 2, 3], 4)
  assert [(s.env['TPU_VISIBLE_CHIPS'], s.env['TPU_PROCESS_PORT']) for s in tpu] == [
      ('0', '8476'), ('1', '8477'), ('2', '8478'), ('3', '8479')]
  assert {s.env['TPU_PROCESS_BOUNDS'] for s in tpu} == {'1,1,1'}
  assert device_shares.shares('tpu', [0, 1, 2, 3], 1) == [device_shares.Share({})]
  with pytest.raises(errors.UserError, match='--parallel=3 does not split'):
    device_shares.shares('cpu', [0, 1], 3)
  with pytest.raises(errors.UserError, match='one chip each: use --parallel=4'):
    device_shares.shares('tpu', [0, 1, 2, 3], 2)
  kind, devices = device_shares.detect()
  assert kind == 'cpu' and devices == sorted(os.sched_getaffinity(0))


def test_the_sweep_of_an_experiment_argument_comes_from_get_sweep_of_that_argument(tmp_path):
  from launch import sweep as sweep_command
  takes = tmp_path / 'takes.py'
  takes.write_text("def get_sweep(arg='a'):\n  return [{'seed': len(arg)}]\n")
  plain = tmp_path / 'plain.py'
  plain.write_text("def get_sweep():\n  return [{'seed': 7}]\n")
  assert sweep_command.experiment_sweep(f'{takes}:three') == [{'seed': 5}]
  assert sweep_command.experiment_sweep(str(takes)) == [{'seed': 1}]
  assert sweep_command.experiment_sweep(f'{plain}:three') == [{'seed': 7}]
