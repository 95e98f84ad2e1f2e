"""Continual pretraining with replay, and the infinite schedule (Ibrahim et al. 2024, "Simple and
Scalable Strategies to Continually Pre-train Large Language Models", arXiv 2403.08763).

From the prose-pretrained model of experiments/continual_rewarm.py, continue on code with the
learning rate re-warmed (1% of the continuation, to the pretraining peak) and re-decayed, while a
fraction {0, 1, 5, 25}% of the examples replays prose. Replay replaces new examples (the budget
stays the same). The fractions are mixture weights, exact in every block of
`data.mixture_block` = 1024 examples: a batch of 16 rows cannot hold 1%, and
`data.replay.fraction` (whole rows of every batch) needs batches of 100 rows or more for that.
Two baselines: the infinite schedule (pretraining ends at a constant LR, the continuation goes
on at that constant and anneals at the end, with no re-warming), and training on the union of
prose and code from scratch for the whole budget.

Every arm runs with the seeds of SEEDS (the pretraining runs are one each, shared by the
continuations):

  python -m launch.train --config=experiments/continual_rewarm.py:pretrain \
      --workdir=workdirs/continual_rewarm/pretrain
  python -m launch.sweep --config=experiments/continual_replay.py \
      --workdir=workdirs/continual_replay/replay
  python -m launch.train --config=experiments/continual_replay.py:pretrain_infinite \
      --workdir=workdirs/continual_replay/pretrain_infinite
  python -m launch.sweep --config=experiments/continual_replay.py:infinite \
      --workdir=workdirs/continual_replay/infinite
  python -m launch.sweep --config=experiments/continual_replay.py:union \
      --workdir=workdirs/continual_replay/union
"""

import ml_collections

from experiments import continual_rewarm as rewarm
from research.analysis import sweep

INFINITE_PRETRAIN_DIR = 'workdirs/continual_replay/pretrain_infinite'
CONST_FRACTION = 0.5  # the infinite schedule's constant LR, a fraction of the peak
SEEDS = (0, 1, 2)


def replay_config() -> ml_collections.ConfigDict:
  """The re-warmed continuation of continual_rewarm.py with a prose weight (0 = no replay)."""
  config = rewarm.continue_config()
  config.data.mixture = ml_collections.ConfigDict({rewarm.DOWNSTREAM: 1.0, rewarm.UPSTREAM: 0.0})
  return config


def pretrain_infinite_config() -> ml_collections.ConfigDict:
  """Pretraining on prose with the infinite schedule up to its constant phase (no anneal)."""
  config = rewarm.pretrain_config()
  config.schedule.update(name='infinite', cooldown_fraction=0.2, const_lr_fraction=CONST_FRACTION,
                         anneal_fraction=0.0, final_lr_fraction=rewarm.FLOOR)
  return config


def infinite_config() -> ml_collections.ConfigDict:
  """The continuation at the constant LR, annealed over its last 10% to the pretraining floor."""
  config = replay_config()
  config.init.path = INFINITE_PRETRAIN_DIR
  const_lr = CONST_FRACTION * rewarm.PEAK_LR
  config.schedule.update(name='infinite', peak_lr=const_lr, warmup_steps=0, cooldown_fraction=0.0,
                         const_lr_fraction=1.0, anneal_fraction=0.1,
                         final_lr_fraction=rewarm.FLOOR * rewarm.PEAK_LR / const_lr)
  return config


def union_config() -> ml_collections.ConfigDict:
  """Prose and code together from scratch, for the pretraining and continuation budgets: the
  same number of examples of each domain as pretraining plus continuation, shuffled together."""
  config = rewarm.pretrain_config()
  total = rewarm.PRETRAIN_STEPS + rewarm.CONTINUE_STEPS
  config.data.mixture = ml_collections.ConfigDict({rewarm.UPSTREAM: rewarm.PRETRAIN_STEPS / total,
                                                   rewarm.DOWNSTREAM: rewarm.CONTINUE_STEPS / total})
  config.eval.tasks = ()
  config.train.steps = config.checkpoint.every = rewarm.PRETRAIN_STEPS + rewarm.CONTINUE_STEPS
  return config


def get_config(arg: str = 'replay') -> ml_collections.ConfigDict:
  configs = {'replay': replay_config, 'pretrain_infinite': pretrain_infinite_config,
             'infinite': infinite_config, 'union': union_config}
  if arg not in configs:
    raise ValueError(f'experiments/continual_replay.py:{arg}: choose one of {sorted(configs)}.')
  return configs[arg]()


def get_sweep(arg: str = 'replay'):
  """Every arm with every seed of SEEDS: for `replay`, prose replayed at 0, 1, 5 and 25% of the
  examples; `infinite` and `union` have one arm each. The seed orders the continuation's data
  (every continuation starts from the same pretrained parameters) and, for `union`, also draws
  the initialisation."""
  get_config(arg)  # the same check
  if arg == 'pretrain_infinite':
    raise ValueError('experiments/continual_replay.py:pretrain_infinite has no sweep; it is one '
                     'run, the start of :infinite.')
  seeds = [{'seed': seed} for seed in SEEDS]
  if arg != 'replay':
    return seeds
  fractions = [0.0, 0.01, 0.05, 0.25]
  arms = sweep.zipped(**{f'data.mixture.{rewarm.UPSTREAM}': fractions,
                         f'data.mixture.{rewarm.DOWNSTREAM}': [1 - f for f in fractions]})
  return [{**arm, **seed} for arm in arms for seed in seeds]
