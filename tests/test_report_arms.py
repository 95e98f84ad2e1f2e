"""Seeds as arms in research/analysis/report.py and python -m launch.report: mean ± standard error
tables, bands in the plots, and runs kept with --keep_runs to make the report from again.

Seven runs of three learning rates (schedule.peak_lr), differing otherwise only in `seed` and in
keys that locate files: 0.001 and 0.003 with seeds 0, 1, 2, 0.01 with seed 0 alone. Each logs
training and evaluation lines at steps 10 and 20 (step 10: the step-20 values + 1). Seed 0 of 0.003
also logged step 5, which its other seeds did not; seed 2 of 0.003 logged no answer accuracy; seed
1 of 0.003 is stored as a bucket run stores metrics.jsonl, in parts (research/appendable.py).
"""

import json
import math
import os

import matplotlib.colors
import pytest
from matplotlib import collections

from launch import report as report_command
from research.analysis import report
from tests import commands
from tests.test_report import _eval, _line, _table, _train, _write_run

# peak_lr -> per seed (final train loss, final eval loss of stdlib_prose and of its R3_15 infilling
# format, final stdlib_prose answer accuracy or None when not logged). Means and standard errors
# (sample standard deviation / sqrt(n)) of 0.001: loss 2.2 ± 0.1155 (deviations -0.2, 0, 0.2:
# sqrt(0.08 / 2 / 3)), prose 2.6 ± 0.05774, infilling 3 ± 0, accuracy 0.6 ± 0.05774; of 0.003:
# loss 3.2 ± 0.1528 (deviations -0.2, -0.1, 0.3: sqrt(0.14 / 2 / 3)), prose 3.6 ± 0.1155,
# infilling 4.1 ± 0.1155, accuracy over 2 seeds 0.85 ± 0.05 (sqrt(0.005 / 1 / 2)).
FINALS = {0.001: [(2.0, 2.5, 3.0, 0.5), (2.2, 2.6, 3.0, 0.6), (2.4, 2.7, 3.0, 0.7)],
          0.003: [(3.0, 3.4, 3.9, 0.8), (3.1, 3.6, 4.1, 0.9), (3.5, 3.8, 4.3, None)],
          0.01: [(4.0, 4.4, 4.9, 0.1)]}
ORDER = [(0.001, 0), (0.003, 0), (0.001, 1), (0.01, 0), (0.003, 1), (0.001, 2), (0.003, 2)]
HEADER = ['arm', 'n', 'loss', 'eval/stdlib_code/R3_15/loss', 'eval/stdlib_prose/loss',
          'eval/stdlib_prose/answer_accuracy']
ROWS = [['schedule.peak_lr=0.001', '3', '2.2 ± 0.1155', '3 ± 0', '2.6 ± 0.05774', '0.6 ± 0.05774'],
        ['schedule.peak_lr=0.003', '3', '3.2 ± 0.1528', '4.1 ± 0.1155', '3.6 ± 0.1155',
         '0.85 ± 0.05 (n=2)'],
        ['schedule.peak_lr=0.01', '1', '4', '4.9', '4.4', '0.1']]
ARMS_SECTION = '## Arms (mean ± standard error over seeds)'


def _name(lr: float, seed: int) -> str:
  return f'lr{lr}_seed{seed}'


def _metrics(lr: float, seed: int) -> str:
  """metrics.jsonl of the run of `lr` and `seed`: steps 10 and 20 (and 5 for 0.003's seed 0)."""
  loss, prose, infilling, accuracy = FINALS[lr][seed]
  lines = [_train(5, 6.0)] if (lr, seed) == (0.003, 0) else []
  for step, offset in ((10, 1.0), (20, 0.0)):
    answers = {} if accuracy is None else {'eval/stdlib_prose/answer_accuracy': accuracy}
    lines += [_train(step, loss + offset),
              {**_eval(step, prose + offset, infilling + offset), **answers}]
  return ''.join(map(_line, lines))


