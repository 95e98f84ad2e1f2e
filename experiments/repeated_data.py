"""Repeated data: does repeating a tiny part of the data many times hurt more than it costs?

Hernandez et al. 2022, "Scaling Laws and Interpretability of Learning from Repeated Data" (arXiv
2205.10487): when 10% of the training tokens are a set of 0.1% of the tokens repeated ~100 times,
an 800M-parameter model's test loss falls to that of a model half its size, the test loss over the
repeated fraction is non-monotone (double descent), and copying (induction heads) degrades first.

Here the 0.6M-parameter byte-level model of experiments/continual_rewarm.py trains STEPS = 600
steps of 16 x 128 tokens (1,228,800 tokens: 9,600 rows, 0.62 passes over the 15,407 packed rows of
the prose corpus, the Python install's documentation). The repeated part is a `subset` task of the
prose training documents (research/data/tasks.py) at mixture weight REPEATED_WEIGHT = 0.1: the
sampler gives it 102 of every 1,024 rows (9.96% of the training tokens, 122,400 tokens). The arms,
each with SEEDS 0, 1 and 2:

  none            prose only (the baseline)
  repeated        REPEATED: 3 documents, 1,305 tokens (0.106% of the training tokens), read 93.8
                  times (122,400 / 1,305); its 11 packed rows are padded, and the runs log
                  86.5-87.3 passes over them (data/repeated/epochs, by seed)
  repeated_1pct   REPEATED_1PCT: 7 documents, 12,276 tokens (0.999%), read 10.0 times (9.6-9.7
                  passes over its 99 packed rows)
  half_model      prose only at d_model 64 instead of 128: half the parameters outside the
                  embedding (262,144 matmul parameters instead of 524,288)

tests/test_repeated_data.py recomputes these numbers. Every run evaluates the prose validation
loss (eval/stdlib_prose/loss) every EVAL_EVERY = 50 steps, to see whether it rises and falls again,
and copying (eval.tasks `copying`, research/data/synthetic/copying.py: answer_loss and
answer_accuracy on the second copy of a random string of 4-16 letters), which no arm trains on:
what the prose taught the model about copying.

  python -m launch.sweep --config=experiments/repeated_data.py \
      --workdir=workdirs/repeated_data --parallel=2
  python -m launch.report workdirs/repeated_data --out=docs/results/repeated_data --keep_runs
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

BASE = 'stdlib_prose'
COPYING = 'copying'
STEPS = 600
EVAL_EVERY = 50
PEAK_LR = 3e-3
SEEDS = (0, 1, 2)
REPEATED_WEIGHT = 0.1  # the repeated part's share of the mixture
# Subsets of the prose training documents: a seeded random sample of `num_documents` (its seed
# picked so that the sample is about 0.1% and 1% of the run's training tokens).
REPEATED = {'source': 'subset', 'task': BASE, 'num_documents': 3, 'seed': 1}
REPEATED_1PCT = {'source': 'subset', 'task': BASE, 'num_documents': 7, 'seed': 17}
HALF_D_MODEL = 64  # the model's d_model is 128; every matmul outside the embedding scales with it
ARMS = {
    'none': {'data.mixture.repeated': 0.0},
    'repeated': {'data.mixture.repeated': REPEATED_WEIGHT},
    'repeated_1pct': {'data.mixture.repeated_1pct': REPEATED_WEIGHT},
    'half_model': {'model.d_model': HALF_D_MODEL},
}


def get_config() -> ml_collections.ConfigDict:
  """Prose only, the repeated subsets defined at weight 0; the sweep sets the arm."""
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = ml_collections.ConfigDict(
      {'repeated': REPEATED, 'repeated_1pct': REPEATED_1PCT})
  config.data.mixture = ml_collections.ConfigDict(
      {BASE: 1.0 - REPEATED_WEIGHT, 'repeated': 0.0, 'repeated_1pct': 0.0})
  config.eval.tasks = (COPYING,)
  config.eval.update(every=EVAL_EVERY, batches=6, batch_size=16)
  config.train.steps = config.checkpoint.every = STEPS
  config.schedule.update(name='warmup_cosine', peak_lr=PEAK_LR, warmup_steps=STEPS // 20,
                         final_lr_fraction=0.1)
  return config


def get_sweep():
  """Every arm with every seed."""
  return [{**overrides, 'seed': seed} for overrides in ARMS.values() for seed in SEEDS]
