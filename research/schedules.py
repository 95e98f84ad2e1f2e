"""Learning-rate schedules: pure functions step -> learning rate, registered by name.

`make_schedule(config.schedule, total_steps)` returns an optax-compatible schedule. Each builder
takes the schedule's ConfigDict fields as keyword arguments (and ignores the ones it does not use),
so an experiment selects one with `config.schedule.name` and sets its parameters beside it. Builders
check their values when they are called, so a bad value stops the run with one
`errors.UserError` naming `schedule.<key>` before anything compiles; the returned functions are
pure and jit-compatible.

Conventions shared by the schedules below:
- Floors and constant levels are fractions of `peak_lr` (`final_lr_fraction`, `const_lr_fraction`);
  lengths are steps where the existing configs use steps (`warmup_steps`, `cycle_steps`) and
  fractions of the run otherwise (`decay_fraction`, `cooldown_fraction`, `anneal_fraction`).
- Warmup is linear, and step k of a warmup uses (k+1)/warmup_steps of the peak, so the first update
  is not wasted at 0 and step warmup_steps-1 is at the peak. `rewarm` is the exception: it starts
  at exactly `start_lr` at its step 0 and reaches the peak at step warmup_steps, so that it joins
  the phase before it continuously.
- A decay over [a, b] has progress u = (step - a) / (b - a), clipped to [0, 1]; the floor is reached
  at step b (for the whole-run decays, b = total_steps) and kept after it.

`phased(schedules, starts)` chains schedules into one: schedule i runs on the steps from starts[i],
seeing the phase-local step.
"""

from typing import Callable, Sequence

import jax.numpy as jnp
import ml_collections

from research import errors

Schedule = Callable[[jnp.ndarray], jnp.ndarray]


# Decay shapes: progress u in [0, 1] -> learning rate, from `peak` at u = 0 to `floor` at u = 1.

def _linear(peak, floor, alpha):
  del alpha
  return lambda u: floor + (peak - floor) * (1 - u)


def _cosine(peak, floor, alpha):
  del alpha
  return lambda u: floor + 0.5 * (peak - floor) * (1 + jnp.cos(jnp.pi * u))


def _one_minus_sqrt(peak, floor, alpha):
  del alpha
  return lambda u: floor + (peak - floor) * (1 - jnp.sqrt(u))


def _exponential(peak, floor, alpha):
  del alpha
  ratio = floor / peak
  return lambda u: peak * ratio ** u


def _inverse_sqrt(peak, floor, alpha):
  h1 = 1 / (1 + alpha) ** 0.5 - 1
  return lambda u: peak + (floor - peak) * (1 / jnp.sqrt(1 + alpha * u) - 1) / h1


# linear; cosine (Loshchilov & Hutter, arXiv 1608.03983); 1-sqrt (Hägele et al. 2024, "Scaling Laws
# and Compute-Optimal Training Beyond Fixed Training Durations", arXiv 2405.18392); exponential,
# peak * (floor / peak)^u (MiniCPM, arXiv 2404.06395); inverse_sqrt, the normalised inverse square
# root peak + (floor - peak) h(u) / h(1) with h(u) = 1/sqrt(1 + alpha u) - 1 (Ibrahim et al. 2024,
# "Simple and Scalable Strategies to Continually Pre-train Large Language Models", arXiv 2403.08763,
# section 7.4).
DECAY_SHAPES = {
    'linear': _linear,
    'cosine': _cosine,
    '1-sqrt': _one_minus_sqrt,
    'exponential': _exponential,
    'inverse_sqrt': _inverse_sqrt,
}


# Checks, run when a schedule is built (outside jit).

def _fail(key, value, problem, fix):
  raise errors.UserError(f'schedule.{key}={value!r} {problem}; {fix}.')


def _check_peak(peak_lr):
  if not peak_lr > 0:
    _fail('peak_lr', peak_lr, 'must be > 0', 'set --config.schedule.peak_lr to a positive value')


def _check_floor(fraction, key='final_lr_fraction', what='floor'):
  if fraction < 0:
    _fail(key, fraction, 'is negative', f'set --config.schedule.{key} in [0, 1]')
  if fraction > 1:
    _fail(key, fraction, f'puts the {what} above the peak ({key} is a fraction of peak_lr)',
          f'set --config.schedule.{key} in [0, 1]')


