"""Quickstart: a 3.4M-parameter byte-level decoder on the Python install's prose and code, on CPU.

  python -m launch.train --config=experiments/quickstart.py --workdir=workdirs/quickstart
"""

from experiments import base


def get_config():
  config = base.get_config()
  config.train.steps = 600
  config.train.batch_size = 16
  config.schedule.peak_lr = 3e-3
  config.schedule.warmup_steps = 60
  config.eval.every = 200
  config.checkpoint.every = 200
  return config
