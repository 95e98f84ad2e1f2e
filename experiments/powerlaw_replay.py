"""Power-law against constant replay over a sequence of domains (Gandhi et al. 2024, "Catastrophic
Interference is Mitigated in Naturalistic Power-Law Learning Environments", arXiv 2401.10393).

The paper rehearses earlier tasks with a probability that decays as a power law of the time since
each was last seen, as tasks recur in naturalistic environments, and finds it mitigates
catastrophic interference as well as or better than regularisation and rehearsal at a constant
rate. Here the 0.6M-parameter byte-level decoder of experiments/continual_rewarm.py trains from
scratch on three domains one after another, STAGE_STEPS steps each: prose (the Python install's
documentation), code (its standard library), then arithmetic (1- to 3-digit addition and
multiplication, research/data/synthetic/arithmetic.py), at a constant learning rate after warmup,
in three arms of the same compute and data budget:

  none       no replay: every batch is the current domain
  uniform    a quarter of every batch replays the earlier domains equally: the constant replay
             rate of the paper's comparison (data.replay.sampler=power_law with exponent 0; the
             'constant' sampler's fixed mixture would replay arithmetic before it is trained)
  power_law  the same quarter, each earlier domain weighted by (steps since its stage + 1)^-1

each with SEEDS. Before code starts nothing is earlier, so every arm trains on prose alone. The
replay weights are updated every data.mixture_block / 4 = 16 steps (research/data/replay.py).
Every run evaluates each domain every EVAL_EVERY steps, so at every stage's end, and launch.report's
transfer table gives backward transfer (forgetting) and forward transfer (Lopez-Paz & Ranzato
2017, "Gradient Episodic Memory for Continual Learning", arXiv 1706.08840, on losses) per arm:

  python -m launch.sweep --config=experiments/powerlaw_replay.py \
      --workdir=workdirs/powerlaw_replay --parallel=2
  python -m launch.report workdirs/powerlaw_replay --out=docs/results/powerlaw_replay --keep_runs

The sweep is 9 runs of 600 steps of 16 x 128 tokens: 12 min 51 s on 2 cores, two runs at a time.
Results in docs/results/powerlaw_replay.md: without replay the earlier domains are forgotten
(BWT 6.06 nats); both replay arms keep them (BWT 0.018 uniform, -0.006 power-law), power-law
within the noise of uniform (paired, mean final loss -0.026 ± 0.027). The stages start at
fractions of train.steps, so a smoke test of the power_law arm keeps the three domains:

  python -m launch.train --config=experiments/powerlaw_replay.py --workdir=/tmp/powerlaw_replay \
      --config.train.steps=21 --config.eval.every=7
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

DOMAINS = ('stdlib_prose', 'stdlib_code', 'arithmetic')
STAGE_STEPS = 200
EVAL_EVERY = 25  # divides STAGE_STEPS: an evaluation ends every stage
REPLAY_FRACTION = 0.25  # 4 rows of the batch of 16
SEEDS = (0, 1, 2)
ARMS = {  # arm -> data.replay
    'none': {'fraction': 0.0, 'sampler': 'constant', 'exponent': 1.0},
    'uniform': {'fraction': REPLAY_FRACTION, 'sampler': 'power_law', 'exponent': 0.0},
    'power_law': {'fraction': REPLAY_FRACTION, 'sampler': 'power_law', 'exponent': 1.0},
}


def get_config() -> ml_collections.ConfigDict:
  """The power_law arm with seed 0."""
  config = base.get_config()
  rewarm.small_model(config)
  config.data.mixture = ml_collections.ConfigDict({DOMAINS[0]: 1.0})
  config.data.stages = ml_collections.ConfigDict(
      {domain: {'at_fraction': index / len(DOMAINS), 'mixture': {domain: 1.0}}
       for index, domain in enumerate(DOMAINS) if index})
  config.data.replay.update(ARMS['power_law'])
  config.data.mixture_block = 64  # the replay weights are updated every 16 steps
  config.train.steps = config.checkpoint.every = len(DOMAINS) * STAGE_STEPS
  config.eval.every = EVAL_EVERY
  config.schedule.update(name='constant', peak_lr=rewarm.PEAK_LR, warmup_steps=20)
  return config


def get_sweep():
  """Every arm's data.replay with every seed."""
  return [{**{f'data.replay.{key}': value for key, value in replay.items()}, 'seed': seed}
          for replay in ARMS.values() for seed in SEEDS]
