"""The stability gap (Guo et al. 2024, arXiv 2406.14833): research/analysis/forgetting.stability_gap
on hand-made curves, its table per arm in research/analysis/report.py, and the sweep of
experiments/stability_gap.py."""


import jax
import pytest

from experiments import stability_gap
from research import config as config_lib
from research.analysis import forgetting, report

STEPS = [0, 5, 10, 15, 20]


@pytest.mark.parametrize('values, higher_is_better, expected', [
    # accuracy: down by 0.2 at step 10, back above the start at 20
    ([0.5, 0.4, 0.3, 0.45, 0.6], True, (0.2, 10, 20)),
    # loss: up by 0.5 at step 5, back to exactly the start (a tie counts) at 15
    ([2.0, 2.5, 2.2, 2.0, 1.9], False, (0.5, 5, 15)),
    # the first of two equally bad evaluations is the dip; a value back at the start between
    # them is after the dip
    ([1.0, 0.8, 1.0, 0.8, 0.9], True, (0.2, 5, 10)),
    # never back at the start
    ([1.0, 1.2, 1.1, 1.05, 1.01], False, (0.2, 5, None)),
    # never worse than the start: no dip
    ([0.5, 0.5, 0.6, 0.7, 0.8], True, (0.0, None, 0)),
])
def test_stability_gap_of_hand_made_curves(values, higher_is_better, expected):
  gap = forgetting.stability_gap(STEPS, values, higher_is_better)
  assert gap['start'] == values[0]
  assert (gap['depth'], gap['dip_step'], gap['recovered_step']) == pytest.approx(expected)


def test_stability_gap_needs_step_0_and_a_later_evaluation():
  assert forgetting.stability_gap([5, 10], [0.5, 0.4], True) is None
  assert forgetting.stability_gap([0], [0.5], True) is None


def _run(name: str, seed: int, accuracies, init: str = 'pretrain') -> report.Run:
  config = {'seed': seed, 'init': {'path': init},
            'data': {'mixture': {'addition': 1.0 if name.startswith('large') else 0.5}}}
  metrics = {step: {'eval/addition/answer_accuracy': accuracy, 'eval/addition/loss': 2.0}
             for step, accuracy in zip(STEPS, accuracies)}
  return report.Run(name, name, config, metrics)


def _table(markdown: str) -> list[list[str]]:
  return [[cell.strip() for cell in line.strip().strip('|').split(' | ')]
          for line in markdown.strip().splitlines()]


def test_stability_gap_table_gives_each_arm_the_mean_and_error_over_its_seeds():
  runs = [_run('large0', 0, [0.5, 0.3, 0.4, 0.5, 0.6]),
          _run('large1', 1, [0.5, 0.4, 0.3, 0.45, 0.45]),
          _run('mixed0', 0, [0.5, 0.6, 0.7, 0.7, 0.7]),
          _run('mixed1', 1, [0.5, 0.6, 0.7, 0.7, 0.7])]
  header, _, *rows = _table(report.stability_gap_table(runs))
  assert header == ['arm', 'n', 'eval', 'at step 0', 'dip depth', 'dip step', 'steps to recover']
  large = 'data.mixture.addition=1.0'
  mixed = 'data.mixture.addition=0.5'
  assert rows == [
      [large, '2', 'eval/addition/loss', '2 ± 0', '0 ± 0', '-', '0 ± 0'],
      # depths 0.2 and 0.2 at steps 5 and 10; one seed back at step 15, one never
      [large, '2', 'eval/addition/answer_accuracy', '0.5 ± 0', '0.2 ± 0', '7.5 ± 2.5', '15 (n=1)'],
      [mixed, '2', 'eval/addition/loss', '2 ± 0', '0 ± 0', '-', '0 ± 0'],
      [mixed, '2', 'eval/addition/answer_accuracy', '0.5 ± 0', '0 ± 0', '-', '0 ± 0']]


def test_stability_gap_table_is_empty_without_continual_runs_evaluated_at_step_0():
  assert report.stability_gap_table([_run('large0', 0, [0.5, 0.3, 0.5, 0.5, 0.5], init='')]) == ''
  late = _run('large0', 0, [0.5, 0.3, 0.5, 0.5, 0.5])
  late.metrics.pop(0)
  assert report.stability_gap_table([late]) == ''


def test_the_sweep_has_every_arm_with_three_seeds(tmp_path):
  points = stability_gap.get_sweep()
  arms = {}
  for point in points:
    mixture = tuple(sorted((key, value) for key, value in point.items() if key != 'seed'))
    arms.setdefault(mixture, set()).add(point['seed'])
    assert sum(value for key, value in mixture) == pytest.approx(1.0)
  assert len(arms) == len(stability_gap.ARMS) == 3
  assert all(seeds == set(stability_gap.SEEDS) and len(seeds) >= 3 for seeds in arms.values())
  pretrain = stability_gap.get_config('pretrain')
  config = stability_gap.get_config()
  assert pretrain.data.mixture[stability_gap.NEW] > 0 and config.init.path
  assert pretrain.data.tasks.to_dict() == config.data.tasks.to_dict()
  config_lib.validate(pretrain, str(tmp_path / 'pretrain'), jax.devices())
  with pytest.raises(ValueError, match='choose one of'):
    stability_gap.get_config('scratch')
