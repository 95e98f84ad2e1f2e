"""Load balancing of a mixture-of-experts model: per micro-batch, per global batch, or none.

Qiu et al. 2025 ("Demons in the Detail", arXiv 2501.11873) find that counting the expert load f_i
of the load-balancing loss over the global batch, instead of each device's micro-batch of 1-2
sequences, gives lower loss and experts that specialise by domain (SEEDS.md section 9 item 14).
Here a 8-expert top-2 model trains on the Python install's prose and code, 50/50, in rows of one
domain each, with the balancing loss at three scopes (`train.moe_balance`):

  micro_batch   f and p per group of 1 sequence (`moe_balance_rows`): the balance Megatron's
                aux_loss asks of a device that holds one sequence of the micro-batch
  global_batch  f over all 16 sequences of the step, p per micro-batch
  none          no balancing loss (the router z-loss only)

Every run reports the eval loss per domain and how each domain's tokens spread over the experts
(research/evaluate.py: eval/<task>/moe/...; the report's routing table and expert-load figures).

500 steps of 16 rows of 128 tokens (1M tokens); the two claimed scopes with 3 seeds each:

  python -m launch.sweep --config=experiments/moe_load_balancing.py \
      --workdir=workdirs/moe_load_balancing --parallel=2
"""

import ml_collections

from experiments import base
from research.analysis import sweep

STEPS = 500
SCOPES = ('micro_batch', 'global_batch', 'none')
SEEDS = (0, 1, 2)


def get_config() -> ml_collections.ConfigDict:
  """Global-batch balancing; the sweep sets the scope."""
  config = base.get_config()
  config.model.update(d_model=128, num_layers=4, num_heads=4, head_dim=32, mlp_dim=512,
                      moe_experts=8, moe_top_k=2, moe_mlp_dim=256, moe_every=1,
                      moe_capacity_factor=2.0)
  config.data.mixture = ml_collections.ConfigDict({'stdlib_prose': 0.5, 'stdlib_code': 0.5})
  config.data.seq_len = 128
  config.train.update(steps=STEPS, batch_size=16, log_every=10, moe_balance='global_batch',
                      moe_balance_rows=1, moe_lbl=1e-2, moe_z_loss=1e-3)
  config.schedule.update(name='warmup_cosine', peak_lr=3e-3, warmup_steps=STEPS // 20,
                         final_lr_fraction=0.1)
  config.eval.update(every=100, batches=8, batch_size=16)
  config.checkpoint.every = STEPS
  return config


def get_sweep():
  """The two balancing scopes whose difference the study claims with every seed of SEEDS, and no
  balancing with seed 0 only (a reference), so the sweep fits 30 minutes on 2 CPU cores."""
  scopes = [{'train.moe_balance': scope} for scope in SCOPES]
  return sweep.seeded(scopes[:2], SEEDS) + sweep.seeded(scopes[2:], SEEDS[:1])
