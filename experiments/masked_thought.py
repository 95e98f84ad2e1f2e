"""Masked Thought on arithmetic: answer tokens the model reads are masked, at a rate ramping to 0.4.

Chen et al. 2024, "Masked Thought: Simply Masking Partial Reasoning Steps Can Improve Mathematical
Reasoning Learning of Language Models", arXiv 2403.02178. Each problem `12+345=753` is a document;
the prompt ends at '=' and the reversed answer is the "reasoning" the model reads with masks. The
variant `baseline` trains the same model without masking:

  python -m launch.train --config=experiments/masked_thought.py --workdir=W/masked
  python -m launch.train --config=experiments/masked_thought.py:baseline --workdir=W/baseline
"""

import ml_collections

from experiments import quickstart


def get_config(variant: str = 'masked'):
  if variant not in ('masked', 'baseline'):
    raise ValueError(f"Unknown variant {variant!r}; choose 'masked' or 'baseline'.")
  config = quickstart.get_config()
  config.data.tasks = ml_collections.ConfigDict(
      {'sums': {'source': 'arithmetic', 'num_documents': 20_000, 'max_digits': 3}})
  config.data.mixture = ml_collections.ConfigDict({'sums': 1.0})
  config.data.seq_len = 128
  config.data.extra_ids = 8  # the control tokens, [MASK] among them
  config.objective.name = 'masked_thought' if variant == 'masked' else 'causal_lm'
  config.objective.masked_thought.max_rate = 0.4
  config.objective.masked_thought.warmup_fraction = 0.66
  config.objective.masked_thought.delimiter = '='
  return config


def get_sweep():
  return [{'objective.name': 'masked_thought'}, {'objective.name': 'causal_lm'}]