@pytest.fixture(scope='module')
def run_dirs(tmp_path_factory):
  """The run directories in `ORDER`; 0.003's seed 1 with its metrics.jsonl in two parts."""
  root = tmp_path_factory.mktemp('seeds')
  paths = [_write_run(root / _name(lr, seed), _metrics(lr, seed), schedule__peak_lr=lr, seed=seed,
                      data__store_dir=f'/store/{seed}') for lr, seed in ORDER]
  metrics = root / _name(0.003, 1) / 'metrics.jsonl'
  lines = metrics.read_text().splitlines(keepends=True)
  (root / _name(0.003, 1) / 'metrics.jsonl.parts').mkdir()
  for index, part in enumerate((lines[:2], lines[2:])):
    (root / _name(0.003, 1) / 'metrics.jsonl.parts' / f'{index:06d}').write_text(''.join(part))
  metrics.unlink()
  return paths


@pytest.fixture(scope='module')
def runs(run_dirs):
  return [report.load_run(path) for path in run_dirs]


def test_runs_that_differ_only_in_seed_form_an_arm(runs):
  arms = report.arms(runs)
  assert [arm.label for arm in arms] == [row[0] for row in ROWS]
  assert [[run.name for run in arm.runs] for arm in arms] == [
      [_name(0.001, seed) for seed in range(3)], [_name(0.003, seed) for seed in range(3)],
      [_name(0.01, 0)]]
  # Seeds of one config alone: one arm, labelled by its runs' names.
  same = [run for run in runs if run.config['schedule']['peak_lr'] == 0.001]
  assert [(arm.label, len(arm.runs)) for arm in report.arms(same)] == [
      (', '.join(_name(0.001, seed) for seed in range(3)), 3)]


def test_arm_table_gives_mean_and_standard_error_over_seeds(runs):
  assert report.mean_and_error([2.0, 2.2, 2.4]) == (pytest.approx(2.2),
                                                    pytest.approx(0.2 / math.sqrt(3)))
  assert report.mean_and_error([4.0]) == (4.0, None)
  header, *rows = _table(report.arm_table(runs))
  assert header == HEADER
  assert rows == ROWS


def test_one_seed_per_arm_gives_no_arm_table_nor_bands(runs, tmp_path):
  single = [runs[0], runs[1], runs[3]]  # 0.001 and 0.003 with seed 0, 0.01 with seed 0
  assert [len(arm.runs) for arm in report.arms(single)] == [1, 1, 1]
  assert report.arm_table(single) == ''
  train = dict(report.figures(single))['train_loss_vs_step.png']
  assert not train.axes[0].collections
  assert [text.get_text() for text in train.legends[0].get_texts()] == report.run_labels(single)
  out = tmp_path / 'out'
  _main([run.path for run in single], str(out))
  assert '## Arms' not in (out / 'report.md').read_text()


def test_plots_draw_each_arm_as_its_mean_with_a_band_of_one_standard_error(runs):
  plots = dict(report.figures(runs))
  for name in ('train_loss_vs_step.png', 'train_loss_vs_tokens_seen.png',
               'eval_stdlib_prose_loss_vs_step.png', 'eval_stdlib_code-R3_15_loss_vs_step.png'):
    ax = plots[name].axes[0]
    bands = [c for c in ax.collections if isinstance(c, collections.PolyCollection)]
    assert len(ax.lines) == 3 and len(bands) == 2, name  # the one-seed arm has no band
    for line, band in zip(ax.lines, bands):
      assert tuple(band.get_facecolor()[0][:3]) == matplotlib.colors.to_rgb(line.get_color())
      assert band.get_alpha() == pytest.approx(0.2)
  ax = plots['train_loss_vs_step.png'].axes[0]
  assert [text.get_text() for text in plots['train_loss_vs_step.png'].legends[0].get_texts()] == [
      'schedule.peak_lr=0.001 (mean of 3 seeds ± SE)',
      'schedule.peak_lr=0.003 (mean of 3 seeds ± SE)', 'schedule.peak_lr=0.01']
  # Steps 10 and 20, which every seed logged (0.003's seed 0 alone logged step 5); the mean
  # losses 3.2 and 2.2 (0.001), 4.2 and 3.2 (0.003), the one run of 0.01 as it is.
  assert [list(line.get_xdata()) for line in ax.lines] == [[10, 20]] * 3
  assert [list(line.get_ydata()) for line in ax.lines] == [
      [pytest.approx(3.2), pytest.approx(2.2)], [pytest.approx(4.2), pytest.approx(3.2)],
      [5.0, 4.0]]
  # 0.001's band: 3.2 ± 0.1155 at step 10 down to 2.2 ± 0.1155 at step 20.
  low, high = ax.collections[0].get_paths()[0].vertices[:, 1].min(), (
      ax.collections[0].get_paths()[0].vertices[:, 1].max())
  assert (low, high) == (pytest.approx(2.2 - 0.2 / math.sqrt(3)),
                         pytest.approx(3.2 + 0.2 / math.sqrt(3)))


