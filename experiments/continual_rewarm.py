"""Continual pretraining: how to re-warm the learning rate (Gupta et al. 2023, "Continual
Pre-Training of Large Language Models: How to (re)warm your model?", arXiv 2308.04014).

A 0.6M-parameter byte-level decoder is pretrained on prose (the Python install's documentation)
with warmup and cosine decay to a floor of 0.1 x the peak, then continued on code (its standard
library) with the learning rate re-warmed from that floor to a new peak over {0, 0.5, 1, 2}% of
the continuation and re-decayed by cosine, the peak {0.5, 1, 2} x the pretraining peak; beside
them, a continuation at the floor LR (no re-warming) and a model trained on code from scratch.
Both domains are evaluated throughout: prose is upstream (forgetting), code downstream
(adaptation). Every continuation arm and the scratch run have the seeds of SEEDS; the pretraining
is one run, shared (a continuation's seed orders its data):

  python -m launch.train --config=experiments/continual_rewarm.py:pretrain \
      --workdir=workdirs/continual_rewarm/pretrain
  python -m launch.sweep --config=experiments/continual_rewarm.py \
      --workdir=workdirs/continual_rewarm/continue --parallel=2
  python -m launch.sweep --config=experiments/continual_rewarm.py:scratch \
      --workdir=workdirs/continual_rewarm/scratch --parallel=2

The continuation reads the pretrained run from `init.path` (default
workdirs/continual_rewarm/pretrain, relative to where the commands run).
"""

import ml_collections

from experiments import base
from research.analysis import sweep

PRETRAIN_STEPS = 1000
CONTINUE_STEPS = 400
PEAK_LR = 3e-3
FLOOR = 0.1  # the cosine floor as a fraction of the peak
PRETRAIN_DIR = 'workdirs/continual_rewarm/pretrain'
UPSTREAM, DOWNSTREAM = 'stdlib_prose', 'stdlib_code'
SEEDS = (0, 1, 2)


def small_model(config: ml_collections.ConfigDict) -> None:
  """The toy model and batch of the continual-pretraining experiments."""
  config.model.update(d_model=128, num_layers=2, num_heads=2, head_dim=64, mlp_dim=512)
  config.data.seq_len = 128
  config.train.batch_size = 16
  config.train.log_every = 10
  config.eval.update(every=20, batches=4, batch_size=16)


def toy_run(steps: int) -> ml_collections.ConfigDict:
  """The toy model trained `steps` steps at peak PEAK_LR after warmup over 5% of them (cosine), a
  checkpoint at the end and 10 evaluations: the short studies of issues 23 and 24."""
  config = base.get_config()
  small_model(config)
  config.train.steps = config.checkpoint.every = steps
  config.eval.every = steps // 10
  config.schedule.update(peak_lr=PEAK_LR, warmup_steps=steps // 20)
  return config


def pretrain_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  small_model(config)
  config.data.mixture = ml_collections.ConfigDict({UPSTREAM: 1.0})
  config.eval.tasks = (DOWNSTREAM,)
  config.eval.every = 100
  config.train.steps = PRETRAIN_STEPS
  config.schedule.update(name='warmup_cosine', peak_lr=PEAK_LR, warmup_steps=20,
                         final_lr_fraction=FLOOR)
  config.checkpoint.every = PRETRAIN_STEPS
  return config


def continue_config() -> ml_collections.ConfigDict:
  """Continued on code from the pretrained checkpoint: parameters only, fresh Adam state, the
  schedule re-warmed from the pretraining's final LR (1% warmup to the same peak by default)."""
  config = base.get_config()
  small_model(config)
  config.data.mixture = ml_collections.ConfigDict({DOWNSTREAM: 1.0})
  config.eval.tasks = (UPSTREAM,)
  config.train.steps = CONTINUE_STEPS
  config.init.path = PRETRAIN_DIR
  config.schedule.update(name='rewarm', peak_lr=PEAK_LR, warmup_steps=CONTINUE_STEPS // 100,
                         start_lr=FLOOR * PEAK_LR, final_lr_fraction=FLOOR)
  config.checkpoint.every = CONTINUE_STEPS
  return config


def scratch_config() -> ml_collections.ConfigDict:
  """The same continuation budget on code from a random initialisation."""
  config = continue_config()
  config.init.path = ''
  config.eval.every = 100
  config.schedule.update(name='warmup_cosine', warmup_steps=20)
  return config


def get_config(arg: str = 'continue') -> ml_collections.ConfigDict:
  configs = {'pretrain': pretrain_config, 'continue': continue_config, 'scratch': scratch_config}
  if arg not in configs:
    raise ValueError(f'experiments/continual_rewarm.py:{arg}: choose one of {sorted(configs)}.')
  return configs[arg]()


def get_sweep(arg: str = 'continue'):
  """Every arm with every seed of SEEDS. `continue`: re-warmed over 2% of the continuation to a
  peak of {0.5, 1, 2} x the pretraining peak, the 2x peak also without warmup, and the no-rewarm
  baseline (constant at the pretraining's final LR); `scratch` has one arm."""
  get_config(arg)  # the same check
  if arg == 'pretrain':
    raise ValueError('experiments/continual_rewarm.py:pretrain has no sweep; it is one run, the '
                     'start of every continuation.')
  if arg == 'scratch':
    return sweep.seeded([{}], SEEDS)
  warmup = round(0.02 * CONTINUE_STEPS)
  arms = [{'schedule.peak_lr': factor * PEAK_LR, 'schedule.warmup_steps': warmup}
          for factor in (0.5, 1, 2)]
  arms += [{'schedule.peak_lr': 2 * PEAK_LR, 'schedule.warmup_steps': 0},
           {'schedule.name': 'constant', 'schedule.peak_lr': round(FLOOR * PEAK_LR, 10),
            'schedule.warmup_steps': 0}]
  return sweep.seeded(arms, SEEDS)
