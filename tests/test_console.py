"""What a run prints: one line for a user error (no start-up or teardown noise), the run's
console kept in WORKDIR/train.log, a lost console that never stops a run, and the compact
evaluation line."""

import io
import os
import signal
import subprocess
import sys
import time

import pytest

from launch import startup
from research import console, metrics
from tests import commands

TINY = ['--config.model.d_model=64', '--config.model.num_layers=1', '--config.model.mlp_dim=128',
        '--config.model.num_heads=2', '--config.model.head_dim=32', '--config.data.seq_len=64',
        '--config.train.batch_size=8', '--config.eval.batch_size=8', '--config.eval.batches=1',
        '--config.checkpoint.every=2', '--config.eval.every=2']


def _train(workdir, data_dir, *overrides):
  return subprocess.run(
      [sys.executable, '-m', 'launch.train', '--config=experiments/quickstart.py',
       f'--workdir={workdir}', f'--config.data.store_dir={data_dir}', *TINY, *overrides],
      capture_output=True, text=True, check=False, timeout=300, env=commands.device_env(1))


def test_a_resume_under_another_model_or_length_says_so_in_one_line(data_dir, tmp_path):
  """The changed model.* key is the whole of stderr: no TensorFlow or CUDA start-up notices and no
  orbax "Event loop is closed" tracebacks at teardown; a changed train.steps is one notice."""
  workdir = tmp_path / 'run'
  first = _train(workdir, data_dir, '--config.train.steps=2')
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'oneDNN' not in first.stderr and 'cuInit' not in first.stderr, first.stderr[:2000]
  changed = _train(workdir, data_dir, '--config.train.steps=4', '--config.model.d_model=128')
  assert changed.returncode == 2
  assert changed.stderr.strip().splitlines() == [
      f'error: The checkpoints in {workdir}/checkpoints do not restore under this model config: '
      f'model.d_model: 64 in the checkpoint, 128 now. Set model.* as in {workdir}/config.json to '
      'resume that run, or give a new --workdir for the new model.']
  longer = _train(workdir, data_dir, '--config.train.steps=4')
  assert longer.returncode == 0, longer.stderr[-3000:]
  assert ('train.steps is 4 now and was 2 in the run being resumed: the learning-rate schedule now '
          'ends at step 4, not 2.') in longer.stderr.splitlines()
  kept = (workdir / console.LOG_FILE).read_text()  # both runs' consoles, one after the other
  assert kept.count('eval at step 2: ') == 1 and kept.count('eval at step 4: ') == 1
  assert 'train.steps is 4 now' in kept


def test_a_closed_console_pipe_still_lets_ctrl_c_save_its_stop_checkpoint(data_dir, tmp_path):
  """`python -m launch.train ... 2>&1 | tee log` and Ctrl-C: tee dies first, so every later write
  hits a closed pipe (EPIPE); the run goes on into its stop checkpoint, and train.log has it all."""
  workdir = tmp_path / 'run'
  run = subprocess.Popen(
      [sys.executable, '-m', 'launch.train', '--config=experiments/quickstart.py',
       f'--workdir={workdir}', f'--config.data.store_dir={data_dir}', *TINY,
       '--config.train.steps=10000', '--config.train.log_every=1', '--config.eval.every=10000',
       '--config.checkpoint.every=10000'],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=commands.device_env(1))
  try:
    for line in run.stdout:  # until the run has logged a step
      if line.startswith('step '):
        break
    run.stdout.close()  # the reader dies: the next write gets EPIPE
    time.sleep(1)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=120) == 0
  finally:
    run.kill()
  kept = (workdir / console.LOG_FILE).read_text()
  stopped = int(kept.split('Stopped by a signal after step ')[1].split(';')[0])
  assert os.listdir(workdir / 'checkpoints') == [str(stopped)]
  assert f'step {stopped}/10000 ' in kept and 'A signal asked the run to stop' in kept


class _ClosedPipe(io.StringIO):

  def write(self, text):
    raise BrokenPipeError(32, 'Broken pipe')


def test_a_tee_keeps_whole_lines_in_the_log_after_the_console_fails(tmp_path):
  path = str(tmp_path / console.LOG_FILE)
  log = console.appendable.Appender(path)
  tee = console.Tee(_ClosedPipe(), log)
  assert tee.write('step 1/9 [bar]\r\033[Kstep 2/9') == len('step 1/9 [bar]\r\033[Kstep 2/9')
  tee.write(' loss=3\neval at step 2: loss=1')
  assert tee.lost and not tee.isatty()
  tee.close_log()
  log.close()
  with open(path, encoding='utf-8') as f:  # the progress bar's last drawing, the cut line ended
    assert f.read() == 'step 2/9 loss=3\neval at step 2: loss=1\n'


def test_the_console_is_not_written_twice_where_it_already_is_train_log(tmp_path):
  """The sweep runner sends a point's output to DIR/train.log itself."""
  path = tmp_path / console.LOG_FILE
  with open(path, 'w', encoding='utf-8') as stream:
    saved = sys.stderr
    sys.stderr = stream
    try:
      with console.kept(str(tmp_path)):
        print('once', file=sys.stderr)
      assert sys.stderr is stream
    finally:
      sys.stderr = saved
  assert path.read_text() == 'once\n'


def test_the_evaluation_line_is_the_mean_loss_each_task_and_bits_per_byte():
  results = {'eval/code/loss': 2.0, 'eval/code/accuracy': 0.5, 'eval/code/bits_per_byte': 3.0,
             'eval/prose/loss': 3.0, 'eval/prose/bits_per_byte': 4.0,
             'eval/prose/prefix_lm/loss': 9.0, 'forgetting/gap': 1.0}
  assert metrics.eval_summary(results) == (
      'loss=2.5000 (code=2.0000 prose=3.0000) bits_per_byte=3.5000; 7 metrics in metrics.jsonl')
  many = {f'eval/t{i}/loss': float(i) for i in range(10)}
  assert metrics.eval_summary(many, tasks_shown=2) == (
      'loss=4.5000 (t0=0.0000 t1=1.0000 +8 tasks); 10 metrics in metrics.jsonl')


def test_eta_is_the_pace_so_far_times_the_steps_left(monkeypatch):
  clock = iter([100.0, 130.0])
  monkeypatch.setattr(metrics.time, 'monotonic', lambda: next(clock))
  progress = metrics.Progress(total_steps=40, first_step=10, stream=io.StringIO())
  assert progress.eta(10) == '?'
  assert progress.eta(20) == '0:01:00'  # 10 steps in 30 s, 20 left


@pytest.mark.parametrize('argv, wanted', [
    (['prog', '--config=x.py'], False), (['prog', '--verbosity=1'], True),
    (['prog', '-v', '1'], True),
    (['prog', '--v=0'], True), (['prog', '--config.data.vocabulary=v'], False)])
def test_verbose_logs_are_asked_for_with_verbosity(argv, wanted):
  assert startup.verbose(argv) == wanted