def _check_fraction(key, value, low_open=True, high_open=False):
  """`value` in (0, 1] by default; `low_open=False` admits 0, `high_open=True` excludes 1."""
  low_ok = value > 0 if low_open else value >= 0
  high_ok = value < 1 if high_open else value <= 1
  if not (low_ok and high_ok):
    interval = ('(' if low_open else '[') + '0, 1' + (')' if high_open else ']')
    _fail(key, value, f'must be in {interval} (a fraction of train.steps)',
          f'set --config.schedule.{key} in {interval}')


def _check_warmup(warmup_steps, available, what, fix=''):
  """`what` says what the `available` steps are, e.g. 'the phase (200 steps)'."""
  if warmup_steps < 0:
    _fail('warmup_steps', warmup_steps, 'is negative', 'set --config.schedule.warmup_steps >= 0')
  if warmup_steps > available:
    _fail('warmup_steps', warmup_steps, f'is longer than {what}',
          f'set --config.schedule.warmup_steps <= {max(available, 0)}{fix}')


def _shape(decay_shape, peak, floor, alpha, floor_key, floor_fraction):
  """The decay function of `decay_shape` from `peak` to `floor`, after checking it can be built.

  `floor_key` and `floor_fraction` name the config value that set `floor`, for the error message.
  """
  if decay_shape not in DECAY_SHAPES:
    _fail('decay_shape', decay_shape, 'is not a decay shape',
          f'choose one of {list(DECAY_SHAPES)}')
  if decay_shape == 'exponential' and floor <= 0:
    _fail(floor_key, floor_fraction,
          'gives a floor of 0, which an exponential decay never reaches',
          f'set --config.schedule.{floor_key} > 0 or choose another schedule.decay_shape')
  if decay_shape == 'inverse_sqrt' and not alpha > 0:
    _fail('inv_sqrt_alpha', alpha, 'must be > 0', 'set --config.schedule.inv_sqrt_alpha > 0 '
          '(10 in Ibrahim et al. 2024)')
  return DECAY_SHAPES[decay_shape](peak, floor, alpha)


def _warmup(peak_lr, warmup_steps, step):
  return peak_lr * (step + 1) / max(warmup_steps, 1)


def _progress(step, start, length):
  return jnp.clip((step - start) / max(length, 1), 0.0, 1.0)


# Schedules.

def constant(peak_lr: float, warmup_steps: int = 0, **_) -> Schedule:
  """Linear warmup from 0 over `warmup_steps`, then `peak_lr`."""
  _check_peak(peak_lr)

  def schedule(step):
    return peak_lr * jnp.minimum(1.0, (jnp.asarray(step, jnp.float32) + 1) / max(warmup_steps, 1))
  return schedule


def _warmup_decay(decay_shape, peak_lr, warmup_steps, total_steps, final_lr_fraction,
                  inv_sqrt_alpha=10.0):
  _check_peak(peak_lr)
  _check_floor(final_lr_fraction)
  if warmup_steps < 0:
    _fail('warmup_steps', warmup_steps, 'is negative', 'set --config.schedule.warmup_steps >= 0')
  decay = _shape(decay_shape, peak_lr, final_lr_fraction * peak_lr, inv_sqrt_alpha,
                 'final_lr_fraction', final_lr_fraction)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    progress = _progress(step, warmup_steps, total_steps - warmup_steps)
    return jnp.where(step < warmup_steps, _warmup(peak_lr, warmup_steps, step), decay(progress))
  return schedule


def warmup_cosine(peak_lr: float, warmup_steps: int, total_steps: int,
                  final_lr_fraction: float = 0.1, **_) -> Schedule:
  """Linear warmup to `peak_lr`, then cosine decay to `final_lr_fraction * peak_lr` at `total_steps`.

  The cosine schedule of Loshchilov & Hutter 2016 (arXiv 1608.03983) without restarts, with the
  floor of Wortsman et al. 2023 (arXiv 2309.14322). Step k of warmup uses (k+1)/warmup of the peak,
  so the first update is not wasted at 0. A run shorter than its warmup ends inside the warmup.
  """
  return _warmup_decay('cosine', peak_lr, warmup_steps, total_steps, final_lr_fraction)


def warmup_linear(peak_lr: float, warmup_steps: int, total_steps: int,
                  final_lr_fraction: float = 0.1, **_) -> Schedule:
  """Linear warmup to `peak_lr`, then linear decay to `final_lr_fraction * peak_lr` at `total_steps`.

  As `warmup_cosine` with a straight line for the decay. A run shorter than its warmup ends inside
  the warmup.
  """
  return _warmup_decay('linear', peak_lr, warmup_steps, total_steps, final_lr_fraction)


