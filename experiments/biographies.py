"""Knowledge storage and extraction: are memorised biographies extractable by questions?

SEEDS.md section 9 item 9 (Allen-Zhu & Li 2023, "Physics of Language Models: Part 3.1, Knowledge
Storage and Extraction", arXiv 2309.14316): with one fixed phrasing per person, a model that has
memorised the biographies answers questions about the individuals whose questions it never saw
near 0% of the time, after fine-tuning on the questions about the other half; with paraphrases
(multiplicity) and shuffled sentences (permute) the accuracy rises sharply, and mixing the
questions into pretraining helps.

The data are research/data/synthetic/biographies.py's NUM_INDIVIDUALS individuals (population
seed 0 in every run), two tasks over them:

  bios  their biographies (train_parts='biographies'); its validation split holds recall probes
        (validation_parts='biographies'): the first biography of each QA-test individual up to an
        attribute's value, the value the answer, so eval/bios/answer_accuracy is memorisation
  qa    the questions about the QA-train half (train_parts='qa'); its validation split is the
        questions about the QA-test half, so eval/qa/answer_accuracy is extraction

The 0.6M-parameter model of experiments/continual_rewarm.py, with rows of SEQ_LEN tokens so that
every biography lies whole in one row (packing cuts no document shorter than a row), trains STEPS
steps. The arms, each with SEEDS:

  protocol  staged: the biographies alone until step FINETUNE_AT, then the questions alone (the
            paper's pretrain-then-fine-tune, its main protocol); mixed: QA_SHARE of the rows
            questions throughout (the paper's mixed training)
  augmented 0: one biography per individual, one draw of templates in the fixed attribute order
            with pronouns; 1: MULTIPLICITY biographies per individual, sentences permuted, the
            full name in every sentence (multiplicity + permute + fullname)

Both protocols re-warm the learning rate at FINETUNE_AT (the phase `finetune`), so the arms differ
in their data alone. augmented is swept across runs rather than split within one
(augmented_fraction=0.5 and answer_accuracy/augmented_*): the paper finds that augmented
individuals in the data raise the extraction of the plain ones ("celebrity helps minority"), which
would shrink the difference measured inside one run.

  python -m launch.sweep --config=experiments/biographies.py --workdir=workdirs/biographies \
      --parallel=2
  python -m launch.report workdirs/biographies --out=docs/results/biographies --keep_runs
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

BIOS, QA = 'bios', 'qa'
NUM_INDIVIDUALS = 32
MULTIPLICITY = 5
SEQ_LEN = 512  # the longest augmented biography is about 410 bytes
STEPS = 180
BATCH_SIZE = 8
FINETUNE_AT = 0.8  # the fraction of the steps before the questions alone (staged)
PEAK_LR = 3e-3
FINETUNE_PEAK_LR = 3e-4  # at 1e-3, 60 steps of questions erased the memorised biographies
FINETUNE_WARMUP = 4
QA_SHARE = 0.3  # of the rows, in the mixed protocol
AUGMENTED = (0.0, 1.0)
SEEDS = (0, 1, 2)
PROTOCOLS = {  # protocol -> (mixture before FINETUNE_AT, mixture after)
    'staged': ({BIOS: 1.0, QA: 0.0}, {BIOS: 0.0, QA: 1.0}),
    'mixed': ({BIOS: 1 - QA_SHARE, QA: QA_SHARE},) * 2,
}


def _task(train_parts: str, validation_parts: str) -> dict:
  return {'source': 'biographies', 'num_documents': NUM_INDIVIDUALS, 'multiplicity': MULTIPLICITY,
          'augmented_fraction': AUGMENTED[-1], 'train_parts': train_parts,
          'validation_parts': validation_parts}


def get_config() -> ml_collections.ConfigDict:
  """The staged protocol on augmented biographies; the sweep sets the protocol and augmentation."""
  config = base.get_config()
  rewarm.small_model(config)
  config.data.seq_len = SEQ_LEN
  config.data.tasks = ml_collections.ConfigDict({BIOS: _task('biographies', 'biographies'),
                                                 QA: _task('qa', 'qa')})
  before, after = PROTOCOLS['staged']
  config.data.mixture = ml_collections.ConfigDict(before)
  config.data.stages = ml_collections.ConfigDict({'finetune': {
      'at_fraction': FINETUNE_AT, 'mixture': after}})
  config.phases = ml_collections.ConfigDict({'finetune': {
      'at_fraction': FINETUNE_AT, 'schedule': {'peak_lr': FINETUNE_PEAK_LR,
                                               'warmup_steps': FINETUNE_WARMUP}}})
  config.train.batch_size = BATCH_SIZE
  config.eval.update(every=STEPS // 5, batches=2, batch_size=16)
  config.train.steps = config.checkpoint.every = STEPS
  config.schedule.update(name='warmup_cosine', peak_lr=PEAK_LR, warmup_steps=STEPS // 30,
                         final_lr_fraction=0.1)
  return config


def get_sweep():
  """Every protocol with every augmentation and seed."""
  return [{**{f'data.mixture.{task}': before[task] for task in (BIOS, QA)},
           **{f'data.stages.finetune.mixture.{task}': after[task] for task in (BIOS, QA)},
           **{f'data.tasks.{task}.augmented_fraction': augmented for task in (BIOS, QA)},
           'seed': seed}
          for before, after in PROTOCOLS.values() for augmented in AUGMENTED for seed in SEEDS]
