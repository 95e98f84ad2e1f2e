"""Quickstart: a 4.3M-parameter byte-level decoder on the Python install's prose and code, on CPU.

300 steps of 8 x 256 tokens (0.6M tokens) take about 2 minutes on 2 CPU cores:

  python -m launch.train --config=experiments/quickstart.py --workdir=workdirs/quickstart
"""

from experiments import base
from research.analysis import sweep


def get_config():
  config = base.get_config()
  config.train.steps = 300
  config.train.batch_size = 8
  config.schedule.peak_lr = 3e-3
  config.schedule.warmup_steps = 30
  config.eval.every = 100
  config.eval.batch_size = 8
  config.checkpoint.every = 100
  return config


def get_sweep():
  """Two peak learning rates by two seeds: python -m launch.sweep --config=experiments/quickstart.py
  --workdir=DIR."""
  return sweep.grid(**{'schedule.peak_lr': [1e-3, 3e-3], 'seed': [0, 1]})