def warmup_inverse_sqrt(peak_lr: float, warmup_steps: int, total_steps: int,
                        final_lr_fraction: float = 0.1, inv_sqrt_alpha: float = 10.0,
                        **_) -> Schedule:
  """Linear warmup, then an inverse-square-root decay that reaches the floor at `total_steps`.

  The decay is peak + (floor - peak) h(u) / h(1) with h(u) = 1/sqrt(1 + alpha u) - 1 over progress u
  of the decay, alpha = `inv_sqrt_alpha`: the inverse-sqrt cooldown of Ibrahim et al. 2024 ("Simple
  and Scalable Strategies to Continually Pre-train Large Language Models", arXiv 2403.08763, section
  7.4), normalised so that it ends at `final_lr_fraction * peak_lr`. It falls fast at first and
  flattens; a larger alpha front-loads the fall more.
  """
  return _warmup_decay('inverse_sqrt', peak_lr, warmup_steps, total_steps, final_lr_fraction,
                       inv_sqrt_alpha)


def wsd(peak_lr: float, warmup_steps: int, total_steps: int, decay_fraction: float = 0.2,
        decay_shape: str = 'cosine', final_lr_fraction: float = 0.1, inv_sqrt_alpha: float = 10.0,
        **_) -> Schedule:
  """Warmup-stable-decay: warm up to `peak_lr`, hold it, decay over the last `decay_fraction`.

  MiniCPM (Hu et al. 2024, arXiv 2404.06395) decays exponentially over about the last 10%; Hägele et
  al. 2024 ("Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations", arXiv
  2405.18392) find a 1-sqrt cooldown over about 20% matches cosine. The decay starts at step
  total_steps - round(decay_fraction * total_steps) at `peak_lr` and reaches
  `final_lr_fraction * peak_lr` at `total_steps`, with `decay_shape` one of DECAY_SHAPES. Every
  stable-phase checkpoint can branch into its own decay.
  """
  _check_peak(peak_lr)
  _check_floor(final_lr_fraction)
  _check_fraction('decay_fraction', decay_fraction)
  decay_steps = max(1, round(decay_fraction * total_steps))
  decay_start = total_steps - decay_steps
  _check_warmup(warmup_steps, decay_start,
                f'the run before the decay ({decay_start} of train.steps={total_steps} with '
                f'schedule.decay_fraction={decay_fraction})', ' or lower schedule.decay_fraction')
  decay = _shape(decay_shape, peak_lr, final_lr_fraction * peak_lr, inv_sqrt_alpha,
                 'final_lr_fraction', final_lr_fraction)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return jnp.where(step < warmup_steps, _warmup(peak_lr, warmup_steps, step),
                     decay(_progress(step, decay_start, decay_steps)))
  return schedule


