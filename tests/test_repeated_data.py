"""experiments/repeated_data.py: every point of its sweep is a valid run, and its repeated subsets,
mixture weight and half-size model are what its docstring states."""

import jax
import pytest

from experiments import repeated_data as experiment
from research import config as config_lib
from research.analysis import sweep
from research.data import sampler, tasks, vocabularies
from research.model import transformer


def _train_tokens(config) -> int:
  return config.train.steps * config.train.batch_size * config.data.seq_len


def test_every_arm_and_seed_is_a_valid_run(tmp_path):
  config = experiment.get_config()
  points = sweep.points(experiment.get_sweep(), config)
  assert len(points) == len(experiment.ARMS) * len(experiment.SEEDS) == 12
  mixtures = {}
  for point in points:
    run = sweep.point_config(config, point)
    config_lib.validate(run, str(tmp_path / point.name), jax.devices())
    mixtures[point.name.rsplit(',seed=', 1)[0]] = sampler.normalised_weights(
        run.data.mixture, 'data.mixture')
  assert mixtures == {
      'data.mixture.repeated=0.0': {experiment.BASE: 1.0},
      'data.mixture.repeated=0.1': {experiment.BASE: 0.9, 'repeated': 0.1},
      'data.mixture.repeated_1pct=0.1': {experiment.BASE: 0.9, 'repeated_1pct': 0.1},
      'model.d_model=64': {experiment.BASE: 1.0}}
  assert _train_tokens(config) == 1_228_800


@pytest.mark.parametrize('task, documents, tokens, percent, repeats', [
    ('repeated', 3, 1305, 0.106, 93.8),
    ('repeated_1pct', 7, 12276, 0.999, 10.0),
])
def test_a_repeated_subset_has_the_stated_tokens_and_repeats(task, documents, tokens, percent,
                                                             repeats):
  """The subset's tokens (bytes and an EOS a document) as a share of the run's, and how many times
  the sampler's rows of the task (102 of every 1,024 at weight 0.1) read that many tokens."""
  config = experiment.get_config()
  tasks.register_config_tasks(config.data)
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary)
  kept = list(tasks.task_spec(task).documents('train'))
  size = sum(len(vocabulary.encode(d['text'])) + 1 for d in kept)
  share = sampler.block_shares({experiment.BASE: 0.9, task: 0.1}, config.data.mixture_block)[task]
  assert (len(kept), size) == (documents, tokens)
  assert round(100 * size / _train_tokens(config), 3) == percent
  assert share * config.data.mixture_block == 102
  assert round(share * _train_tokens(config) / size, 1) == repeats


def test_the_half_model_has_half_the_non_embedding_parameters():
  config = experiment.get_config()
  full = transformer.ModelConfig.from_config(config.model)
  config.model.d_model = experiment.HALF_D_MODEL
  half = transformer.ModelConfig.from_config(config.model)
  outside_embedding = [transformer.matmul_params(m) - m.vocab_size * m.d_model
                       for m in (full, half)]
  assert outside_embedding == [524_288, 262_144]
