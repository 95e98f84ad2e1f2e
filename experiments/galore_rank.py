"""GaLore's rank against full-rank AdamW: loss and optimizer-state memory at toy scale.

Zhao et al. 2024, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection"
(arXiv 2403.03507), pretrain LLaMA models of 60M to 1B parameters with Adam's moments kept for
gradients projected onto their top-r singular vectors (refreshed every T steps), and report a
validation perplexity close to full-rank Adam's (their Table 2) with up to 65.5% less
optimizer-state memory. train.optimizer='galore' is that optimizer
(research/optimizers.py): the attention and MLP matrices projected, the embeddings and norms on
plain Adam, as the paper does.

Arms (SEEDS each), a 0.6M-parameter byte-level decoder (d_model 128, 2 layers of 4 heads of 32,
SwiGLU 512: every projected matrix has 128 as its smaller side), STEPS steps of 16 x 128 tokens
of the standard library's prose and code (half each), warmup 5%, cosine to 0.1 x the peak:
  adamw          AdamW at the paper's Adam learning rate, 1e-3
  galore r=R     GaLore at R in RANKS of 128, the paper's GaLore learning rate 1e-2 and scale
                 0.25, the projection refreshed every PROJ_GAP steps (the paper's 200, scaled
                 down to this run's length)

The learning rates are the paper's, not tuned here: GaLore 1e-2 with alpha 0.25 (its code's
pretraining command), Adam 1e-3 (its tuned baseline); under GaLore the embeddings and norms then
train with plain Adam at 1e-2, as in the paper's code. This project's quickstart sweep found 1e-3
better than 3e-3 for full-rank AdamW on a 4.3M model at 300 steps
(docs/results/quickstart_sweep.md).

  python -m launch.sweep --config=experiments/galore_rank.py --workdir=workdirs/galore_rank \
      --parallel=1
  python -m launch.sweep --config=experiments/galore_rank.py:adamw_lr \
      --workdir=workdirs/galore_rank --parallel=1
  python -m launch.report workdirs/galore_rank --out=docs/results/galore_rank --keep_runs

The second sweep is a control added after the first: AdamW at CONTROL_LR (3e-3), since the
paper's 1e-3 may be low for a 300-step run; GaLore's projected matrices step at 1e-2 x 0.25.

The optimizer state of each arm's model (bytes, no allocation) is the bench's `optimizer`
section's function: launch.bench.optimizer_state_bytes(get_config()). Results:
docs/results/galore_rank.md.
"""

from experiments import base

STEPS = 300
# 2 seeds: a run took about 3 min on the shared 2 cores, so 3 seeds (12 runs) would take 36 min.
SEEDS = (0, 1)
RANKS = (8, 32, 64)
PROJ_GAP = 50
ADAMW_LR, GALORE_LR, GALORE_SCALE = 1e-3, 1e-2, 0.25
# The control's AdamW LR: this model's in the project's other studies (continual_rewarm.PEAK_LR),
# near GaLore's step on the projected matrices (GALORE_LR x GALORE_SCALE = 2.5e-3).
CONTROL_LR = 3e-3


def get_config(arg=None):
  """The study's model and run; `arg` 'adamw_lr' (the control sweep's) changes nothing here."""
  if arg not in (None, 'adamw_lr'):
    raise ValueError(f"experiments/galore_rank.py takes no argument or 'adamw_lr', not {arg!r}")
  config = base.get_config()
  config.model.update(d_model=128, num_layers=2, num_heads=4, head_dim=32, mlp_dim=512)
  config.data.seq_len = 128
  config.train.batch_size = 16
  config.train.steps = config.checkpoint.every = STEPS
  config.train.log_every = 10
  config.train.galore.update(rank=RANKS[0], update_proj_gap=PROJ_GAP, scale=GALORE_SCALE)
  config.schedule.update(peak_lr=ADAMW_LR, warmup_steps=STEPS // 20)
  config.eval.update(every=STEPS // 5, batches=4, batch_size=16)
  return config


def get_sweep(arg=None):
  """Every arm for seed 0, then every arm for seed 1, ...: a sweep cut short loses whole seeds.
  'adamw_lr': the control, AdamW at CONTROL_LR, every seed."""
  if arg == 'adamw_lr':
    return [{'train.optimizer': 'adamw', 'schedule.peak_lr': CONTROL_LR, 'seed': seed}
            for seed in SEEDS]
  arms = [{'train.optimizer': 'adamw', 'schedule.peak_lr': ADAMW_LR}] + [
      {'train.optimizer': 'galore', 'train.galore.rank': rank, 'schedule.peak_lr': GALORE_LR}
      for rank in RANKS]
  return [{**arm, 'seed': seed} for seed in SEEDS for arm in arms]
