"""research/analysis/report.py and python -m launch.report on run directories written here.

Three runs differ in objective.name and model.architecture (and in keys that only locate files):
`causal` ran cleanly; `ul2` was killed after its step-10 checkpoint mid-write of a line, and the
resumed run logged steps 15 and 20 again (its first line glued to the torn one); `prefix` was killed
mid-write of its last line and has a nan evaluation loss.
"""

import json
import math
import os
import re
import subprocess
import sys

import pytest

from experiments import base
from launch import report as report_command
from research.analysis import report
from tests import commands

PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
TOKENS_PER_STEP = 2048


def _train(step: int, loss: float) -> dict:
  """A training line as research/metrics.py writes it."""
  return {'step': step, 'accuracy': 0.2, 'grad_norm': 1.5, 'loss': loss, 'tokens': 2048.0,
          'z_loss': 0.0035, 'learning_rate': 1e-4 * step, 'tokens_per_second': 3400.0,
          'mfu': 0.18, 'tokens_seen': TOKENS_PER_STEP * step,
          'data/stdlib_prose/epochs': 0.0005 * step}


def _eval(step: int, prose_loss: float | str, infilling_loss: float) -> dict:
  """An evaluation line: the task itself and the task in the R3_15 infilling format."""
  return {'step': step, 'eval/stdlib_prose/loss': prose_loss, 'eval/stdlib_prose/accuracy': 0.15,
          'eval/stdlib_prose/bits_per_byte': 5.4, 'eval/stdlib_code/R3_15/loss': infilling_loss,
          'eval/stdlib_code/R3_15/accuracy': 0.3}


def _line(record: dict) -> str:
  return json.dumps(record) + '\n'


def _write_run(directory, metrics_text: str, **overrides) -> str:
  """A run directory: config.json (research/defaults.py with `overrides`, a=b as a__b) and
  metrics.jsonl (`metrics_text` as is)."""
  config = base.get_config().to_dict()
  for key, value in overrides.items():
    *parents, leaf = key.split('__')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  directory.mkdir()
  (directory / 'config.json').write_text(json.dumps(config, indent=2, sort_keys=True))
  (directory / 'metrics.jsonl').write_text(metrics_text)
  return str(directory)


@pytest.fixture(scope='module')
def run_dirs(tmp_path_factory):
  """The paths of the runs `causal`, `ul2` and `prefix`."""
  root = tmp_path_factory.mktemp('runs')
  causal = ''.join(map(_line, [_train(5, 5.0), _train(10, 4.0), _eval(10, 3.9, 4.1),
                               _train(15, 3.5), _train(20, 3.0), _eval(20, 3.2, 3.6)]))
  ul2 = (''.join(map(_line, [_train(5, 5.2), _train(10, 4.4), _eval(10, 4.0, 3.0),
                             _train(15, 3.9), _train(20, 3.6)]))
         + '{"step": 25, "loss": 3.'  # torn by the kill; the resumed run appends to it
         + ''.join(map(_line, [_train(15, 3.8), _train(20, 3.3), _eval(20, 3.5, 3.1)])))
  prefix = (''.join(map(_line, [_train(5, 5.1), _train(10, 4.2), _eval(10, 'nan', 4.5),
                                _train(15, 3.7)]))
            + '{"step": 20, "loss": 3.4, "learning_r')  # torn last line
  return [
      _write_run(root / 'causal', causal, objective__name='causal_lm', data__store_dir='/a',
                 code_version={'git_commit': '0123456789abcdef' * 2, 'git_dirty': True}),
      _write_run(root / 'ul2', ul2, objective__name='ul2', model__architecture='encoder_decoder',
                 data__store_dir='/b', checkpoint__every=10,
                 code_version={'git_commit': 'fedcba9876543210' * 2, 'git_dirty': False}),
      _write_run(root / 'prefix', prefix, objective__name='prefix_lm', data__store_dir='/c',
                 distributed__coordinator_address='host:1234'),
  ]


@pytest.fixture(scope='module')
def runs(run_dirs):
  return [report.load_run(path) for path in run_dirs]


