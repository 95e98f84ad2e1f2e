"""A small scaling sweep: four model sizes, each evaluated along one constant-learning-rate run.

Byte-level decoders of 4 widths and depths train 400 steps of 16 x 128 tokens on the Python
install's prose and code at a constant learning rate after warmup, and evaluate every 25 steps;
every evaluation is a (parameters N, tokens D, loss L) point for Chinchilla's parametric fit
(Hoffmann et al. 2022, arXiv 2203.15556; research/analysis/scaling.py). A constant rate keeps the
intermediate points comparable: a cosine run's early points sit at a higher rate than a run that
ends there would.

  python -m launch.sweep --config=experiments/scaling.py --workdir=workdirs/scaling --parallel=2
  python -m launch.scaling_fit workdirs/scaling --out=docs/results/scaling \
      --metric=eval/stdlib_prose/loss,eval/stdlib_code/loss
"""

import ml_collections

from experiments import base

STEPS = 400
# (d_model, num_layers, num_heads): head_dim 32, mlp_dim 4 x d_model.
SIZES = ((32, 2, 1), (64, 2, 2), (128, 3, 4), (192, 4, 6))


def get_config() -> ml_collections.ConfigDict:
  """The smallest model; the sweep sets the size."""
  config = base.get_config()
  config.model.update(d_model=32, num_layers=2, num_heads=1, head_dim=32, mlp_dim=128)
  config.data.seq_len = 128
  config.train.update(steps=STEPS, batch_size=16, log_every=25)
  config.schedule.update(name='constant', peak_lr=3e-3, warmup_steps=40)
  config.eval.update(every=25, batches=4, batch_size=16)
  config.checkpoint.every = STEPS
  return config


def get_sweep():
  """One run per model size."""
  return [{'model.d_model': d, 'model.num_layers': layers, 'model.num_heads': heads,
           'model.mlp_dim': 4 * d} for d, layers, heads in SIZES]