def _main(argv: list[str], out: str, keep_runs: bool = False) -> str:
  """Runs the command's main in-process with --out=`out` and --keep_runs=`keep_runs`."""
  return commands.run_main(lambda _: report_command.main(['launch.report', *argv]), out=out,
                           keep_runs=keep_runs)


def _section(text: str, title: str) -> str:
  """The markdown of report.md's section `title` up to the next section."""
  start = text.index(f'\n{title}\n')
  end = text.find('\n## ', start + 1)
  return text[start:end if end >= 0 else len(text)]


def test_kept_runs_make_the_same_report_again(run_dirs, runs, tmp_path):
  out = tmp_path / 'out'
  _main(run_dirs, str(out), keep_runs=True)
  text = (out / 'report.md').read_text()
  assert f'--out={out} --keep_runs\n' in text
  header, *rows = _table(_section(text, ARMS_SECTION).split('\n\n')[1])
  assert (header, rows) == (HEADER, ROWS)
  assert 'sqrt(SE1^2 + SE2^2)' in _section(text, ARMS_SECTION)
  kept = out / report_command.RUNS_DIR
  assert sorted(os.listdir(kept)) == sorted(run.name for run in runs)
  for path, run in zip(run_dirs, runs):
    assert sorted(os.listdir(kept / run.name)) == ['config.json', 'metrics.jsonl']
    assert json.loads((kept / run.name / 'config.json').read_text()) == run.config
  # As read: the parts of 0.003's seed 1 as one file, the others' files as they are.
  parts = os.path.join(run_dirs[4], 'metrics.jsonl.parts')
  assert (kept / _name(0.003, 1) / 'metrics.jsonl').read_text() == ''.join(
      open(os.path.join(parts, name), encoding='utf-8').read()
      for name in sorted(os.listdir(parts)))
  assert (kept / _name(0.001, 0) / 'metrics.jsonl').read_text() == _metrics(0.001, 0)

  names = [run.name for run in runs]
  assert (f'`python -m launch.report {" ".join(f"runs/{name}" for name in names)} --out=OUT` '
          'makes this report from them') in text
  again = tmp_path / 'again'
  _main([str(kept / name) for name in names], str(again))
  recomputed = (again / 'report.md').read_text()
  for title in ('## Summary', ARMS_SECTION):
    assert _section(recomputed, title) == _section(text, title)
  assert not os.path.exists(again / report_command.RUNS_DIR)

  # Kept again from the kept copies of two runs: OUT/runs holds those two alone.
  _main([str(kept / _name(0.001, 0)), str(kept / _name(0.001, 1))], str(out), keep_runs=True)
  assert sorted(os.listdir(kept)) == [_name(0.001, 0), _name(0.001, 1)]
  assert (kept / _name(0.001, 0) / 'metrics.jsonl').read_text() == _metrics(0.001, 0)
  assert [name for name in os.listdir(out) if name.startswith('.')] == []