def _table(markdown: str) -> list[list[str]]:
  """The cells of a markdown table's rows, the header first, the alignment row left out."""
  rows = [line.strip().strip('|').split(' | ') for line in markdown.strip().splitlines()]
  assert set(''.join(rows[1])) <= set('-: ')
  return [[cell.strip() for cell in row] for row in [rows[0], *rows[2:]]]


def test_lines_of_a_step_merge_and_later_lines_win(runs):
  causal, ul2, prefix = runs
  assert [run.name for run in runs] == ['causal', 'ul2', 'prefix']
  assert list(causal.metrics) == [5, 10, 15, 20] and causal.skipped_lines == ()
  assert causal.metrics[10]['loss'] == 4.0 and causal.metrics[10]['eval/stdlib_prose/loss'] == 3.9
  assert causal.metrics[20]['eval/stdlib_code/R3_15/loss'] == 3.6
  assert causal.metrics[20]['tokens_seen'] == 20 * TOKENS_PER_STEP
  # Steps 15 (read from the line glued to the torn one) and 20 as the resumed run logged them.
  assert list(ul2.metrics) == [5, 10, 15, 20] and ul2.skipped_lines == (6,)
  assert [ul2.metrics[s]['loss'] for s in (5, 10, 15, 20)] == [5.2, 4.4, 3.8, 3.3]
  assert ul2.metrics[20]['eval/stdlib_prose/loss'] == 3.5
  assert report.series(ul2, 'loss', 'tokens_seen') == (
      [TOKENS_PER_STEP * s for s in (5, 10, 15, 20)], [5.2, 4.4, 3.8, 3.3])
  # The torn last line is skipped; "nan" as metrics.py writes it is a float again.
  assert list(prefix.metrics) == [5, 10, 15] and prefix.skipped_lines == (5,)
  assert math.isnan(prefix.metrics[10]['eval/stdlib_prose/loss'])
  assert prefix.config['objective']['name'] == 'prefix_lm'


def test_swept_values_leave_out_keys_that_only_locate_files(runs):
  assert report.swept_values(runs) == {
      'causal': {'model.architecture': 'decoder', 'objective.name': 'causal_lm'},
      'ul2': {'model.architecture': 'encoder_decoder', 'objective.name': 'ul2'},
      'prefix': {'model.architecture': 'decoder', 'objective.name': 'prefix_lm'},
  }
  assert report.swept_values(runs[:1]) == {'causal': {}}
  assert report.run_labels(runs) == ['model.architecture=decoder, objective.name=causal_lm',
                                     'model.architecture=encoder_decoder, objective.name=ul2',
                                     'model.architecture=decoder, objective.name=prefix_lm']
  assert report.run_labels(runs[:1]) == ['causal']


def test_a_key_only_some_runs_have_is_swept_and_shared_labels_name_the_run():
  configs = [{'data': {'tasks': {}}, 'seed': 0}, {'data': {'tasks': {'sums': {'n': 5}}}, 'seed': 0},
             {'data': {'tasks': {}}, 'seed': 0}]
  runs = [report.Run(name, name, config, {}) for name, config in zip('abc', configs)]
  assert report.swept_values(runs) == {'a': {'data.tasks': {}}, 'b': {'data.tasks.sums.n': 5},
                                       'c': {'data.tasks': {}}}
  assert report.run_labels(runs) == ['a: data.tasks={}', 'data.tasks.sums.n=5', 'c: data.tasks={}']
  many = [report.Run('x', 'x', {'a': 1, 'b': 1, 'c': 1, 'd': 1, 'e': 1}, {}),
          report.Run('y', 'y', {'a': 2, 'b': 2, 'c': 2, 'd': 2, 'e': 2}, {})]
  assert report.run_labels(many) == ['x', 'y']  # five differing values: the names


def test_summary_table_has_a_row_per_run_with_final_and_best_losses(runs):
  header, *rows = _table(report.summary_table(runs))
  assert header == ['run', 'model.architecture', 'objective.name', 'step', 'loss',
                    'eval/stdlib_code/R3_15/loss', 'best eval/stdlib_code/R3_15/loss',
                    'eval/stdlib_prose/loss', 'best eval/stdlib_prose/loss', 'tokens_seen']
  assert rows == [
      ['causal', 'decoder', 'causal_lm', '20', '3', '3.6', '3.6', '3.2', '3.2', '40.96k'],
      ['ul2', 'encoder_decoder', 'ul2', '20', '3.3', '3.1', '3', '3.5', '3.5', '40.96k'],
      ['prefix', 'decoder', 'prefix_lm', '15', '3.7', '4.5', '4.5', 'nan', 'nan', '30.72k'],
  ]


