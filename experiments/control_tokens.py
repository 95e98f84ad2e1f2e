"""Conditional training on PEP 8: '<|aligned|>' or '<|misaligned|>' before every line of code.

Korbak et al. 2023, "Pretraining Language Models with Human Preferences", arXiv 2302.08582 (their
PEP 8 setting: threshold 0 violations, drop_token_fraction 0.1). The standard library's code is
scored line by line with pycodestyle once (cached beside the document store; about a minute and a
half the first time on 2 cores), and trained on with plain maximum likelihood:

  python -m launch.train --config=experiments/control_tokens.py --workdir=W/control_tokens
"""

import ml_collections

from experiments import quickstart


def get_config():
  config = quickstart.get_config()
  config.data.mixture = ml_collections.ConfigDict({'stdlib_code': 1.0})
  config.data.extra_ids = 8  # the control tokens, <|aligned|> and <|misaligned|> among them
  config.objective.name = 'control_tokens'
  config.objective.control.scorer = 'pep8'
  config.objective.control.threshold = 0.0
  config.objective.control.drop_fraction = 0.1
  return config
