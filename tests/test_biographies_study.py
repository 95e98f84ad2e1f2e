"""experiments/biographies.py (Allen-Zhu & Li 2023, arXiv 2309.14316): its arms and seeds, the
staged protocol switching from biographies alone to questions alone at the step its learning rate
re-warms, the mixed one keeping its question share, and the data that the two evaluations read.
(Every point's config validates in tests/test_config.py.)"""

import collections

import jax
import pytest

from experiments import biographies as experiment
from research import config as config_lib
from research.analysis import sweep
from research.data import sampler as sampler_lib
from research.data.synthetic import biographies

SWITCH = round(experiment.FINETUNE_AT * experiment.STEPS)


@pytest.fixture(scope='module')
def setups(tmp_path_factory):
  """Each point's overrides -> the Setup (schedule, mixture plan) of its validated config."""
  config = experiment.get_config()
  workdir = str(tmp_path_factory.mktemp('biographies') / 'run')
  return [(point.overrides, config_lib.validate(sweep.point_config(config, point), workdir,
                                                jax.devices()))
          for point in sweep.points(experiment.get_sweep(), config)]


def _arm(overrides: dict) -> tuple[str, float]:
  """(protocol, augmented_fraction) of a point."""
  protocol = 'staged' if overrides['data.mixture.qa'] == 0 else 'mixed'
  augmented = overrides['data.tasks.bios.augmented_fraction']
  assert overrides['data.tasks.qa.augmented_fraction'] == augmented
  return protocol, augmented


def test_the_sweep_is_every_protocol_and_augmentation_with_every_seed(setups):
  seeds = collections.defaultdict(list)
  for overrides, _ in setups:
    seeds[_arm(overrides)].append(overrides['seed'])
  assert sorted(seeds) == sorted((p, a) for p in experiment.PROTOCOLS for a in (0.0, 1.0))
  assert all(sorted(s) == list(experiment.SEEDS) and len(s) >= 3 for s in seeds.values())


def test_staged_switches_from_biographies_to_questions_where_both_protocols_rewarm(setups):
  config = experiment.get_config()
  for overrides, setup in setups:
    plan = setup.plan
    assert plan.task_names == [experiment.BIOS, experiment.QA]
    assert [stage.start_step for stage in plan.stages] == [0, SWITCH]
    sampler = sampler_lib.MixtureSampler(plan.task_names, plan.stages, config.train.batch_size,
                                         config.data.mixture_block, seed=0, stream=0)
    before, after = sampler.proportions(SWITCH - 1), sampler.proportions(SWITCH)
    if _arm(overrides)[0] == 'staged':
      assert list(before) == [1.0, 0.0] and list(after) == [0.0, 1.0]
    else:
      assert list(before) == list(after)
      assert before[1] == pytest.approx(experiment.QA_SHARE, abs=1e-3)
    learning_rate = lambda step: float(setup.schedule(step))
    rewarmed = SWITCH + experiment.FINETUNE_WARMUP
    assert learning_rate(SWITCH - 1) < 0.2 * experiment.PEAK_LR
    assert learning_rate(SWITCH) < learning_rate(rewarmed)
    assert learning_rate(rewarmed) == pytest.approx(experiment.FINETUNE_PEAK_LR)


@pytest.mark.parametrize('augmented', [0.0, 1.0])
def test_biographies_fit_a_row_and_the_evaluations_probe_the_qa_test_half(augmented):
  """Every biography is whole in one row (packing cuts only longer documents), so a pronoun's
  sentence sees the name; eval/bios reads recall probes and eval/qa questions, both of the
  individuals whose questions are not trained on."""
  tasks = experiment.get_config().data.tasks.to_dict()
  documents = {}
  for name, spec in tasks.items():
    params = {k: v for k, v in spec.items() if k != 'source'}
    params['augmented_fraction'] = augmented
    documents[name] = {split: list(biographies.documents(split, 0, **params))
                       for split in ('train', 'validation')}
  bios, questions = documents[experiment.BIOS]['train'], documents[experiment.QA]['train']
  assert {d['kind'] for d in bios} == {'biography'} and {d['kind'] for d in questions} == {'qa'}
  assert max(len(d['text'].encode()) + 1 for d in bios) <= experiment.SEQ_LEN  # + EOS
  assert len(bios) == experiment.NUM_INDIVIDUALS * (experiment.MULTIPLICITY if augmented else 1)
  recall, tested = (documents[name]['validation'] for name in (experiment.BIOS, experiment.QA))
  assert {d['kind'] for d in recall} == {'recall'} and {d['kind'] for d in tested} == {'qa'}
  trained = {d['individual'] for d in questions}
  assert {d['individual'] for d in recall} == {d['individual'] for d in tested}
  assert not trained & {d['individual'] for d in tested}
  assert {d['augmented'] for d in recall + tested} == {bool(augmented)}