def test_numbers_have_four_significant_digits():
  assert [report.format_number(x) for x in (3.14159, 0.000123456, 4096, 9999.5, 40960, 1.5e6,
                                            2.5e9, -12.3456, math.inf, None)] == [
      '3.142', '0.0001235', '4096', '10k', '40.96k', '1.5M', '2.5B', '-12.35', 'inf', '-']


def test_plots_are_pngs_one_per_metric(runs, tmp_path):
  paths = report.plot_runs(runs, str(tmp_path))
  assert [os.path.basename(p) for p in paths] == [
      'train_loss_vs_step.png', 'train_loss_vs_tokens_seen.png',
      'eval_stdlib_code-R3_15_loss_vs_step.png', 'eval_stdlib_code-R3_15_loss_vs_tokens_seen.png',
      'eval_stdlib_prose_loss_vs_step.png', 'eval_stdlib_prose_loss_vs_tokens_seen.png',
      'learning_rate_vs_step.png']
  for path in paths:
    with open(path, 'rb') as f:
      content = f.read()
    assert content[:8] == PNG_SIGNATURE and len(content) > 1000


def test_continual_runs_report_forgetting_upstream_and_adaptation_downstream(tmp_path):
  pretrain = _write_run(tmp_path / 'pretrain', _line(_train(10, 3.0)),
                        data__mixture={'stdlib_prose': 1.0})
  lines = [{'step': 0, 'eval/stdlib_prose/loss': 2.0, 'eval/stdlib_code/loss': 4.0},
           _train(10, 3.0), {'step': 10, 'eval/stdlib_prose/loss': 2.5,
                             'eval/stdlib_code/loss': 3.0}]
  continued = _write_run(tmp_path / 'continued', ''.join(map(_line, lines)),
                         data__mixture={'stdlib_code': 1.0},
                         init__path=os.path.join(pretrain, 'checkpoints', '10'))
  runs = [report.load_run(path) for path in (pretrain, continued)]
  header, *rows = _table(report.continual_table(runs))
  assert header == ['run', 'eval', 'role', 'loss at start', 'final loss', 'change']
  assert rows == [['continued', 'stdlib_code', 'downstream', '4', '3', '-1'],
                  ['continued', 'stdlib_prose', 'upstream', '2', '2.5', '+0.5']]
  assert report.continual_table(runs[:1]) == ''


def test_mixture_weights_are_plotted_where_they_change(tmp_path):
  def weights(code_from_step_20):
    return {step: {'loss': 3.0, 'data/code/weight': code, 'data/prose/weight': 1 - code}
            for step, code in ((10, 0.5), (20, code_from_step_20), (30, code_from_step_20))}
  same = [report.Run(name, name, {'seed': i}, weights(0.2)) for i, name in enumerate('ab')]
  assert report.mixture_curves(same, report.run_labels(same)) == [
      ('code', [10, 20, 30], [0.5, 0.2, 0.2]), ('prose', [10, 20, 30], [0.5, 0.8, 0.8])]
  other = same + [report.Run('c', 'c', {'seed': 2}, weights(0.9)),
                  report.Run('fixed', 'fixed', {'seed': 3}, weights(0.5))]
  assert [label for label, _, _ in report.mixture_curves(other, report.run_labels(other))] == [
      'code (seed=0; seed=1)', 'prose (seed=0; seed=1)', 'code (seed=2)', 'prose (seed=2)']
  paths = report.plot_runs(other, str(tmp_path))
  assert os.path.basename(paths[-1]) == 'mixture_weights_vs_step.png'
  assert report.mixture_curves(other[-1:], ['fixed']) == []  # a mixture that never changes


