"""MeCo: metadata conditioning, then a cooldown without metadata, on prose and code.

Gao et al. 2025, "Metadata Conditioning Accelerates Language Model Pre-training", arXiv
2501.01956. Every document is preceded by `URL: <source>\\n\\n` (its task and top-level module, no
loss on those tokens) for the first 90% of training; the last 10% reads plain documents, and
evaluation is always on plain documents. The 0.6M-parameter toy model of
experiments/continual_rewarm.py (16 x 128 tokens a step) trains STEPS steps on the Python install's
prose and code; the variant `baseline` never shows metadata:

  python -m launch.train --config=experiments/meco.py --workdir=W/meco
  python -m launch.train --config=experiments/meco.py:baseline --workdir=W/baseline

The study (SEEDS.md finding 8, docs/results/meco.md), 3 seeds an arm: MeCo for STEPS steps; the
baseline for STEPS and for 1.5 x STEPS steps (the paper: MeCo matches the baseline with 33% less
data, so MeCo at STEPS should reach the longer baseline's loss); and MeCo without the cooldown
(metadata to the end, evaluated without it: what the cooldown buys at tag-free inference):

  python -m launch.sweep --config=experiments/meco.py --workdir=W --parallel=2
"""

import ml_collections

from experiments import continual_rewarm

STEPS = 400
SEEDS = (0, 1, 2)
ARMS = (
    {'objective.name': 'meco'},
    {'objective.name': 'causal_lm'},
    {'objective.name': 'causal_lm', 'train.steps': STEPS * 3 // 2,
     'checkpoint.every': STEPS * 3 // 2},
    {'objective.name': 'meco', 'objective.meco.cooldown_fraction': 0.0},
)


def get_config(variant: str = 'meco') -> ml_collections.ConfigDict:
  if variant not in ('meco', 'baseline'):
    raise ValueError(f"Unknown variant {variant!r}; choose 'meco' or 'baseline'.")
  config = continual_rewarm.toy_run(STEPS)
  config.objective.name = 'meco' if variant == 'meco' else 'causal_lm'
  config.objective.meco.cooldown_fraction = 0.1
  return config


def get_sweep():
  """Every arm with every seed."""
  return [{**arm, 'seed': seed} for arm in ARMS for seed in SEEDS]