def infinite(peak_lr: float, warmup_steps: int, total_steps: int, cooldown_fraction: float = 0.2,
             const_lr_fraction: float = 0.5, anneal_fraction: float = 0.1,
             final_lr_fraction: float = 0.1, decay_shape: str = 'cosine',
             inv_sqrt_alpha: float = 10.0, **_) -> Schedule:
  """The infinite schedule: warmup, cooldown to a constant, constant, final exponential anneal.

  Ibrahim et al. 2024 ("Simple and Scalable Strategies to Continually Pre-train Large Language
  Models", arXiv 2403.08763, section 7.4), with eta_max = `peak_lr`, eta_const =
  `const_lr_fraction * peak_lr`, eta_min = `final_lr_fraction * peak_lr`:
  1. linear warmup to eta_max over `warmup_steps`;
  2. cooldown to eta_const over the next `cooldown_fraction` of the run, with u its progress:
     `decay_shape='cosine'`: eta_const + (eta_max - eta_const)(1 + cos(pi u)) / 2, or
     `'inverse_sqrt'`: eta_max + (eta_const - eta_max) h(u) / h(1), h(u) = 1/sqrt(1 + alpha u) - 1,
     alpha = `inv_sqrt_alpha` (10 in the paper's code); the other DECAY_SHAPES work too;
  3. eta_const until the anneal (later datasets can resume here without re-warming);
  4. over the last `anneal_fraction` of the run (from t_ann to t_end = total_steps):
     eta_const (eta_min / eta_const)^((t - t_ann) / (t_end - t_ann)); 0 = no anneal.
  The phase lengths and eta_const of the paper were not re-checked: the defaults are defaults.
  """
  _check_peak(peak_lr)
  _check_floor(const_lr_fraction, 'const_lr_fraction', 'constant LR')
  _check_floor(final_lr_fraction)
  _check_fraction('cooldown_fraction', cooldown_fraction, low_open=False, high_open=True)
  _check_fraction('anneal_fraction', anneal_fraction, low_open=False, high_open=True)
  if cooldown_fraction + anneal_fraction > 1:
    _fail('cooldown_fraction', cooldown_fraction,
          f'plus schedule.anneal_fraction={anneal_fraction} is more than the whole run',
          'make the two sum to at most 1')
  if final_lr_fraction > const_lr_fraction:
    _fail('final_lr_fraction', final_lr_fraction,
          f'is above schedule.const_lr_fraction={const_lr_fraction}, so the anneal would go up',
          'set it at or below const_lr_fraction')
  cooldown_steps = round(cooldown_fraction * total_steps)
  anneal_steps = round(anneal_fraction * total_steps)
  anneal_start = total_steps - anneal_steps
  cooldown_end = warmup_steps + cooldown_steps
  _check_warmup(warmup_steps, anneal_start - cooldown_steps,
                f'what the cooldown and anneal leave of the run ({anneal_start - cooldown_steps} of '
                f'train.steps={total_steps} with schedule.cooldown_fraction={cooldown_fraction} and '
                f'schedule.anneal_fraction={anneal_fraction})',
                ' or shorten the cooldown or the anneal')
  const_lr = const_lr_fraction * peak_lr
  cooldown = _shape(decay_shape, peak_lr, const_lr, inv_sqrt_alpha, 'const_lr_fraction',
                    const_lr_fraction)
  if anneal_steps:
    anneal = _shape('exponential', const_lr, final_lr_fraction * peak_lr, inv_sqrt_alpha,
                    'final_lr_fraction', final_lr_fraction)
  else:
    def anneal(u):
      return jnp.full_like(u, const_lr)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    return jnp.select(
        [step < warmup_steps, step < cooldown_end, step < anneal_start],
        [_warmup(peak_lr, warmup_steps, step),
         cooldown(_progress(step, warmup_steps, cooldown_steps)),
         jnp.full_like(step, const_lr)],
        anneal(_progress(step, anneal_start, anneal_steps)))
  return schedule


def cycles(peak_lr: float, warmup_steps: int, total_steps: int, cycle_steps: int = 0,
           decay_shape: str = 'cosine', final_lr_fraction: float = 0.1,
           inv_sqrt_alpha: float = 10.0, **_) -> Schedule:
  """Repeated cycles of `cycle_steps`, each a warmup to `peak_lr` and a decay to the floor.

  With `decay_shape='cosine'` and `warmup_steps=0` this is SGDR, cosine annealing with warm restarts
  of a fixed period (Loshchilov & Hutter 2016, arXiv 1608.03983); a warmup in each cycle gives the
  repeated rewarm/re-decay of continual pretraining (Ibrahim et al. 2024, arXiv 2403.08763).
  Cycle c covers steps [c * cycle_steps, (c + 1) * cycle_steps) and decays towards
  `final_lr_fraction * peak_lr`, which it would reach at its last step + 1, where the next restarts.
  `cycle_steps=0` is one cycle over the whole run.
  """
  _check_peak(peak_lr)
  _check_floor(final_lr_fraction)
  if cycle_steps < 0:
    _fail('cycle_steps', cycle_steps, 'is negative', 'set --config.schedule.cycle_steps > 0 '
          '(or 0 for one cycle over the run)')
  length = cycle_steps or total_steps
  if warmup_steps < 0 or warmup_steps >= length:
    _fail('warmup_steps', warmup_steps, f'does not fit in a cycle of {length} steps',
          f'set --config.schedule.warmup_steps in [0, {length - 1}] or lengthen '
          'schedule.cycle_steps')
  decay = _shape(decay_shape, peak_lr, final_lr_fraction * peak_lr, inv_sqrt_alpha,
                 'final_lr_fraction', final_lr_fraction)

  def schedule(step):
    local = jnp.mod(jnp.asarray(step, jnp.float32), length)
    return jnp.where(local < warmup_steps, _warmup(peak_lr, warmup_steps, local),
                     decay(_progress(local, warmup_steps, length - warmup_steps)))
  return schedule


