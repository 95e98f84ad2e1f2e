"""Small-scale proxies for training instabilities (Wortsman et al. 2023, "Small-scale proxies for
large-scale Transformer training instabilities", arXiv 2309.14322).

The paper finds that even small Transformers diverge at high learning rates, through attention
logits that grow until the softmax is one-hot, and output logits that drift; qk-layernorm and the
output z-loss remove both, so the final loss barely depends on the learning rate over orders of
magnitude ("LR sensitivity"). Here the 0.6M-parameter byte-level decoder of
experiments/continual_rewarm.py trains STEPS steps of 8 x 128 tokens of the Python install's prose
and code at every peak learning rate of LEARNING_RATES (2 orders of magnitude) in four variants:
plain (no qk-layernorm, no z-loss), qk-layernorm (`model.qk_norm`), z-loss 1e-4 (`train.z_loss`)
and both. As in the paper's output-logit experiments there is no weight decay (with it the logits
drift less); AdamW's other settings and the global-norm clipping at 1 are the paper's. The
monitors (`train.monitor_logits`) log the largest attention logit and the output logits' mean and
largest magnitude. The learning rates of SEEDED_RATES, where the variants part, run with every
seed of SEEDS, the others with the first: 36 runs, about 14 minutes two at a time on 2 CPU cores.

  python -m launch.sweep --config=experiments/instability.py --workdir=workdirs/instability \
      --parallel=2
  python -m launch.report workdirs/instability --out=docs/results/instability --keep_runs
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

STEPS = 160
LEARNING_RATES = (3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
SEEDED_RATES = LEARNING_RATES[-2:]
SEEDS = (0, 1, 2)
Z_LOSS = 1e-4
VARIANTS = ((False, 0.0), (True, 0.0), (False, Z_LOSS), (True, Z_LOSS))  # (qk_norm, z_loss)


def get_config() -> ml_collections.ConfigDict:
  """The plain variant at the paper's default-recipe optimizer; the sweep sets the rest."""
  config = base.get_config()
  rewarm.small_model(config)
  config.model.qk_norm = False
  config.train.update(steps=STEPS, batch_size=8, z_loss=0.0, weight_decay=0.0,
                      monitor_logits=True, log_every=5)
  config.schedule.update(name='warmup_cosine', peak_lr=LEARNING_RATES[0],
                         warmup_steps=STEPS // 10, final_lr_fraction=0.1)
  config.eval.every = config.checkpoint.every = STEPS
  return config


def get_sweep():
  """Every variant at every learning rate; every seed at SEEDED_RATES, the first elsewhere."""
  return [{'schedule.peak_lr': lr, 'model.qk_norm': qk_norm, 'train.z_loss': z_loss, 'seed': seed}
          for lr in LEARNING_RATES for qk_norm, z_loss in VARIANTS
          for seed in (SEEDS if lr in SEEDED_RATES else SEEDS[:1])]
