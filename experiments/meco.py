"""MeCo: metadata conditioning, then a cooldown without metadata, on prose and code.

Gao et al. 2025, "Metadata Conditioning Accelerates Language Model Pre-training", arXiv
2501.01956. Every document is preceded by `URL: <source>\\n\\n` (its task and top-level module, no
loss on those tokens) for the first 90% of training; the last 10% reads plain documents, and
evaluation is always on plain documents. The variant `baseline` never shows metadata:

  python -m launch.train --config=experiments/meco.py --workdir=W/meco
  python -m launch.train --config=experiments/meco.py:baseline --workdir=W/baseline
"""

from experiments import quickstart


def get_config(variant: str = 'meco'):
  if variant not in ('meco', 'baseline'):
    raise ValueError(f"Unknown variant {variant!r}; choose 'meco' or 'baseline'.")
  config = quickstart.get_config()
  config.objective.name = 'meco' if variant == 'meco' else 'causal_lm'
  config.objective.meco.cooldown_fraction = 0.1
  return config


def get_sweep():
  return [{'objective.name': 'meco'}, {'objective.name': 'causal_lm'}]
