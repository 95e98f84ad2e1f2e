"""Sweeps: points from the experiment file, the local runner, skipping, resuming, failures."""

import json
import os
import re
import subprocess
import sys

import pytest

from experiments import base, quickstart
from launch import device_shares
from research import errors
from research.analysis import sweep
from tests import commands

EXPERIMENT = '''
from experiments import base
from research.analysis import sweep


def get_config():
  config = base.get_config()
  config.model.update(d_model=32, num_layers=1, num_heads=2, head_dim=16, mlp_dim=64)
  config.data.seq_len = 64  # the rows most runs of the suite pack the session's data stores into
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
  """Runs launch.sweep, its points on one CPU device each (commands.device_env)."""
  command = [sys.executable, '-m', 'launch.sweep', f'--config={tmp_path / "experiment.py"}',
             f'--workdir={tmp_path / "sweep"}', f'--config.data.store_dir={data_dir}', *flags]
  result = subprocess.run(command, capture_output=True, text=True, cwd=os.getcwd(),
                          env=commands.device_env(1))
  return result.returncode, result.stdout


def test_local_sweep_runs_skips_resumes_and_reports_failures(tmp_path, data_dir):
  (tmp_path / 'experiment.py').write_text(EXPERIMENT)
  code, printed = _sweep(tmp_path, data_dir, '--dry_run')
  assert code == 0 and printed.count('-m launch.train') == 3
  assert '--config.data.store_dir=' in printed and '--config.seed=1' in printed

  # Seed 1 has reached its 2 steps already (a checkpoint's directory is what tells): it is skipped.
  # Seed 0 trains beside the failing point when the machine's cores split in two.
  (tmp_path / 'sweep' / 'schedule.peak_lr=0.001,seed=1' / 'checkpoints' / '2').mkdir(parents=True)
  parallel = 2 if len(os.sched_getaffinity(0)) % 2 == 0 else 1
  code, printed = _sweep(tmp_path, data_dir, '--config.train.steps=2', f'--parallel={parallel}')
  assert code == 0
  assert 'schedule.peak_lr=0.001,seed=1: done, skipped.' in printed
  assert printed.count('running ...') == 2
  states, losses = printed.split('\n\nFinal losses')
  lines = states.strip().splitlines()[-3:]
  assert lines[0].split() == ['schedule.peak_lr=0.001,seed=0', 'done']
  assert lines[1].split() == ['schedule.peak_lr=0.001,seed=1', 'done']
  assert lines[2].split()[:4] == ['model.dtype=float16', 'failed', 'error:', "model.dtype='float16'"]
  # The points that logged metrics, by final loss: seed 0 at its last step.
  rows = [line.strip('|').split('|') for line in losses.strip().splitlines()[3:]]
  assert [(row[0].strip(), row[1].strip()) for row in rows] == [
      ('schedule.peak_lr=0.001,seed=0', '2')]

  # Longer training: the finished point is an interrupted one now and resumes from step 2.
  code, printed = _sweep(tmp_path, data_dir, '--config.train.steps=4', '--only=seed=0')
  assert code == 0 and printed.count('resuming') == 1
  point = tmp_path / 'sweep' / 'schedule.peak_lr=0.001,seed=0'
  with open(point / 'metrics.jsonl') as f:
    steps = [json.loads(line)['step'] for line in f]
  assert set(steps) == {1, 2, 3, 4} and steps[-1] == 4
  assert 'Resuming from the checkpoint at step 2' in (point / 'train.log').read_text()


def _points(sweep_list) -> list[sweep.Point]:
  return sweep.points(sweep_list, base.get_config())


def test_only_selects_the_points_whose_values_match_every_filter():
  points = _points(sweep.grid(**{'schedule.peak_lr': [0.001, 0.003], 'seed': [0, 1]})
                   + [{'model.dtype': 'bfloat16', 'data.vocabulary': 'spm:/a b'}])
  assert sweep.select(points, []) == points
  assert [p.name for p in sweep.select(points, ['seed=0'])] == [
      'schedule.peak_lr=0.001,seed=0', 'schedule.peak_lr=0.003,seed=0']
  assert [p.name for p in sweep.select(points, ['seed=0', 'schedule.peak_lr=0.003'])] == [
      'schedule.peak_lr=0.003,seed=0']
  assert sweep.select(points, ['data.vocabulary=spm__a_b']) == points[-1:]  # as the name has it
  with pytest.raises(errors.UserError, match=r'^--only=seed is not KEY=VALUE'):
    sweep.select(points, ['seed'])
  with pytest.raises(errors.UserError, match=re.escape(
      "--only=lr=1: no point sweeps 'lr'; the swept keys are ['schedule.peak_lr', 'seed', "
      "'model.dtype', 'data.vocabulary'].")):
    sweep.select(points, ['lr=1'])
  with pytest.raises(errors.UserError, match=re.escape(
      "--only=seed=2 matches no point: seed takes the values ['0', '1'].")):
    sweep.select(points, ['seed=0', 'seed=2'])
  with pytest.raises(errors.UserError, match=re.escape(
      '--only=seed=0 --only=model.dtype=bfloat16 together match no point; the points are [')):
    sweep.select(points, ['seed=0', 'model.dtype=bfloat16'])


def test_list_prints_the_points_and_their_state_and_runs_nothing(tmp_path):
  (tmp_path / 'experiment.py').write_text(EXPERIMENT)
  done, failed = (tmp_path / 'sweep' / f'schedule.peak_lr=0.001,seed={seed}' for seed in (0, 1))
  (done / 'checkpoints' / '2').mkdir(parents=True)
  failed.mkdir()
  (failed / sweep.STATUS_FILE).write_text('{"exit_code": 2}')
  (failed / sweep.LOG_FILE).write_text('error: something bad\n')
  code, printed = _sweep(tmp_path, tmp_path / 'data', '--list', '--config.train.steps=2')
  assert code == 0
  assert [line.split() for line in printed.splitlines()] == [
      ['schedule.peak_lr=0.001,seed=0', 'done'],
      ['schedule.peak_lr=0.001,seed=1', 'failed', 'error:', 'something', 'bad'],
      ['model.dtype=float16', 'pending']]
  assert sorted(os.listdir(tmp_path / 'sweep')) == [done.name, failed.name]  # nothing ran
  assert sorted(os.listdir(failed)) == sorted([sweep.STATUS_FILE, sweep.LOG_FILE])


def _fake_run(directory, lines: list[dict]) -> None:
  """A point's run directory as launch.train leaves it: config.json and metrics.jsonl."""
  directory.mkdir(parents=True)
  (directory / 'config.json').write_text(json.dumps({'seed': 0}))
  (directory / 'metrics.jsonl').write_text(''.join(json.dumps(line) + '\n' for line in lines))


def test_the_final_table_sorts_points_by_final_eval_loss_over_the_training_tasks(tmp_path):
  from launch import sweep as sweep_command
  points = _points(sweep.grid(seed=[0, 1, 2, 3, 4]))
  workdir = tmp_path / 'sweep'

  def evals(step, a, b):
    return {'step': step, 'eval/a/loss': a, 'eval/b/loss': b}

  # seed=0's earlier evaluation and its task `a` in another format (a/R3_15) have low losses: only
  # the final values of the tasks themselves count, (2.5 + 3.5) / 2 = 3.
  _fake_run(workdir / 'seed=0', [evals(10, 1.0, 1.0), {'step': 20, 'loss': 2.8},
                                 {**evals(20, 2.5, 3.5), 'eval/a/R3_15/loss': 0.5}])
  _fake_run(workdir / 'seed=1', [{'step': 20, 'loss': 3.1}, evals(20, 2.0, 3.0)])
  _fake_run(workdir / 'seed=2', [{'step': 10, 'loss': 2.0}])  # no evaluation yet: last
  _fake_run(workdir / 'seed=4', [{'step': 20, 'loss': 3.0}, evals(20, 2.5, 2.5)])  # ties seed=1
  assert sweep_command.metrics_table(str(workdir), points).splitlines() == [
      '| run | step | loss | eval loss |',
      '| --- | ---: | ---: | ---: |',
      '| seed=4 | 20 | 3 | 2.5 |',
      '| seed=1 | 20 | 3.1 | 2.5 |',
      '| seed=0 | 20 | 2.8 | 3 |',
      '| seed=2 | 10 | 2 | - |']
  assert sweep_command.metrics_table(str(workdir), points[3:4]) == ''  # seed=3 never started


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