# A mixture-of-experts run, 2 MoE layers of 4 experts, evaluated on 2 tasks. At step 10 every
# expert gets a quarter of every task; at step 20 in layer 0 prose goes to experts 0 and 1 and code
# to expert 3 (disjoint: JS = ln 2), in layer 1 both still spread evenly (JS = 0), so the domain
# divergence is (ln 2 + 0) / 2 = 0.3466. Load entropies: prose (ln 2 + ln 4) / 2 = 1.04, code
# (0 + ln 4) / 2 = 0.6931.
_EVEN = [[0.25] * 4, [0.25] * 4]
_SPECIALISED = {'stdlib_prose': [[0.5, 0.5, 0.0, 0.0], [0.25] * 4],
                'stdlib_code': [[0.0, 0.0, 0.0, 1.0], [0.25] * 4]}


def _moe_train(step: int, max_load: float, dropped: float) -> dict:
  """A training line of the MoE run, with its routing metrics and per-expert train loads."""
  return {**_train(step, 3.0), 'moe/lbl': 1.1, 'moe/router_z_loss': 0.2,
          'moe/dropped_fraction': dropped, 'moe/router_entropy': 1.2, 'moe/max_load': max_load,
          **{f'moe/layer_{m}/expert_{e}': 0.25 for m in range(2) for e in range(4)}}


def _moe_eval(step: int, loads: dict[str, list[list[float]]]) -> dict:
  """An evaluation line of the MoE run: task -> layer -> expert shares, and their entropies."""
  line = {'step': step}
  for task, layers in loads.items():
    line.update({f'eval/{task}/moe/layer_{m}/expert_{e}': share
                 for m, shares in enumerate(layers) for e, share in enumerate(shares)})
    line[f'eval/{task}/loss'] = 3.0
    line[f'eval/{task}/moe/dropped_fraction'] = 0.0
    line[f'eval/{task}/moe/load_entropy'] = sum(
        -x * math.log(x) for shares in layers for x in shares if x) / len(layers)
  return line


@pytest.fixture(scope='module')
def moe_dir(tmp_path_factory):
  """The path of the MoE run `moe+top2` (its name is not safe in a file name)."""
  lines = [_moe_train(10, 1.5, 0.02),
           _moe_eval(10, {'stdlib_prose': _EVEN, 'stdlib_code': _EVEN}),
           _moe_train(20, 1.25, 0.005), _moe_eval(20, _SPECIALISED), _moe_train(30, 1.125, 0.004)]
  return _write_run(tmp_path_factory.mktemp('moe') / 'moe+top2', ''.join(map(_line, lines)),
                    model__moe_experts=4)


def test_js_divergence_is_zero_for_equal_and_ln2_for_disjoint_distributions():
  assert report.js_divergence([0.3, 0.7], [0.3, 0.7]) == 0
  assert report.js_divergence([1, 0], [0, 1]) == pytest.approx(math.log(2))
  # [1, 0] and [0.5, 0.5]: m = [0.75, 0.25]; KL([1, 0] || m) = ln(4/3), KL([0.5, 0.5] || m) =
  # 0.5 ln(2/3) + 0.5 ln 2 = 0.5 ln(4/3); JS = (1 + 0.5) / 2 ln(4/3) = 0.75 ln(4/3) = 0.2158.
  assert report.js_divergence([1, 0], [0.5, 0.5]) == pytest.approx(0.75 * math.log(4 / 3))
  # Three tasks, one layer: pairs (a, b) and (b, c) disjoint, (a, c) equal: 2 ln 2 / 3.
  assert report.domain_divergence({'a': [[1, 0]], 'b': [[0, 1]], 'c': [[1, 0]]}) == (
      pytest.approx(2 * math.log(2) / 3))
  assert report.domain_divergence({'a': [[1, 0]]}) is None


def test_expert_loads_are_those_of_the_last_evaluation_that_logged_them(moe_dir, runs):
  moe = report.load_run(moe_dir)
  assert report.expert_loads(moe) == (20, dict(sorted(_SPECIALISED.items())))
  assert report.domain_divergence(report.expert_loads(moe)[1]) == pytest.approx(math.log(2) / 2)
  assert [report.expert_loads(run) for run in runs] == [None] * 3


