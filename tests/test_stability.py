"""research/analysis/stability.py: the LR sensitivity of Wortsman et al. 2023 (arXiv 2309.14322),
checked against numbers by hand."""

import math

import pytest

from research.analysis import report, stability


def _run(lr, qk_norm, seed, loss, attention=None):
  """An in-memory run whose final eval loss on its one task is `loss`."""
  metrics = {10: {'loss': 9.0}, 20: {'eval/prose/loss': loss, 'loss': 9.0}}
  if attention is not None:
    metrics[20]['monitor/attention_logit_max'] = attention
  return report.Run(f'lr{lr}_qk{qk_norm}_s{seed}', '', {
      'seed': seed, 'model': {'qk_norm': qk_norm, 'vocab_size': 256},
      'schedule': {'peak_lr': lr}}, metrics)


def test_lr_sensitivity_caps_at_the_initial_loss_and_averages_seeds_first():
  losses = {1e-3: [3.0], 1e-2: [2.0, 2.2], 1e-1: [math.nan], 1.0: [9.0]}
  # capped means 3.0, 2.1, 5.0, 5.0: their mean 3.775 less the best 2.1
  assert stability.lr_sensitivity(losses, 5.0) == pytest.approx(1.675)
  assert stability.lr_sensitivity({1e-3: [2.0], 1e-2: [2.0, 2.0]}, 5.0) == 0.0
  assert stability.capped(None, 5.0) == stability.capped(math.inf, 5.0) == 5.0


def test_variants_their_table_and_plots():
  l0 = math.log(256)
  runs = [_run(1e-3, False, 0, 3.0, 2.0), _run(1e-2, False, 0, 2.0, 4.0),
          _run(1e-2, False, 1, 2.5, 6.0), _run(1e-1, False, 0, math.nan, 50.0),
          _run(1e-3, True, 0, 3.0, 1.0), _run(1e-2, True, 0, 2.2, 1.5),
          _run(1e-1, True, 0, 2.4, 2.0)]
  found = stability.variants(runs)
  assert [v.label for v in found] == ['model.qk_norm=false', 'model.qk_norm=true']
  assert list(found[0].runs) == [1e-3, 1e-2, 1e-1]
  assert found[0].sensitivity() == pytest.approx((3.0 + 2.25 + l0) / 3 - 2.25)
  assert found[1].sensitivity() == pytest.approx((3.0 + 2.2 + 2.4) / 3 - 2.2)
  table = stability.sensitivity_table(runs)
  assert table.splitlines()[0] == ('| variant | LR sensitivity | best lr | lr=0.001 | lr=0.01 | '
                                   'lr=0.1 |')
  assert table.splitlines()[2] == (f'| model.qk_norm=false | '
                                   f'{report.format_number((5.25 + l0) / 3 - 2.25)} | 0.01 | 3 | '
                                   '2.25 ± 0.25 | nan |')
  assert table.splitlines()[3] == '| model.qk_norm=true | 0.3333 | 0.01 | 3 | 2.2 | 2.4 |'
  assert [name for name, _ in stability.figures(runs)] == [
      'final_loss_vs_learning_rate.png', 'monitor-attention_logit_max_vs_learning_rate.png']
  assert stability.variants(runs[:3]) == [] and stability.sensitivity_table(runs[:3]) == ''


def test_the_report_has_the_sensitivity_table_and_plots(tmp_path):
  from launch import report as launch_report
  runs = [_run(lr, qk_norm, 0, loss, 3.0) for qk_norm in (False, True)
          for lr, loss in ((1e-3, 3.0), (1e-2, 2.0), (1e-1, 2.5))]
  path = launch_report.write_report(str(tmp_path / 'out'), 'python -m launch.report X', runs)
  with open(path, encoding='utf-8') as f:
    text = f.read()
  assert '## Learning-rate sensitivity' in text and stability.sensitivity_table(runs) in text
  assert '![final_loss_vs_learning_rate](final_loss_vs_learning_rate.png)' in text
  assert (tmp_path / 'out' / 'monitor-attention_logit_max_vs_learning_rate.png').exists()
