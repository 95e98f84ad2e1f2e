"""Sequence-length warm-up: the first steps on short rows, at the run's tokens per step.

Li et al. 2022, "The Stability-Efficiency Dilemma: Investigating Sequence Length Warmup for
Training GPT Models" (arXiv 2108.06084) train GPT models on short sequences first, growing them to
the full length, and report more stable training at large batches and learning rates and the same
loss in less wall time; EfficientTrain (arXiv 2211.09703) feeds a vision model its easier, smaller
inputs first. Here the first steps of a run are phases with a sequence length of their own
(`config.phases.NAME.seq_len`, research/data/shapes.py): the documents packed into shorter rows,
as many more rows as they are shorter, so every step trains on BATCH x SEQ_LEN tokens and a run
reads as far into its data as one at full length.

Arms (3 seeds each), the 0.6M-parameter model of experiments/continual_rewarm.py, STEPS steps of
8 x 256 tokens of the default prose + code mixture:
  fixed    rows of 256 throughout (its phases set 256: no-ops)
  warmup   rows of 64 (32 of them) for the first 25% of the steps, then 256
  ladder   64 for the first 12.5%, 128 (16 rows) up to 25%, then 256

Every run is evaluated on rows of 256 (`eval/<task>/loss`); `tokens_per_second` of the training
lines and the runs' wall time compare the speed. The whole sweep takes under 30 minutes on 2 CPU
cores:

  python -m launch.sweep --config=experiments/length_warmup.py \\
      --workdir=workdirs/length_warmup --parallel=2
  python -m launch.report workdirs/length_warmup --out=docs/results/length_warmup --keep_runs

8 min 38 s here, two runs at a time. Results in docs/results/length_warmup.md: the same final
loss at equal tokens (warmup -0.045 ± 0.091, ladder -0.029 ± 0.093 against fixed, paired by seed);
about 23% more tokens a second in the short phase but no wall time saved beyond the noise at this
model's size.
"""

import ml_collections

from experiments import continual_rewarm

STEPS = 300
SEQ_LEN, BATCH = 256, 8
SEEDS = (0, 1, 2)
# The rows' length from step 0 (phase `short`) and from 12.5% of the steps (`middle`); from 25%
# (`full`) every arm trains on rows of SEQ_LEN.
ARMS = {'fixed': (SEQ_LEN, SEQ_LEN), 'warmup': (64, 64), 'ladder': (64, 128)}


def get_config():
  config = continual_rewarm.toy_run(STEPS)
  config.data.seq_len, config.train.batch_size = SEQ_LEN, BATCH
  config.eval.batch_size = BATCH
  config.phases = ml_collections.ConfigDict({
      'short': {'at_step': 0, 'seq_len': ARMS['warmup'][0]},
      'middle': {'at_fraction': 0.125, 'seq_len': ARMS['warmup'][1]},
      'full': {'at_fraction': 0.25, 'seq_len': SEQ_LEN}})
  return config


def get_sweep():
  """Every arm, every seed."""
  return [{'phases.short.seq_len': short, 'phases.middle.seq_len': middle, 'seed': seed}
          for short, middle in ARMS.values() for seed in SEEDS]
