"""Domain upsampling at the end of training: does a small hard-skill domain, upsampled only in the
last steps, teach that skill at little cost to the general loss? (Blakeney et al. 2024, "Does your
data spark joy? Performance gains from domain upsampling at the end of training", arXiv
2406.03476; SEEDS.md section 9 item 10.)

The general mixture is prose and code (stdlib_prose and stdlib_code, the built-in tasks, one to
one); the skill is 1-digit addition with reversed answers (research/data/synthetic/arithmetic.py):
the 100 facts a+b, with `holdout=0`, so the validation problems are training problems and answer
accuracy measures recall of the facts, not arithmetic on unseen problems. (Within this budget the
0.6M-parameter model learns no held-out addition: 1- to 3-digit and 2-digit problems with held-out
validation stayed near 0 answer accuracy in every arm of one-seed trials of 800 and 360 steps.)
The arithmetic weight is a ratio to the general data (prose and code keep 0.5 each), so changing
it changes its share alone: weight w is a share w / (1 + w) of the rows. The 0.6M-parameter model
of experiments/continual_rewarm.py trains STEPS steps of 16 x 128 tokens with warmup and cosine
decay; the arms, each with SEEDS:

  window 0%        arithmetic at BASE_WEIGHT throughout (the baseline)
  window 10/20/40% BASE_WEIGHT, then UPSAMPLED_WEIGHT from step (1 - window) x STEPS on
                   (the data.stages entry `upsample`)
  constant         arithmetic at EQUAL_TOKENS_WEIGHT throughout: as many arithmetic rows as the
                   20% window, a share 0.8 x share(BASE_WEIGHT) + 0.2 x share(UPSAMPLED_WEIGHT)

The upsampled weight is the same in every window, as in the paper (one upsampled mixture, its
duration varied): a longer window therefore also trains on more arithmetic, a share
share(BASE_WEIGHT) + window x (share(UPSAMPLED_WEIGHT) - share(BASE_WEIGHT)) of the rows (9.1%,
15.7%, 22.3% and 35.5% for the windows of 0, 10, 20 and 40%), and the constant arm separates the
timing of the arithmetic from its amount at the 20% window's total. Every arm has the `upsample`
stage; the 0% and constant arms give it the weight of data.mixture, so their mixture never
changes. Every eval reports eval/addition/answer_accuracy and the prose and code losses.

  python -m launch.sweep --config=experiments/end_upsampling.py \
      --workdir=workdirs/end_upsampling --parallel=2
  python -m launch.report workdirs/end_upsampling --out=docs/results/end_upsampling --keep_runs
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

TASK = 'addition'
GENERAL = ('stdlib_prose', 'stdlib_code')
NUM_DOCUMENTS = 40_000  # problems per split
STEPS = 360
PEAK_LR = 3e-3
BASE_WEIGHT = 0.1  # arithmetic rows per general row before the window: a 9.1% share
UPSAMPLED_WEIGHT = 3.0  # in the window: a 75% share
WINDOWS = (0.0, 0.1, 0.2, 0.4)  # the upsampled fraction of the run, at its end
EQUAL_TOKENS_WINDOW = 0.2
SEEDS = (0, 1, 2)


def share(weight: float) -> float:
  """The share of the rows that arithmetic weight `weight` gives beside the general data's 1."""
  return weight / (1 + weight)


def constant_weight(window: float) -> float:
  """The constant arithmetic weight whose share over the run equals that of upsampling in the last
  `window` of it (rounded to 4 decimals)."""
  total = (1 - window) * share(BASE_WEIGHT) + window * share(UPSAMPLED_WEIGHT)
  return round(total / (1 - total), 4)


EQUAL_TOKENS_WEIGHT = constant_weight(EQUAL_TOKENS_WINDOW)


def _mixture(weight: float) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({**{task: 0.5 for task in GENERAL}, TASK: weight})


def get_config() -> ml_collections.ConfigDict:
  """The 20% window; the sweep sets the window and the weights."""
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = ml_collections.ConfigDict({TASK: {
      'source': 'arithmetic', 'num_documents': NUM_DOCUMENTS, 'min_digits': 1, 'max_digits': 1,
      'holdout': 0.0, 'operations': ('addition',)}})
  config.data.mixture = _mixture(BASE_WEIGHT)
  config.data.stages = ml_collections.ConfigDict({'upsample': {
      'at_fraction': 1 - EQUAL_TOKENS_WINDOW, 'mixture': _mixture(UPSAMPLED_WEIGHT)}})
  config.eval.update(every=STEPS // 10, batches=4, batch_size=16)
  config.train.steps = config.checkpoint.every = STEPS
  config.schedule.update(name='warmup_cosine', peak_lr=PEAK_LR, warmup_steps=STEPS // 20,
                         final_lr_fraction=0.1)
  return config


def arms() -> list[dict]:
  """The overrides of every arm: the 0% window (the stage at the base weight), the windows of
  WINDOWS, the equal-token constant."""
  stage = 'data.stages.upsample'
  return [{f'{stage}.mixture.{TASK}': BASE_WEIGHT}] + [
      {f'{stage}.at_fraction': round(1 - window, 4)} for window in WINDOWS if window] + [
      {f'data.mixture.{TASK}': EQUAL_TOKENS_WEIGHT, f'{stage}.mixture.{TASK}': EQUAL_TOKENS_WEIGHT}]


def get_sweep():
  """Every arm with every seed."""
  return [{**arm, 'seed': seed} for arm in arms() for seed in SEEDS]
