"""Learning-rate schedules: pure functions step -> learning rate, registered by name.

`make_schedule(config.schedule, total_steps)` returns an optax-compatible schedule. Each builder
takes the schedule's ConfigDict fields as keyword arguments, so an experiment selects one with
`config.schedule.name` and sets its parameters beside it.
"""

from typing import Callable

import jax.numpy as jnp
import ml_collections

from research import errors

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


def constant(peak_lr: float, warmup_steps: int = 0, **_) -> Schedule:
  """Linear warmup from 0 over `warmup_steps`, then `peak_lr`."""
  def schedule(step):
    return peak_lr * jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1) / max(warmup_steps, 1))
  return schedule


def warmup_cosine(peak_lr: float, warmup_steps: int, total_steps: int,
                  final_lr_fraction: float = 0.1, **_) -> Schedule:
  """Linear warmup to `peak_lr`, then cosine decay to `final_lr_fraction * peak_lr` at `total_steps`.

  The cosine schedule of Loshchilov & Hutter 2016 (arXiv 1608.03983) without restarts, with the
  floor of Wortsman et al. 2023 (arXiv 2309.14322). Step k of warmup uses (k+1)/warmup of the peak,
  so the first update is not wasted at 0.
  """
  final_lr = final_lr_fraction * peak_lr

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warmup = peak_lr * (step + 1) / max(warmup_steps, 1)
    progress = jnp.clip((step - warmup_steps) / max(total_steps - warmup_steps, 1), 0.0, 1.0)
    cosine = final_lr + 0.5 * (peak_lr - final_lr) * (1 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < warmup_steps, warmup, cosine)
  return schedule


SCHEDULES = {'constant': constant, 'warmup_cosine': warmup_cosine}


def make_schedule(schedule_config: ml_collections.ConfigDict, total_steps: int) -> Schedule:
  """The schedule named by `schedule.name`, built with the other fields of `schedule`."""
  kwargs = schedule_config.to_dict()
  name = kwargs.pop('name')
  if name not in SCHEDULES:
    raise errors.UserError(f'schedule.name={name!r} is not a known schedule; choose one of '
                     f'{sorted(SCHEDULES)}.')
  return SCHEDULES[name](total_steps=total_steps, **kwargs)
