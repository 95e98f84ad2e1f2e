"""The stability gap of continual pretraining: does the new domain's accuracy dip, then recover?

Guo et al. 2024 ("Efficient Continual Pre-training by Mitigating the Stability Gap", arXiv
2406.14833) see a model's performance on a new domain drop at the start of continual pretraining
on it and recover later, the "stability gap" De Lange et al. 2023 ("Continual evaluation for
lifelong learning: Identifying the stability gap", arXiv 2205.13452) named in vision. Their fixes:
several epochs over a small high-quality subset of the new domain instead of one pass over all of
it, and a mixture close to the pretraining data.

Domain A is a general mixture: prose and code (the Python install's documentation and standard
library) with a share of domain B, 1- and 2-digit addition with reversed answers
(research/data/synthetic/arithmetic.py, validation problems held out of training), so the
pretrained model already answers some of B. The 0.6M-parameter model of
experiments/continual_rewarm.py is pretrained on A with warmup and cosine decay to 0.1 x the peak,
then continued for CONTINUE_STEPS steps with the learning rate re-warmed to a third of the
pretraining peak (continual_rewarm's schedule), in three arms of the same compute:

  large   one pass over B (NUM_DOCUMENTS problems, about one epoch in CONTINUE_STEPS)
  subset  SUBSET_EPOCHS epochs over a random 1 / SUBSET_EPOCHS of B's training problems
  mixed   B mixed with A's prose and code, half and half

each with SEEDS (the continuation's data order). Every run evaluates B's answer accuracy and loss
and A's prose and code losses every EVAL_EVERY steps from step 0 (the pretrained model);
research/analysis/forgetting.stability_gap measures each curve's dip and the steps to recover.

  python -m launch.train --config=experiments/stability_gap.py:pretrain \
      --workdir=workdirs/stability_gap/pretrain
  python -m launch.sweep --config=experiments/stability_gap.py \
      --workdir=workdirs/stability_gap/continue --parallel=2
  python -m launch.report workdirs/stability_gap/continue --out=docs/results/stability_gap \
      --keep_runs

The continuation reads the pretrained run from `init.path` (relative to where the commands run).
The subset is random, not scored: every problem is correct, so there is no quality to filter by,
and the pretrained model's nll would rank problems by their length (1-digit problems first) and
change the mix of difficulties instead.
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

PRETRAIN_STEPS = 1200
CONTINUE_STEPS = 140
CONTINUE_PEAK_LR = rewarm.PEAK_LR / 3
EVAL_EVERY = 5
NUM_DOCUMENTS = 36_000  # B's training problems: about one pass in CONTINUE_STEPS of 16 x 128 tokens
MAX_DIGITS = 2
SUBSET_EPOCHS = 4
SEEDS = (0, 1, 2)
PRETRAIN_DIR = 'workdirs/stability_gap/pretrain'
NEW, SUBSET = 'addition', 'addition_subset'
PROSE, CODE = rewarm.UPSTREAM, rewarm.DOWNSTREAM
A_MIXTURE = {PROSE: 0.3, CODE: 0.3, NEW: 0.4}
ARMS = {  # arm -> continuation mixture
    'large': {NEW: 1.0},
    'subset': {SUBSET: 1.0},
    'mixed': {NEW: 0.5, PROSE: 0.25, CODE: 0.25},
}
_CONTINUE_TASKS = (NEW, SUBSET, PROSE, CODE)


def _tasks() -> ml_collections.ConfigDict:
  """B, and its subset of the problems the pretrained model scores lowest nll on."""
  return ml_collections.ConfigDict({
      NEW: {'source': 'arithmetic', 'num_documents': NUM_DOCUMENTS, 'min_digits': 1,
            'max_digits': MAX_DIGITS, 'operations': ('addition',)},
      SUBSET: {'source': 'subset', 'task': NEW, 'num_documents': NUM_DOCUMENTS // SUBSET_EPOCHS,
               'seed': 0}})


def pretrain_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = _tasks()
  config.data.mixture = ml_collections.ConfigDict(A_MIXTURE)
  config.eval.every = 100
  config.train.steps = config.checkpoint.every = PRETRAIN_STEPS
  config.schedule.update(name='warmup_cosine', peak_lr=rewarm.PEAK_LR, warmup_steps=20,
                         final_lr_fraction=rewarm.FLOOR)
  return config


def continue_config() -> ml_collections.ConfigDict:
  """The large arm: one pass over B from the pretrained parameters with a fresh Adam state, the
  learning rate re-warmed from the pretraining's final LR over 1% of the steps to a third of its
  peak and re-decayed by cosine (experiments/continual_rewarm.py's schedule; at the full peak a
  40-step trial lost all of B's accuracy); every weight of every arm is a key."""
  config = rewarm.continue_config()
  config.data.tasks = _tasks()
  config.data.mixture = ml_collections.ConfigDict(
      {task: ARMS['large'].get(task, 0.0) for task in _CONTINUE_TASKS})
  config.eval.tasks = (NEW, PROSE, CODE)
  config.eval.every = EVAL_EVERY
  config.train.steps = config.checkpoint.every = CONTINUE_STEPS
  config.init.path = PRETRAIN_DIR
  config.schedule.update(peak_lr=CONTINUE_PEAK_LR, warmup_steps=CONTINUE_STEPS // 100)
  return config


def get_config(arg: str = 'continue') -> ml_collections.ConfigDict:
  configs = {'pretrain': pretrain_config, 'continue': continue_config}
  if arg not in configs:
    raise ValueError(f'experiments/stability_gap.py:{arg}: choose one of {sorted(configs)}.')
  return configs[arg]()


def get_sweep():
  """Every arm's mixture with every seed."""
  return [{**{f'data.mixture.{task}': mixture.get(task, 0.0) for task in _CONTINUE_TASKS},
           'seed': seed} for mixture in ARMS.values() for seed in SEEDS]