def rewarm(peak_lr: float, warmup_steps: int, total_steps: int, start_lr: float = 0.0,
           decay_shape: str = 'cosine', final_lr_fraction: float = 0.1,
           inv_sqrt_alpha: float = 10.0, **_) -> Schedule:
  """A new phase: warm up again from `start_lr` to `peak_lr`, then re-decay to the floor.

  Re-warming and re-decaying for continual pretraining: Gupta et al. 2023 ("Continual Pre-Training
  of Large Language Models: How to (re)warm your model?", arXiv 2308.04014) and Ibrahim et al. 2024
  (arXiv 2403.08763; linear warmup over 1% of the phase to 3e-4, cosine to 3e-5). `step` is the
  phase-local step and `total_steps` the phase's length. The LR is exactly `start_lr` at step 0
  (the previous phase's final LR for a continuous join, or 0), rises linearly to `peak_lr` at step
  `warmup_steps` and decays with `decay_shape` to `final_lr_fraction * peak_lr` at `total_steps`.
  `warmup_steps=0` starts at the peak (no re-warming).
  """
  _check_peak(peak_lr)
  _check_floor(final_lr_fraction)
  _check_warmup(warmup_steps, total_steps, f'the phase (train.steps={total_steps})')
  if start_lr < 0:
    _fail('start_lr', start_lr, 'is negative', 'set --config.schedule.start_lr >= 0 (e.g. the '
          'previous phase\'s final LR, or 0)')
  decay = _shape(decay_shape, peak_lr, final_lr_fraction * peak_lr, inv_sqrt_alpha,
                 'final_lr_fraction', final_lr_fraction)

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = start_lr + (peak_lr - start_lr) * step / max(warmup_steps, 1)
    return jnp.where(step < warmup_steps, warm,
                     decay(_progress(step, warmup_steps, total_steps - warmup_steps)))
  return schedule


SCHEDULES = {
    'constant': constant,
    'warmup_cosine': warmup_cosine,
    'warmup_linear': warmup_linear,
    'warmup_inverse_sqrt': warmup_inverse_sqrt,
    'wsd': wsd,
    'infinite': infinite,
    'cycles': cycles,
    'rewarm': rewarm,
}


def phased(schedules: Sequence[Schedule], starts: Sequence[int]) -> Schedule:
  """One schedule from phases: schedule i on the steps in [starts[i], starts[i+1]), at step - starts[i].

  The last phase runs on from its start; steps before starts[0] belong to the first. The result is
  as pure and jit-compatible as its pieces, and continuous wherever the pieces join continuously
  (e.g. a `rewarm` phase whose `start_lr` is the previous schedule's value at its phase length).
  """
  schedules, starts = list(schedules), [int(s) for s in starts]
  if not schedules or len(schedules) != len(starts):
    raise ValueError(f'phased needs one start per schedule; got {len(schedules)} schedules and '
                     f'starts {starts}.')
  if any(b <= a for a, b in zip(starts, starts[1:])):
    raise ValueError(f'phased needs strictly increasing starts; got {starts}.')

  def schedule(step):
    step = jnp.asarray(step)
    values = [jnp.asarray(fn(step - start), jnp.float32) for fn, start in zip(schedules, starts)]
    if len(values) == 1:
      return values[0]
    # jnp.select takes the first true condition: the latest phase that has started.
    return jnp.select([step >= start for start in starts[:0:-1]], values[:0:-1], values[0])
  return schedule


def make_schedule(schedule_config: ml_collections.ConfigDict, total_steps: int) -> Schedule:
  """The schedule named by `schedule.name`, built (and checked) with the other fields of `schedule`."""
  kwargs = schedule_config.to_dict()
  name = kwargs.pop('name')
  if name not in SCHEDULES:
    raise errors.UserError(f'schedule.name={name!r} is not a known schedule; choose one of '
                           f'{sorted(SCHEDULES)}.')
  return SCHEDULES[name](total_steps=total_steps, **kwargs)


_PHASE_PARTS = ('schedule', 'objective')  # what a phase changes: ConfigDicts of their keys
SHAPE_KEYS = ('seq_len', 'batch_size')  # and the shape of its batches (research/data/shapes.py)
_PHASE_KEYS = {'at_step', 'at_fraction', *_PHASE_PARTS, *SHAPE_KEYS}