def test_routing_table_has_a_row_per_moe_run(moe_dir, runs):
  assert report.routing_table(runs) == ''
  header, *rows = _table(report.routing_table([runs[0], report.load_run(moe_dir)]))
  assert header == ['run', 'moe/max_load', 'moe/dropped_fraction',
                    'eval/stdlib_code/moe/load_entropy', 'eval/stdlib_prose/moe/load_entropy',
                    'domain divergence']
  assert rows == [['moe+top2', '1.125', '0.004', '0.6931', '1.04', '0.3466']]


def test_moe_runs_plot_routing_but_no_curve_per_expert(moe_dir, runs, tmp_path):
  paths = report.plot_runs([runs[0], report.load_run(moe_dir)], str(tmp_path))
  names = [os.path.basename(p) for p in paths]
  assert names[names.index('learning_rate_vs_step.png') + 1:] == [
      'moe_max_load_vs_step.png', 'eval_stdlib_code_moe_load_entropy_vs_step.png',
      'eval_stdlib_prose_moe_load_entropy_vs_step.png', 'moe-top2_expert_loads.png']
  assert not any('layer' in name for name in names)  # nor any other file:
  assert sorted(os.listdir(tmp_path)) == sorted(names)
  for path in paths:
    with open(path, 'rb') as f:
      assert f.read(8) == PNG_SIGNATURE


def test_command_reports_the_routing_of_moe_runs(moe_dir, tmp_path):
  out = tmp_path / 'out'
  _main([moe_dir], str(out))
  text = (out / 'report.md').read_text()
  assert '## Expert routing' in text
  assert '| moe+top2 | 1.125 | 0.004 | 0.6931 | 1.04 | 0.3466 |' in text
  assert '![moe-top2_expert_loads](moe-top2_expert_loads.png)' in text
  assert (out / 'moe-top2_expert_loads.png').read_bytes()[:8] == PNG_SIGNATURE


def _main(argv: list[str], out: str | None) -> str:
  """Runs the command's main in-process with --out=`out`; returns what it printed."""
  return commands.run_main(lambda _: report_command.main(['launch.report', *argv]), out=out)


def test_command_writes_the_report_and_its_plots(run_dirs, tmp_path, capsys):
  out = tmp_path / 'out'
  printed = _main(run_dirs, str(out))
  assert printed == f'{out / "report.md"}\n'
  assert capsys.readouterr().err.splitlines() == [
      f'warning: skipped unreadable lines [{line}] of {run_dirs[i]}/metrics.jsonl (torn writes)'
      for i, line in ((1, 6), (2, 5))]
  text = (out / 'report.md').read_text()
  assert f'    python -m launch.report {" ".join(run_dirs)} --out={out}\n' in text
  table = '\n'.join(line for line in text.splitlines() if line.startswith('|'))
  assert table == report.summary_table(report_command.load_runs(run_dirs))
  assert '- `ul2`: skipped unreadable lines of metrics.jsonl (torn writes): 6' in text
  # Each run's code (config.json's code_version); the code version is never a swept value.
  assert [line for line in text.splitlines() if line.startswith('- `') and '(code' in line] == [
      f'- `causal`: `{run_dirs[0]}` (code 0123456789ab, uncommitted changes in code.diff)',
      f'- `ul2`: `{run_dirs[1]}` (code fedcba987654)']
  images = [line[line.index('](') + 2:-1] for line in text.splitlines() if line.startswith('![')]
  assert len(images) == 7 and sorted(os.listdir(out)) == sorted([*images, 'report.md'])
  assert '## Expert routing' not in text  # dense runs: no routing section


def test_a_failed_report_leaves_the_previous_one_whole(run_dirs, tmp_path, monkeypatch):
  out = tmp_path / 'out'
  _main(run_dirs[:1], str(out))
  before = {name: (out / name).read_bytes() for name in os.listdir(out)}

  def failing_plots(runs, out_dir, log_x):
    (tmp_path / 'staged').write_text(out_dir)
    with open(os.path.join(out_dir, 'train_loss_vs_step.png'), 'wb') as f:
      f.write(PNG_SIGNATURE)  # half a plot
    raise RuntimeError('plotting failed')

  monkeypatch.setattr(report, 'plot_runs', failing_plots)
  with pytest.raises(RuntimeError, match='plotting failed'):
    _main(run_dirs, str(out))
  assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before
  assert not os.path.exists((tmp_path / 'staged').read_text())


