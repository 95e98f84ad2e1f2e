"""Curricula on arithmetic: does the order of the same problems change what is learnt?

Addition of 1- to 4-digit numbers (answers reversed, Lee et al. 2023, arXiv 2307.03381), the
difficulty of a problem being the digits of its larger operand; validation problems are held out of
training (research/data/synthetic/arithmetic.py). The 0.6M-parameter model of
experiments/continual_rewarm.py trains STEPS steps of 16 x 128 tokens (about 4.4 passes over the
packed rows of the NUM_DOCUMENTS training problems) in each order, and every run reports the
validation answer accuracy by digits (research/evaluate.py):

  random        a fresh random order of the packed rows every epoch (the baseline)
  easy_to_hard  every epoch ascending by digits
  folding       DELT's folding ordering, L = 3 ascending passes an epoch over interleaved thirds
                (Dai et al. 2025, arXiv 2506.21545)
  cyclical      the cyclical curriculum, epochs of the easiest 25%, 50%, 100%, 50%, ... of the rows
                (Kesgin & Amasyali, arXiv 2202.05531)
  pacing        a competence curriculum, examples drawn from the easiest c(s) of the rows, c(s) =
                sqrt growing from 10% to all at half the run (Platanios et al. 2019, arXiv 1903.09848)

The curricula pack problems of equal difficulty together (data.order.pack='score'), so a row has
one difficulty and the ordering of rows is an ordering of problems. Packing by score is a change of
its own, so two controls separate it from the order: the random order with score packing, and the
mixing curricula (cyclical, pacing) with random packing. Every arm runs with SEEDS (the model's
initialisation and the data order), and the report gives each arm's mean and standard error.

  python -m launch.sweep --config=experiments/curriculum_arithmetic.py \
      --workdir=workdirs/curriculum_arithmetic --parallel=2
  python -m launch.report workdirs/curriculum_arithmetic --out=docs/results/curriculum_arithmetic \
      --keep_runs
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

TASK = 'addition_curriculum'
NUM_DOCUMENTS = 40_000  # problems per split: 0.40M tokens a pass
STEPS = 900
PEAK_LR = 3e-3
SEEDS = (0, 1, 2)
ARMS = (  # (data.order.name, data.order.pack)
    ('random', 'random'),  # the baseline
    ('random', 'score'),  # control: packing by score alone
    ('easy_to_hard', 'score'),
    ('folding', 'score'),
    ('cyclical', 'score'),
    ('pacing', 'score'),
    ('cyclical', 'random'),  # control: the mixing curricula without packing by score
    ('pacing', 'random'),
)


def get_config() -> ml_collections.ConfigDict:
  """The random-order baseline; the sweep sets the ordering."""
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = ml_collections.ConfigDict({TASK: {
      'source': 'arithmetic', 'num_documents': NUM_DOCUMENTS, 'min_digits': 1, 'max_digits': 4,
      'operations': ('addition',)}})
  config.data.mixture = ml_collections.ConfigDict({TASK: 1.0})
  config.data.order.by = 'difficulty'
  config.eval.update(every=150, batches=16, batch_size=16)
  config.train.steps = config.checkpoint.every = STEPS
  config.schedule.update(name='warmup_cosine', peak_lr=PEAK_LR, warmup_steps=STEPS // 20,
                         final_lr_fraction=0.1)
  return config


def get_sweep():
  """Every arm (ordering and packing) with every seed."""
  return [{'data.order.name': name, 'data.order.pack': pack, 'seed': seed}
          for name, pack in ARMS for seed in SEEDS]