def start_step(spec: ml_collections.ConfigDict, key: str, total_steps: int, first: int = 1) -> int:
  """The step where a mixture stage or a schedule phase `spec` (config key `key`) starts: `at_step`
  (an int) or `at_fraction` of train.steps (a float in (0, 1)), exactly one, inside the run (from
  step `first`)."""
  at_step, at_fraction = spec.get('at_step'), spec.get('at_fraction')
  if (at_step is None) == (at_fraction is None):
    raise errors.UserError(f'{key} needs exactly one of at_step or at_fraction.')
  start = at_step if at_fraction is None else round(at_fraction * total_steps)
  if not first <= start < total_steps:
    raise errors.UserError(f'{key} starts at step {start}, outside the run (steps {first} to '
                           f'{total_steps - 1} of train.steps={total_steps}); move its start.')
  return start


def phase_changes(phases_config: ml_collections.ConfigDict, part: str,
                  total_steps: int) -> list[tuple[int, str, dict]]:
  """(start step, config key, changes) of each phase of `config.phases` that changes `part`
  ('schedule', 'objective' or 'shape'), by start; checks every phase's shape and that no two such
  phases start together.

  A phase is name -> ConfigDict(at_step=int or at_fraction=float, schedule=ConfigDict of the
  `schedule.*` keys that change, objective=ConfigDict of the `objective.*` keys that change,
  seq_len=int, batch_size=int), with at least one change; the changes of 'shape' are its
  {seq_len, batch_size}. A phase that changes the shape alone may start at step 0.
  """
  phases = []
  for name, phase in phases_config.items():
    key = f'phases.{name}'
    parts = ([p for p in (*_PHASE_PARTS, *SHAPE_KEYS) if p in phase]
             if isinstance(phase, ml_collections.ConfigDict) else [])
    if (not parts or not set(phase.keys()) <= _PHASE_KEYS
        or any(not isinstance(phase[p], ml_collections.ConfigDict)
               for p in parts if p in _PHASE_PARTS)):
      raise errors.UserError(f'{key} must be a ConfigDict with a start (at_step=int or '
                             'at_fraction=float) and schedule=ConfigDict(schedule.* keys that '
                             'change), objective=ConfigDict(objective.* keys that change), '
                             f'seq_len=int, batch_size=int or several, got {phase!r}.')
    start = start_step(phase, key, total_steps, first=0 if set(parts) <= set(SHAPE_KEYS) else 1)
    if part == 'shape' and set(parts) & set(SHAPE_KEYS):
      phases.append((start, key, {k: phase[k] for k in SHAPE_KEYS if k in phase}))
    elif part in phase:
      phases.append((start, key, phase[part].to_dict()))
  phases.sort(key=lambda p: p[0])
  starts = [start for start, _, _ in phases]
  if len(set(starts)) != len(starts):
    raise errors.UserError(f'Two phases that change the {part} start at the same step ({starts}); '
                           'give each its own.')
  return phases


def make_run_schedule(schedule_config: ml_collections.ConfigDict,
                      phases_config: ml_collections.ConfigDict, total_steps: int) -> Schedule:
  """The learning rate over a whole run: `schedule` alone, or one schedule per phase.

  With `config.phases` (`phase_changes`), the run's `schedule` covers the steps before the first
  phase that changes it and each such phase's schedule (the run's keys with its changes) runs on
  the phase's own steps, up to the next such phase or the end: continual pretraining in one run,
  e.g. re-warming when the mixture switches (a `data.stages` entry at the same step). A phase's
  `start_lr=-1` starts it from the learning rate the run has reached, so a `rewarm` joins
  continuously.
  """
  phases = phase_changes(phases_config, 'schedule', total_steps)
  if not phases:
    return make_schedule(schedule_config, total_steps)
  for _, key, changes in phases:
    unknown = sorted(set(changes) - set(schedule_config.keys()))
    if unknown:
      raise errors.UserError(f'{key}.schedule sets {unknown}, which are not schedule.* keys; '
                             f'choose from {sorted(schedule_config.keys())}.')
  starts = [0] + [start for start, _, _ in phases]
  pieces = [make_schedule(schedule_config, starts[1])]
  for index, (start, key, changes) in enumerate(phases, start=1):
    settings = {**schedule_config.to_dict(), **changes}
    if settings.get('start_lr', 0) == -1:  # the LR reached where the previous phase ends
      settings['start_lr'] = float(pieces[-1](start - starts[index - 1]))
    end = starts[index + 1] if index + 1 < len(starts) else total_steps
    try:
      pieces.append(make_schedule(ml_collections.ConfigDict(settings), end - start))
    except errors.UserError as error:
      raise errors.UserError(f'{key}: {error}') from error
  return phased(pieces, starts)