def test_a_sweep_directory_stands_for_its_runs(run_dirs, tmp_path):
  sweep = tmp_path / 'sweep'
  sweep.mkdir()
  for path in reversed(run_dirs):
    (sweep / os.path.basename(path)).symlink_to(path)
  (sweep / 'pending').mkdir()  # a point that has not started: no config.json yet
  assert [run.name for run in report_command.load_runs([str(sweep)])] == ['causal', 'prefix', 'ul2']


def test_points_of_two_sweeps_that_share_a_name_are_named_by_their_sweep(run_dirs, tmp_path):
  for sweep, path in (('replay', run_dirs[0]), ('union', run_dirs[1])):
    (tmp_path / sweep).mkdir()
    (tmp_path / sweep / 'seed=0').symlink_to(path)
  runs = report_command.load_runs([str(tmp_path / 'replay'), str(tmp_path / 'union'), run_dirs[2]])
  assert [run.name for run in runs] == ['replay:seed=0', 'union:seed=0',
                                        os.path.basename(run_dirs[2])]
  assert [run.config for run in runs[:2]] == [report.load_run(p).config for p in run_dirs[:2]]


@pytest.mark.parametrize('problem', ['missing', 'no_metrics', 'no_config', 'duplicate', 'no_out',
                                     'out_is_a_file', 'no_directories', 'no_runs'])
def test_command_errors_name_the_path_or_flag(run_dirs, tmp_path, problem):
  (tmp_path / 'no_metrics').mkdir()
  (tmp_path / 'no_metrics' / 'config.json').write_text('{}')
  (tmp_path / 'no_config').mkdir()
  (tmp_path / 'no_config' / 'metrics.jsonl').write_text('{"step": 1, "loss": 2.0}\n')
  (tmp_path / 'causal').symlink_to(run_dirs[0])
  (tmp_path / 'file').write_text('')
  (tmp_path / 'empty').mkdir()
  out = str(tmp_path / 'out')
  argv, out, message = {
      'missing': ([str(tmp_path / 'nope')], out,
                  f'Run directory {tmp_path / "nope"} does not exist or is not a directory'),
      'no_metrics': ([str(tmp_path / 'no_metrics')], out,
                     f'Run directory {tmp_path / "no_metrics"} has no metrics.jsonl'),
      'no_config': ([run_dirs[0], str(tmp_path / 'no_config')], out,
                    f'Run directory {tmp_path / "no_config"} has no config.json'),
      'duplicate': ([run_dirs[0], str(tmp_path / 'causal')], out,
                    f'Run directories {run_dirs[0]} and {tmp_path / "causal"} share the name '
                    "'causal'"),
      'no_out': (run_dirs, None, '--out is required'),
      'out_is_a_file': (run_dirs, str(tmp_path / 'file'), f'--out={tmp_path / "file"} is a file'),
      'no_directories': ([], out, 'No run directory given'),
      'no_runs': ([str(tmp_path / 'empty')], out,
                  f'{tmp_path / "empty"} holds no runs: neither it nor a sub-directory has a '
                  'config.json'),
  }[problem]
  with pytest.raises(SystemExit, match='^error: ' + re.escape(message)):
    _main(argv, out)
  assert not os.path.exists(tmp_path / 'out')


def test_command_line_error_is_one_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'launch.report', str(tmp_path / 'nope'), f'--out={tmp_path / "out"}'],
      capture_output=True, text=True, check=False)
  assert result.returncode == 2 and not result.stdout
  assert result.stderr.strip() == (f'error: Run directory {tmp_path / "nope"} does not exist or is '
                                   'not a directory; pass the --workdir of launch.train runs.')
  assert not os.path.exists(tmp_path / 'out')


def test_a_run_older_than_a_config_key_counts_as_having_its_default():
  default_every = base.get_config().data.skillit.every
  old = {'data': {'mixture': {'a': 1.0}}}
  new = {'data': {'mixture': {'a': 0.5, 'b': 0.5}, 'skillit': {'every': default_every}}}
  runs = [report.Run(name, name, config, {}) for name, config in zip('on', (old, new))]
  assert report.swept_values(runs) == {'o': {'data.mixture.a': 1.0},
                                       'n': {'data.mixture.a': 0.5, 'data.mixture.b': 0.5}}
  new['data']['skillit']['every'] = default_every + 10
  assert report.swept_values(runs)['n']['data.skillit.every'] == default_every + 10


