"""Cross-adaptation: a causal LM switched to prefix LM for the last 20% of its steps.

Wang et al. 2022, "What Language Model Architecture and Pretraining Objective Work Best for
Zero-Shot Generalization?" (arXiv 2204.05832) adapt a causal decoder to a non-causal (prefix-LM)
one by continuing its training on the prefix-LM objective for a small share of the compute, and
find that the adapted model gets most of the prefix LM's benefit on prefix-conditioned tasks while
a causal model read with a bidirectional prefix does not. Here one run does it with an objective
phase (`config.phases.adapt.objective`, research/objectives/registry.objective_phases).

Arms (3 seeds each), the 0.6M-parameter model of experiments/continual_rewarm.py, STEPS steps of
16 x 128 tokens of the default prose + code mixture:
  causal    objective causal_lm throughout (the phase switches causal_lm to causal_lm: a no-op)
  adapted   causal_lm, then prefix_lm (T5's S_50 with the [S2S] mode token) from 80% of the steps
  prefix    prefix_lm throughout

Every run is evaluated left to right (`eval/<task>/causal_lm/loss`) and on prefix LM
(`eval/<task>/S_50/loss`: the second half of each document given the first), the prefix read as
the run's last phase trains (bidirectionally for adapted and prefix, causally for causal).

  python -m launch.sweep --config=experiments/cross_adaptation.py \
      --workdir=workdirs/cross_adaptation --parallel=2
  python -m launch.report workdirs/cross_adaptation --out=docs/results/cross_adaptation --keep_runs

Results: docs/results/cross_adaptation.md.
"""

import ml_collections

from experiments import continual_rewarm

STEPS = 600
SEEDS = (0, 1, 2)
ARMS = {'causal': ('causal_lm', 'causal_lm'), 'adapted': ('causal_lm', 'prefix_lm'),
        'prefix': ('prefix_lm', 'prefix_lm')}  # (objective from step 0, from the phase on)


def get_config():
  config = continual_rewarm.toy_run(STEPS)
  config.data.extra_ids = 32  # the mode tokens
  config.phases = ml_collections.ConfigDict(
      {'adapt': {'at_fraction': 0.8, 'objective': {'name': 'prefix_lm'}}})
  config.eval.objectives = ('causal_lm', 'S_50')
  return config


def get_sweep():
  """Every arm, every seed."""
  return [{'objective.name': first, 'phases.adapt.objective.name': then, 'seed': seed}
          for first, then in ARMS.values() for seed in SEEDS]
