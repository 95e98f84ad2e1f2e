"""RegMix at toy scale: which mix of prose, code and arithmetic minimises the loss on code?

Liu et al. 2024, "RegMix: Data Mixture as Regression for Language Model Pre-training",
arXiv 2407.01492. NUM_PROXIES mixtures of the three built-in domains are drawn from the RegMix
prior (research/analysis/regmix.py: uniform token prior, concentrations log-spaced over [0.1, 5], weights
below MINIMUM dropped and the rest on a grid of MINIMUM, deduplicated; seed SEED, so the sweep
is the same every time). Each trains the 0.6M-parameter model of experiments/continual_rewarm.py
for PROXY_STEPS steps at a constant learning rate after warmup (the paper's proxy schedule), with
all three domains evaluated whatever the mixture (a weight of 0 drops a task from training only).
The regression from the weights to TARGET then picks the mixture for a run 4x longer.

  python -m launch.sweep --config=experiments/regmix.py --workdir=workdirs/regmix/proxies
  python -m launch.regmix workdirs/regmix/proxies --target=eval/stdlib_code/loss \
      --out=workdirs/regmix/best_mixture.py
  python -m launch.train --config=experiments/regmix.py:target --workdir=workdirs/regmix/target
  python -m launch.train --config=experiments/regmix.py:uniform --workdir=workdirs/regmix/uniform
  python -m launch.regmix workdirs/regmix/proxies \
      --target=eval/stdlib_prose/loss,eval/stdlib_code/loss,eval/arithmetic/loss \
      --out=workdirs/regmix/best_mixture_mean.py
  python -m launch.train --config=experiments/regmix.py:mean_target \
      --workdir=workdirs/regmix/mean_target

`:target` reads the mixture launch.regmix wrote (BEST_MIXTURE_FILE, relative to where the
commands run) for TARGET, `:mean_target` the one for MEAN_TARGET (the mean loss over the three
domains, a target no single domain wins); `:uniform` is the same longer run on equal weights, the
baseline to beat.
MINIMUM follows the paper's rule of at least ~100 examples of a domain in a proxy run: 2% of
300 x 16 examples.
"""

import os

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm
from research.analysis import regmix

TASKS = ('stdlib_prose', 'stdlib_code', 'arithmetic')
TARGET = 'eval/stdlib_code/loss'  # what launch.regmix --target minimises
# The second target: the mean loss over the three domains, which no single domain's data wins.
MEAN_TARGET = ','.join(f'eval/{task}/loss' for task in TASKS)
NUM_PROXIES = 32
PROXY_STEPS = 300
TARGET_STEPS = 4 * PROXY_STEPS
SEED = 0  # of the sampled mixtures
MINIMUM = 0.02  # the smallest nonzero weight, and the grid of the weights
PEAK_LR = 3e-3
BEST_MIXTURE_FILE = 'workdirs/regmix/best_mixture.py'
MEAN_MIXTURE_FILE = 'workdirs/regmix/best_mixture_mean.py'


def proxy_config() -> ml_collections.ConfigDict:
  """One proxy run: equal weights here; the sweep sets every data.mixture.<task>."""
  config = base.get_config()
  rewarm.small_model(config)
  config.data.mixture = ml_collections.ConfigDict({task: 1 / len(TASKS) for task in TASKS})
  config.eval.tasks = TASKS  # every domain evaluated, also those a mixture drops
  config.eval.every = 100
  config.train.steps = config.checkpoint.every = PROXY_STEPS
  config.schedule.update(name='constant', peak_lr=PEAK_LR, warmup_steps=PROXY_STEPS // 10)
  return config


def uniform_config() -> ml_collections.ConfigDict:
  """The longer run on equal weights, warmup and cosine decay."""
  config = proxy_config()
  config.train.steps = config.checkpoint.every = TARGET_STEPS
  config.eval.every = 200
  config.schedule.update(name='warmup_cosine', warmup_steps=TARGET_STEPS // 20,
                         final_lr_fraction=0.1)
  return config


def predicted_config(name: str, path: str, target: str) -> ml_collections.ConfigDict:
  """The longer run on the mixture launch.regmix wrote to `path` for `target`."""
  if not os.path.isfile(path):
    raise ValueError(f'experiments/regmix.py:{name} reads {path}, which does not exist; write it '
                     'with python -m launch.regmix workdirs/regmix/proxies '
                     f'--target={target} --out={path}.')
  config = uniform_config()
  with open(path, encoding='utf-8') as f:
    exec(compile(f.read(), path, 'exec'), {'config': config})  # sets data.mixture
  return config


def get_config(arg: str = 'proxy') -> ml_collections.ConfigDict:
  configs = {'proxy': proxy_config, 'uniform': uniform_config,
             'target': lambda: predicted_config('target', BEST_MIXTURE_FILE, TARGET),
             'mean_target': lambda: predicted_config('mean_target', MEAN_MIXTURE_FILE,
                                                     MEAN_TARGET)}
  if arg not in configs:
    raise ValueError(f'experiments/regmix.py:{arg}: choose one of {sorted(configs)}.')
  return configs[arg]()


def get_sweep():
  """NUM_PROXIES mixtures from the RegMix prior, as data.mixture.<task> overrides."""
  mixtures_NT = regmix.sample_mixtures(TASKS, NUM_PROXIES, SEED, minimum=MINIMUM)
  return [{f'data.mixture.{task}': float(w) for task, w in zip(TASKS, row)}
          for row in mixtures_NT]