def _cosine_rate(index: int) -> float:
  """The warmup_cosine schedule of `lr_run` at step index `index` (peak 0.01, 20 warmup steps, 100
  steps, floor 0.001), by its formula."""
  if index < 20:
    return 0.01 * (index + 1) / 20
  return 0.001 + 0.5 * 0.009 * (1 + math.cos(math.pi * min((index - 20) / 80, 1)))


@pytest.fixture
def lr_run(tmp_path):
  """A 100-step run logged every 10 steps, as research/train.py logs: the learning rate of the last
  update (step s: the schedule at s - 1), and an evaluation before the first step and at the end."""
  lines = [_eval(0, 6.0, 6.5), *(dict(_train(step, 5 - step / 50), learning_rate=_cosine_rate(
      step - 1)) for step in range(10, 101, 10)), _eval(100, 3.0, 3.5)]
  return report.load_run(_write_run(
      tmp_path / 'cosine', ''.join(map(_line, lines)), schedule__peak_lr=0.01,
      schedule__warmup_steps=20, train__steps=100, train__log_every=10))


def test_the_learning_rate_plot_is_the_schedule_at_every_step(lr_run):
  plots = dict(report.figures([lr_run]))
  steps, rates = plots['learning_rate_vs_step.png'].axes[0].lines[0].get_data()
  assert list(steps) == list(range(1, 101))
  # Inside the warmup and halfway through the decay, between logged steps; the last step.
  assert rates[5 - 1] == pytest.approx(0.0025, rel=1e-6)
  assert rates[61 - 1] == pytest.approx(0.0055, rel=1e-6)
  assert rates[100 - 1] == pytest.approx(_cosine_rate(99), rel=1e-6)
  for step in range(10, 101, 10):  # where the run logged it, the logged value
    assert rates[step - 1] == pytest.approx(lr_run.metrics[step]['learning_rate'], rel=1e-6)
  logged = report.series(lr_run, 'learning_rate')
  assert logged[0] == list(range(10, 101, 10))
  # Without a schedule in the config, or with the schedule moved off the step by init.*: the log.
  assert report.learning_rate_curve(report.Run('old', 'old', {'seed': 0}, lr_run.metrics)) == logged
  moved = {**lr_run.config, 'init': {'path': '/runs/a', 'step': 'keep', 'schedule': 'restart'}}
  assert report.learning_rate_curve(report.Run('moved', 'moved', moved, lr_run.metrics)) == logged


def test_log_x_puts_the_loss_plots_on_a_log_axis(lr_run):
  linear, log = dict(report.figures([lr_run])), dict(report.figures([lr_run], log_x=True))
  for name in ('train_loss_vs_step.png', 'train_loss_vs_tokens_seen.png',
               'eval_stdlib_prose_loss_vs_step.png', 'eval_stdlib_code-R3_15_loss_vs_step.png'):
    assert (linear[name].axes[0].get_xscale(), log[name].axes[0].get_xscale()) == ('linear', 'log')
  assert log['learning_rate_vs_step.png'].axes[0].get_xscale() == 'linear'
  # The evaluation before the first step (step 0) has no place on a log axis.
  assert list(linear['eval_stdlib_prose_loss_vs_step.png'].axes[0].lines[0].get_xdata()) == [0, 100]
  assert list(log['eval_stdlib_prose_loss_vs_step.png'].axes[0].lines[0].get_xdata()) == [100]


def test_command_log_x_flag_reaches_the_plots(lr_run, tmp_path, monkeypatch):
  plotted = []

  def recording_plots(runs, out_dir, log_x):
    plotted.append(log_x)
    return []

  monkeypatch.setattr(report, 'plot_runs', recording_plots)
  out = tmp_path / 'out'
  commands.run_main(lambda _: report_command.main(['launch.report', lr_run.path]), out=str(out),
                    log_x=True)
  assert plotted == [True]
  assert f'    python -m launch.report {lr_run.path} --out={out} --log_x\n' in (
      out / 'report.md').read_text()
