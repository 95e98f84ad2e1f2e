"""Faults a run survives or reports clearly: corrupted checkpoints, failing saves, torn metric
lines, a changed model config in a resumed workdir (research/checkpoint.py, research/metrics.py)."""

import errno
import fcntl
import json
import os
import sys

import jax
import ml_collections
import numpy as np
import pytest
from orbax.checkpoint._src.path import atomicity

from research import checkpoint, errors, metrics, train

from research.analysis import report
from tests.test_preemption import _command, run_command
from tests.test_train import read_metrics, tiny_config


def _steps(workdir):
  return sorted(int(p) for p in os.listdir(os.path.join(workdir, 'checkpoints')) if p.isdigit())


def _config(data_dir, steps):
  config = tiny_config(data_dir, data=1)
  config.train.steps = steps
  config.eval.every = 1000
  return config


def _run(config, workdir, **kwargs):
  return train.train(config, workdir, devices=jax.devices()[:1], **kwargs)


def _corrupt(step_dir):
  """Overwrites every file of the checkpoint's array data with garbage of half its size."""
  damaged = 0
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      if os.sep + 'd' + os.sep in path or name.endswith(('.zarray', 'manifest.ocdbt')):
        size = os.path.getsize(path)
        with open(path, 'wb') as f:
          f.write(b'\x13garbage' * max(size // 16, 1))
        damaged += 1
  assert damaged, os.listdir(step_dir)


def test_a_corrupted_newest_checkpoint_is_set_aside_and_the_previous_one_restores(
    data_dir, tmp_path, capfd):
  workdir = str(tmp_path / 'run')
  config = _config(data_dir, 9)
  _run(config, workdir, stop_after=6)
  assert _steps(workdir) == [3, 6]
  _corrupt(os.path.join(workdir, 'checkpoints', '6'))
  capfd.readouterr()
  state = _run(config, workdir)
  err = capfd.readouterr().err
  assert f'Checkpoint 6 in {os.path.join(workdir, "checkpoints")} failed to restore (' in err
  aside = os.path.join(workdir, 'failed_checkpoints', '6')
  assert f'It was moved to {aside} for inspection.' in err
  assert 'Restored checkpoint 3 instead (the newest one that restores).' in err
  assert int(state.step) == 9
  # The run saved step 6 again and went on; the bad one is kept aside, and keep/latest still work.
  assert _steps(workdir) == [3, 6, 9]
  assert os.listdir(os.path.join(workdir, 'failed_checkpoints')) == ['6']
  assert [m['step'] for m in read_metrics(workdir) if 'loss' in m] == [1, 2, 3, 4, 5, 6, 4, 5, 6,
                                                                       7, 8, 9]
  record = checkpoint.saved_record(checkpoint.make_manager(workdir, config.checkpoint), 9)
  assert record['config']['model']['d_model'] == 64
  assert set(record['code_version']) & {'git_commit', 'package_version'}


def test_when_every_checkpoint_fails_to_restore_the_error_names_the_directory(data_dir, tmp_path):
  workdir = str(tmp_path / 'run')
  config = _config(data_dir, 3)
  _run(config, workdir)
  _corrupt(os.path.join(workdir, 'checkpoints', '3'))
  with pytest.raises(errors.UserError, match=r'No checkpoint in .*checkpoints restores: 3 \('):
    _run(config, workdir)
  assert _steps(workdir) == [3]  # nothing moved or deleted


@pytest.mark.parametrize('async_save', [False, True])
def test_a_save_that_fails_with_an_io_error_stops_the_run_and_keeps_older_checkpoints(
    data_dir, tmp_path, monkeypatch, async_save):
  workdir = str(tmp_path / 'run')
  config = _config(data_dir, 9)
  config.checkpoint.async_save = async_save
  _run(config, workdir, stop_after=3)
  assert _steps(workdir) == [3]

  def disk_full(self, *args, **kwargs):  # the commit of a checkpoint: where a full disk shows
    raise OSError(errno.ENOSPC, 'No space left on device', str(self.get_final()))
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', disk_full)
  with pytest.raises(errors.UserError) as raised:  # async: surfaces at the next save, step 9
    _run(config, workdir)
  message = str(raised.value)
  directory = os.path.join(workdir, 'checkpoints')
  assert message.startswith(f'Saving checkpoint 6 in {directory} failed: '
                            'OSError: [Errno 28] No space left on device')
  assert ('Training stopped; the older checkpoints there are kept. Free space on that disk, make '
          'the workdir writable, or point --workdir elsewhere') in message
  monkeypatch.undo()
  assert _steps(workdir) == [3]
  state = _run(config, workdir, stop_after=1)  # the older checkpoint restores; the run goes on
  assert int(state.step) == 4


def test_a_save_error_that_is_not_io_is_not_disguised(data_dir, tmp_path, monkeypatch):
  workdir = str(tmp_path / 'run')
  config = _config(data_dir, 3)
  config.checkpoint.async_save = False

  def broken(self, *args, **kwargs):
    raise RuntimeError('a bug')
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', broken)
  with pytest.raises(RuntimeError, match='a bug'):
    _run(config, workdir)


def test_metrics_lines_are_one_write_each(tmp_path, monkeypatch):
  writes = []
  real_write = os.write

  def recording_write(fd, data):
    writes.append(bytes(data))
    return real_write(fd, data)
  writer = metrics.MetricsWriter(str(tmp_path))
  monkeypatch.setattr(os, 'write', recording_write)
  for step in range(1, 51):
    writer.write(step, {'loss': 1.0 / step, 'name': 'x' * step})
  monkeypatch.undo()
  writer.close()
  own = [w for w in writes if w.startswith(b'{"step"')]
  assert len(own) == 50 and all(w.endswith(b'\n') and w.count(b'\n') == 1 for w in own)
  assert [m['step'] for m in read_metrics(str(tmp_path))] == list(range(1, 51))
  # Reopening appends (a resumed run), and the file is opened with O_APPEND.
  writer = metrics.MetricsWriter(str(tmp_path))
  assert fcntl.fcntl(writer._metrics._fd, fcntl.F_GETFL) & os.O_APPEND
  writer.write(51, {'loss': 0.5})
  writer.close()
  assert read_metrics(str(tmp_path))[-1] == {'step': 51, 'loss': 0.5}


def test_the_report_skips_a_torn_final_line():
  lines = [json.dumps({'step': 1, 'loss': 2.0}), json.dumps({'step': 2, 'loss': 1.5}),
           '{"step": 3, "lo']
  merged, skipped = report.merge_metrics(lines)
  assert sorted(merged) == [1, 2] and skipped == (3,)


def test_config_difference_names_each_changed_model_key():
  saved = {'model': {'d_model': 64, 'num_layers': 2, 'moe': {'experts': 4}, 'dtype': 'bfloat16'},
           'train': {'steps': 6}}
  now = {'model': {'d_model': 128, 'num_layers': 2, 'moe': {'experts': 8}, 'window': [1, 2]},
         'train': {'steps': 9}}
  assert checkpoint.config_difference(saved, now) == [
      'model.d_model: 64 in the checkpoint, 128 now',
      'model.dtype: "bfloat16" in the checkpoint, "(missing)" now',
      'model.moe.experts: 4 in the checkpoint, 8 now',
      'model.window: "(missing)" in the checkpoint, [1, 2] now']
  assert checkpoint.config_difference(saved, saved) == []
  assert checkpoint.config_difference({'model': {'w': (1, 2)}}, {'model': {'w': [1, 2]}}) == []


def test_resuming_under_a_changed_model_config_names_the_difference(data_dir, tmp_path, capfd):
  workdir = str(tmp_path / 'run')
  config = _config(data_dir, 3)
  assert checkpoint.resume_config_difference(workdir, config) == []  # no workdir yet
  _run(config, workdir)
  assert checkpoint.resume_config_difference(workdir, config) == []
  changed = _config(data_dir, 6)
  changed.model.d_model = 128
  trainer = train.Trainer(changed, jax.devices()[:1])
  manager = checkpoint.make_manager(workdir, changed.checkpoint)
  with pytest.raises(errors.UserError) as raised:
    checkpoint.restore_latest(manager, trainer.abstract_state, changed)
  assert str(raised.value) == (
      f'The checkpoints in {workdir}/checkpoints do not restore under this model config: '
      f'model.d_model: 64 in the checkpoint, 128 now. Set model.* as in {workdir}/config.json to '
      'resume that run, or give a new --workdir for the new model.')
  assert _steps(workdir) == [3]
  # A change that keeps the parameters' shapes restores, with a note naming it.
  compatible = _config(data_dir, 6)
  compatible.model.dtype = 'bfloat16'
  trainer = train.Trainer(compatible, jax.devices()[:1])
  capfd.readouterr()
  state = checkpoint.restore_latest(manager, trainer.abstract_state, compatible)
  assert int(state.step) == 3
  assert (f'Note: resuming {workdir} under another model config than the one that saved it: '
          'model.dtype: "float32" in the checkpoint, "bfloat16" now.') in capfd.readouterr().err
  manager.close()


def test_a_failed_final_async_save_surfaces_when_waiting(tmp_path, monkeypatch):
  options = ml_collections.ConfigDict({'keep': 3, 'async_save': True})
  manager = checkpoint.make_manager(str(tmp_path), options)
  state = {'w': jax.numpy.asarray(np.arange(8.0))}
  checkpoint.save(manager, 1, state, 100, final=True)
  checkpoint.wait_until_finished(manager)

  def unwritable(self, *args, **kwargs):
    raise PermissionError(errno.EACCES, 'Permission denied', str(self.get_final()))
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', unwritable)
  checkpoint.save(manager, 2, state, 100, final=True)  # the write goes on in the background
  with pytest.raises(errors.UserError, match=r'Saving checkpoint 2 in .* failed: PermissionError: '
                                             r'\[Errno 13\] Permission denied'):
    checkpoint.wait_until_finished(manager)
  monkeypatch.undo()
  assert _steps(str(tmp_path)) == [1]


_DISK_FULL = """
import errno, runpy, sys
from orbax.checkpoint._src.path import atomicity
def disk_full(self, *args, **kwargs):
  raise OSError(errno.ENOSPC, 'No space left on device', str(self.get_final()))
atomicity.AtomicRenameTemporaryPath.finalize = disk_full
sys.argv = ['launch.train', *sys.argv[1:]]
runpy.run_module('launch.train', run_name='__main__')
"""


def test_the_command_line_stops_cleanly_on_a_full_disk_and_keeps_the_older_checkpoints(
    data_dir, tmp_path):
  """The full disk above, through `python -m launch.train` in a subprocess: the exit status and
  what the user reads. (The corrupt checkpoint's fall-back is read from subprocesses by
  tests/test_train.py's two-process test.)"""
  workdir = str(tmp_path / 'run')
  every = ['--config.checkpoint.every=3', '--config.checkpoint.async_save=False']
  first = run_command(_command(workdir, data_dir, 6) + every)
  assert first.returncode == 0, first.stderr[-3000:]
  full = run_command([sys.executable, '-c', _DISK_FULL, *_command(workdir, data_dir, 9)[3:],
                      *every])
  assert full.returncode == 2
  assert (f'Saving checkpoint 9 in {os.path.join(workdir, "checkpoints")} failed: OSError: '
          '[Errno 28] No space left on device') in full.stderr
  assert 'Training stopped; the older checkpoints there are kept.' in full.stderr
  assert 'Traceback' not in full.stderr
  assert _steps(workdir) == [3, 6]  # nothing lost
