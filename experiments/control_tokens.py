"""Conditional training on PEP 8: '<|aligned|>' or '<|misaligned|>' before every line of code.

Korbak et al. 2023, "Pretraining Language Models with Human Preferences", arXiv 2302.08582 (their
PEP 8 setting: threshold 0 violations, drop_token_fraction 0.1). The standard library's code is
scored line by line with pycodestyle once (cached beside the document store; about a minute and a
half the first time on 2 cores), and trained on with plain maximum likelihood by the 0.6M-parameter
toy model of experiments/continual_rewarm.py (16 x 128 tokens a step) for STEPS steps:

  python -m launch.train --config=experiments/control_tokens.py --workdir=W/control_tokens

The study (SEEDS.md finding 7, docs/results/control_tokens.md) sweeps conditional training against
plain maximum likelihood (MLE) on the same code, 3 seeds each, then samples from every run under
'<|aligned|>', '<|misaligned|>' and no prompt and counts PEP 8 violations (`launch.generate
--score=pep8`):

  python -m launch.sweep --config=experiments/control_tokens.py --workdir=W --parallel=2
"""

import ml_collections

from experiments import continual_rewarm

STEPS = 600
SEEDS = (0, 1, 2)


def get_config():
  config = continual_rewarm.toy_run(STEPS)
  config.data.mixture = ml_collections.ConfigDict({'stdlib_code': 1.0})
  config.data.extra_ids = 8  # the control tokens, <|aligned|> and <|misaligned|> among them
  config.objective.name = 'control_tokens'
  config.objective.control.scorer = 'pep8'
  config.objective.control.threshold = 0.0
  config.objective.control.drop_fraction = 0.1
  return config


def get_sweep():
  """Conditional training and MLE (the same vocabulary, so the same model), every seed."""
  return [{'objective.name': name, 'seed': seed}
          for name in ('control_tokens', 'causal_lm') for seed in SEEDS]
