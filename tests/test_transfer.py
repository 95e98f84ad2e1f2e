"""Backward and forward transfer over a domain sequence (Lopez-Paz & Ranzato 2017, arXiv
1706.08840, on losses): research/analysis/forgetting.py on hand-made loss tables, its table per arm
in research/analysis/report.py, and the sweep of experiments/powerlaw_replay.py."""

import math

import pytest

from experiments import powerlaw_replay
from research.analysis import forgetting, report

# R[i, j]: loss on domain j at the end of stage i (prose, code, arithmetic).
LOSSES = [[2.0, 3.0, 4.0],
          [2.5, 1.5, 3.5],
          [2.75, 1.75, 1.0]]


def test_backward_transfer_is_the_mean_rise_of_the_earlier_domains_losses():
  assert forgetting.backward_transfer(LOSSES) == pytest.approx(((2.75 - 2.0) + (1.75 - 1.5)) / 2)
  assert forgetting.backward_transfer([[1.0, 5.0], [0.8, 2.0]]) == pytest.approx(-0.2)  # improved


def test_forward_transfer_compares_a_domain_before_its_stage_with_the_reference():
  reference = [5.0, 5.0, 4.5]
  assert forgetting.forward_transfer(LOSSES, reference) == pytest.approx(
      ((3.0 - 5.0) + (3.5 - 4.5)) / 2)


@pytest.mark.parametrize('losses', [[[1.0]], [[1.0, 2.0]], [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]])
def test_transfer_needs_a_square_table_of_two_domains_or_more(losses):
  with pytest.raises(ValueError, match='T x T loss table'):
    forgetting.backward_transfer(losses)


def _run(name, seed, losses, at_zero=None, steps=30):
  """A run over prose -> code -> arithmetic, 10 steps each, evaluated at each stage's end."""
  config = {'seed': seed, 'train': {'steps': steps}, 'model': {'vocab_size': 384},
            'data': {'replay': {'sampler': name.rstrip('0123456789')},
                     'mixture': {'prose': 1.0},
                     'stages': {'arithmetic': {'at_fraction': 2 / 3, 'mixture': {'sums': 1.0}},
                                'code': {'at_step': 10, 'mixture': {'code': 1.0, 'prose': 0.0}}}}}
  metrics = {step: {f'eval/{task}/loss': value for task, value in zip(('prose', 'code', 'sums'),
                                                                      row)}
             for step, row in zip((10, 20, 30), losses)}
  if at_zero:
    metrics[0] = {f'eval/{task}/loss': value for task, value in zip(('prose', 'code', 'sums'),
                                                                    at_zero)}
  return report.Run(name, name, config, dict(sorted(metrics.items())))


def _table(markdown: str) -> list[list[str]]:
  return [[cell.strip() for cell in line.strip().strip('|').split(' | ')]
          for line in markdown.strip().splitlines()]


def test_transfer_table_gives_each_arm_the_mean_and_error_over_its_seeds():
  shifted = [[value + 0.5 for value in row] for row in LOSSES]  # exact in binary
  runs = [_run('power_law0', 0, LOSSES), _run('power_law1', 1, shifted),
          _run('none0', 0, LOSSES, at_zero=[6.0, 6.0, 6.0])]
  header, _, *rows = _table(report.transfer_table(runs))
  assert header[:3] == ['arm', 'n', 'domains']
  sequence = 'prose -> code -> sums'
  fwt_uniform = ((3.0 - math.log(384)) + (3.5 - math.log(384))) / 2  # no step-0 evaluation
  assert rows == [
      ['data.replay.sampler=power_law', '2', sequence, '0.5 ± 0', report.format_number(
          fwt_uniform + 0.25) + ' ± 0.25', '2.083 ± 0.25'],
      ['data.replay.sampler=none', '1', sequence, '0.5', '-2.75', '1.833']]


def test_transfer_needs_every_stage_end_evaluated_and_two_stages():
  missing = _run('power_law0', 0, LOSSES)
  del missing.metrics[20]['eval/code/loss']
  assert report.transfer(missing) is None
  single = _run('power_law0', 0, LOSSES)
  single.config['data']['stages'] = {}
  assert report.transfer(single) is None
  assert report.transfer_table([missing, single]) == ''


def test_the_sweep_has_three_arms_of_three_seeds_over_the_three_domains():
  points = powerlaw_replay.get_sweep()
  arms = {}
  for point in points:
    arm = (point['data.replay.sampler'], point['data.replay.exponent'],
           point['data.replay.fraction'])
    arms.setdefault(arm, set()).add(point['seed'])
  assert set(arms) == {('constant', 1.0, 0.0), ('power_law', 0.0, 0.25), ('power_law', 1.0, 0.25)}
  assert all(seeds == set(powerlaw_replay.SEEDS) and len(seeds) == 3 for seeds in arms.values())
  config = powerlaw_replay.get_config()
  stages = report.domain_sequence(report.Run('run', 'run', config.to_dict(), {}))
  steps = powerlaw_replay.STAGE_STEPS
  assert stages == [(i * steps, [domain]) for i, domain in enumerate(powerlaw_replay.DOMAINS)]
  assert steps % config.eval.every == 0  # every stage's end is evaluated
