"""Data Diet: keep the examples with the highest EL2N or GraNd early in training, or random ones?

Paul, Ganguli & Dziugaite 2021, "Deep Learning on a Data Diet: Finding Important Examples Early in
Training" (arXiv 2107.07075): score every training example by EL2N (the norm of softmax minus
one-hot) or GraNd (the loss-gradient norm), averaged over runs of several seeds early in training,
keep the highest-scoring fraction and train from scratch on it; on CIFAR-10 half the data goes with
no loss of test accuracy, where random pruning loses. Here the examples are arithmetic problems
(1- to 3-digit addition and multiplication, answers reversed), the model the 0.6M-parameter one
of experiments/continual_rewarm.py, and the runs see the same STEPS x 16 x 128 tokens whatever they
keep (a pruned set is repeated more often, as the paper trains for a fixed number of steps).

  python -m launch.sweep --config=experiments/data_diet.py:score_run \
      --workdir=workdirs/data_diet/score_runs
  python -m launch.score --task=arithmetic_diet --name=diet --scores=el2n,grand \
      --checkpoint=workdirs/data_diet/score_runs/seed=0,workdirs/data_diet/score_runs/seed=1,\
workdirs/data_diet/score_runs/seed=2
  python -m launch.sweep --config=experiments/data_diet.py --workdir=workdirs/data_diet/pruned

`:score_run` trains SCORE_STEPS steps (about one epoch, "early in training") for each of
SCORE_SEEDS; launch.score averages both scores over the three checkpoints and stores them beside
the task's document store as `diet`. The sweep then keeps the highest `diet:el2n`, the highest
`diet:grand` or a random KEPT fraction of the training documents, and one run keeps them all.
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm
from research.analysis import sweep

TASK = 'arithmetic_diet'
NUM_DOCUMENTS = 20_000  # problems per split: about 130 steps of 16 x 128 tokens an epoch
STEPS = 1500
SCORE_STEPS = 150
SCORE_SEEDS = (0, 1, 2)
KEPT = (0.5, 0.25)
PEAK_LR = 3e-3


def get_config(arg: str = 'prune') -> ml_collections.ConfigDict:
  """`prune`: the from-scratch run on the kept documents (all of them unless the sweep prunes);
  `score_run`: a short run of the scoring models."""
  if arg not in ('prune', 'score_run'):
    raise ValueError(f'experiments/data_diet.py:{arg}: choose prune or score_run.')
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = ml_collections.ConfigDict(
      {TASK: {'source': 'arithmetic', 'num_documents': NUM_DOCUMENTS}})
  config.data.mixture = ml_collections.ConfigDict({TASK: 1.0})
  config.data.select.keep = 'highest'  # Data Diet keeps the hardest (the sweep sets by, fraction)
  config.eval.update(every=250, batches=16, batch_size=16)
  steps = STEPS if arg == 'prune' else SCORE_STEPS
  config.train.steps = config.checkpoint.every = steps
  config.schedule.update(name='warmup_cosine', peak_lr=PEAK_LR, warmup_steps=steps // 20,
                         final_lr_fraction=0.1)
  return config


def get_sweep(arg: str = 'prune'):
  """With :score_run, the scoring seeds; else the kept fractions by EL2N, GraNd and at random,
  and all the data."""
  if arg == 'score_run':
    return [{'seed': seed} for seed in SCORE_SEEDS]
  return sweep.grid(**{'data.select.by': ['diet:el2n', 'diet:grand', 'random'],
                       'data.select.fraction': list(KEPT)}) + [{'data.select.by': ''}]
