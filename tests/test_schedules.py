"""Learning-rate schedules: values at named steps against the formulas, continuity, jit and optax."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from experiments import base
from research import errors, schedules

PEAK, FLOOR = 1e-3, 1e-4  # FLOOR = final_lr_fraction 0.1 of PEAK


def _config(**kwargs):
  return ml_collections.ConfigDict(kwargs)


def _build(total_steps, **kwargs):
  """A schedule from the base config's schedule block with `kwargs` set."""
  config = base.get_config().schedule
  config.update({'peak_lr': PEAK, 'final_lr_fraction': 0.1, **kwargs})
  return schedules.make_schedule(config, total_steps)


def _values(fn, total_steps):
  return np.asarray(fn(jnp.arange(total_steps + 1)), np.float64)


def _decay(shape, u, peak=PEAK, floor=FLOOR, alpha=10.0):
  """The decay formulas of REFERENCE.md section 2, written out independently of the library."""
  if shape == 'linear':
    return floor + (peak - floor) * (1 - u)
  if shape == 'cosine':
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * u))
  if shape == '1-sqrt':
    return floor + (peak - floor) * (1 - math.sqrt(u))
  if shape == 'exponential':
    return peak * (floor / peak) ** u
  h = lambda x: 1 / math.sqrt(1 + alpha * x) - 1  # noqa: E731
  return peak + (floor - peak) * h(u) / h(1)


def test_warmup_cosine_values():
  fn = schedules.make_schedule(
      _config(name='warmup_cosine', peak_lr=1e-3, warmup_steps=10, final_lr_fraction=0.1), 110)
  np.testing.assert_allclose(fn(0), 1e-4, rtol=1e-6)  # (0 + 1) / 10 of the peak
  np.testing.assert_allclose(fn(9), 1e-3, rtol=1e-6)  # warmup ends at the peak
  np.testing.assert_allclose(fn(10), 1e-3, rtol=1e-6)
  # Halfway through the decay: floor + half the range.
  np.testing.assert_allclose(fn(60), 1e-4 + 0.5 * 9e-4, rtol=1e-6)
  np.testing.assert_allclose(fn(35), 1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 4)), rtol=1e-6)
  np.testing.assert_allclose(fn(110), 1e-4, rtol=1e-6)
  np.testing.assert_allclose(fn(500), 1e-4, rtol=1e-6)  # stays at the floor


def test_warmup_cosine_keeps_its_values_and_short_runs_end_in_warmup():
  # Bit-for-bit the formula it had before the other schedules joined it.
  fn = _build(200, name='warmup_cosine', warmup_steps=20)
  steps = np.arange(0, 260, dtype=np.float32)
  warmup = np.float32(PEAK) * (steps + 1) / 20
  progress = np.clip((steps - 20) / 180, 0.0, 1.0).astype(np.float32)
  cosine = np.float32(FLOOR) + 0.5 * np.float32(PEAK - FLOOR) * (1 + np.cos(np.pi * progress))
  np.testing.assert_allclose(_values(fn, 259), np.where(steps < 20, warmup, cosine), rtol=2e-6)
  # Smoke runs shorter than the default warmup (train.steps=2, warmup_steps=100) still build.
  fn = _build(2, name='warmup_cosine', warmup_steps=100)
  np.testing.assert_allclose(fn(1), PEAK * 2 / 100, rtol=1e-6)


def test_constant_with_and_without_warmup():
  fn = schedules.make_schedule(_config(name='constant', peak_lr=2e-3, warmup_steps=4), 100)
  np.testing.assert_allclose([fn(0), fn(1), fn(3), fn(50)], [5e-4, 1e-3, 2e-3, 2e-3], rtol=1e-6)
  fn = schedules.make_schedule(_config(name='constant', peak_lr=2e-3, warmup_steps=0), 100)
  np.testing.assert_allclose(fn(0), 2e-3, rtol=1e-6)


@pytest.mark.parametrize('name,shape', [('warmup_linear', 'linear'),
                                        ('warmup_inverse_sqrt', 'inverse_sqrt')])
def test_warmup_then_decay_to_the_floor(name, shape):
  fn = _build(110, name=name, warmup_steps=10)
  np.testing.assert_allclose([fn(0), fn(9), fn(10)], [PEAK / 10, PEAK, PEAK], rtol=1e-6)
  for step in (35, 60, 85):
    np.testing.assert_allclose(fn(step), _decay(shape, (step - 10) / 100), rtol=1e-5)
  np.testing.assert_allclose([fn(110), fn(1000)], [FLOOR, FLOOR], rtol=1e-5)


def test_inverse_sqrt_falls_faster_than_linear_and_alpha_steepens_it():
  linear = _build(110, name='warmup_linear', warmup_steps=10)
  gentle = _build(110, name='warmup_inverse_sqrt', warmup_steps=10, inv_sqrt_alpha=1.0)
  steep = _build(110, name='warmup_inverse_sqrt', warmup_steps=10, inv_sqrt_alpha=100.0)
  assert steep(30) < gentle(30) < linear(30)
  np.testing.assert_allclose(gentle(60), _decay('inverse_sqrt', 0.5, alpha=1.0), rtol=1e-5)


@pytest.mark.parametrize('shape', list(schedules.DECAY_SHAPES))
def test_wsd_decay_start_and_end(shape):
  # 200 steps, the last 25% (50 steps) decay: the decay runs from step 150 to step 200.
  fn = _build(200, name='wsd', warmup_steps=10, decay_fraction=0.25, decay_shape=shape)
  np.testing.assert_allclose([fn(0), fn(9)], [PEAK / 10, PEAK], rtol=1e-6)
  np.testing.assert_allclose([fn(10), fn(100), fn(149), fn(150)], [PEAK] * 4, rtol=1e-6)
  for step in (160, 175, 190):
    np.testing.assert_allclose(fn(step), _decay(shape, (step - 150) / 50), rtol=1e-5)
  np.testing.assert_allclose([fn(200), fn(300)], [FLOOR, FLOOR], rtol=1e-5)


def test_infinite_schedule_phases():
  # 1000 steps: warmup 100, cosine cooldown over 200 (to step 300), constant, anneal over the last 100.
  fn = _build(1000, name='infinite', warmup_steps=100, cooldown_fraction=0.2, const_lr_fraction=0.5,
              anneal_fraction=0.1, decay_shape='cosine')
  const = 0.5 * PEAK
  np.testing.assert_allclose([fn(0), fn(99), fn(100)], [PEAK / 100, PEAK, PEAK], rtol=1e-6)
  # Cooldown: eta_const + (eta_max - eta_const)(1 + cos(pi u)) / 2.
  np.testing.assert_allclose(fn(150), _decay('cosine', 0.25, PEAK, const), rtol=1e-6)
  np.testing.assert_allclose(fn(200), (PEAK + const) / 2, rtol=1e-6)
  np.testing.assert_allclose([fn(300), fn(600), fn(899), fn(900)], [const] * 4, rtol=1e-6)
  # Anneal: eta_const (eta_min / eta_const)^((t - t_ann) / (t_end - t_ann)).
  np.testing.assert_allclose(fn(950), const * (FLOOR / const) ** 0.5, rtol=1e-5)
  np.testing.assert_allclose(fn(975), const * (FLOOR / const) ** 0.75, rtol=1e-5)
  np.testing.assert_allclose(fn(1000), FLOOR, rtol=1e-5)


def test_infinite_schedule_inverse_sqrt_cooldown_and_no_anneal():
  fn = _build(1000, name='infinite', warmup_steps=100, cooldown_fraction=0.2, const_lr_fraction=0.4,
              anneal_fraction=0.0, decay_shape='inverse_sqrt', inv_sqrt_alpha=10.0)
  const = 0.4 * PEAK
  # eta_max + (eta_const - eta_max) h(u) / h(1), h(u) = 1/sqrt(1 + 10 u) - 1, at u = 1/2.
  h = lambda u: 1 / math.sqrt(1 + 10 * u) - 1  # noqa: E731
  np.testing.assert_allclose(fn(200), PEAK + (const - PEAK) * h(0.5) / h(1), rtol=1e-5)
  np.testing.assert_allclose([fn(300), fn(999), fn(1000), fn(5000)], [const] * 4, rtol=1e-6)


def test_cycles_restart_every_cycle():
  # Cosine with warm restarts (SGDR): 100-step cycles, no warmup.
  fn = _build(350, name='cycles', warmup_steps=0, cycle_steps=100, decay_shape='cosine')
  values = _values(fn, 349)
  np.testing.assert_allclose(values[[0, 100, 200, 300]], [PEAK] * 4, rtol=1e-6)
  np.testing.assert_allclose(values[50], (PEAK + FLOOR) / 2, rtol=1e-6)
  np.testing.assert_allclose(values[99], _decay('cosine', 0.99), rtol=1e-5)
  np.testing.assert_allclose(values[100:200], values[:100], rtol=1e-6)  # periodic
  assert values[100] - values[99] > 0.99 * (PEAK - FLOOR)  # the restart is a jump to the peak
  # With a warmup in each cycle: step 100 + k is step k of the first cycle (decay from 10 to 100).
  fn = _build(300, name='cycles', warmup_steps=10, cycle_steps=100, decay_shape='linear')
  np.testing.assert_allclose([fn(100), fn(109), fn(155)], [PEAK / 10, PEAK, _decay('linear', 0.5)],
                             rtol=1e-6)
  # cycle_steps = 0: one cycle over the run, which is warmup_cosine.
  one = _build(300, name='cycles', warmup_steps=10, cycle_steps=0, decay_shape='cosine')
  np.testing.assert_allclose(_values(one, 299),
                             _values(_build(300, name='warmup_cosine', warmup_steps=10), 299),
                             rtol=1e-6)


@pytest.mark.parametrize('shape', ['cosine', 'linear'])
def test_rewarm_starts_at_start_lr_and_peaks_at_the_end_of_its_warmup(shape):
  fn = _build(220, name='rewarm', warmup_steps=20, start_lr=2e-4, decay_shape=shape)
  np.testing.assert_allclose(fn(0), 2e-4, rtol=1e-6)
  np.testing.assert_allclose(fn(10), 2e-4 + 0.5 * (PEAK - 2e-4), rtol=1e-6)
  np.testing.assert_allclose([fn(19), fn(20)], [2e-4 + 0.95 * (PEAK - 2e-4), PEAK], rtol=1e-6)
  np.testing.assert_allclose(fn(120), _decay(shape, 0.5), rtol=1e-6)
  np.testing.assert_allclose([fn(220), fn(400)], [FLOOR, FLOOR], rtol=1e-5)
  assert float(_build(220, name='rewarm', warmup_steps=20, start_lr=0.0)(0)) == 0.0
  np.testing.assert_allclose(_build(220, name='rewarm', warmup_steps=0, start_lr=0.0)(0), PEAK,
                             rtol=1e-6)  # no re-warming: the phase starts at the peak


def _continuous_cases():
  n = 100_000
  return [
      ('warmup_cosine', n, dict(warmup_steps=1000)),
      ('warmup_linear', n, dict(warmup_steps=1000)),
      ('warmup_inverse_sqrt', n, dict(warmup_steps=1000)),
      *[('wsd', n, dict(warmup_steps=1000, decay_fraction=0.2, decay_shape=shape))
        for shape in schedules.DECAY_SHAPES],
      ('infinite', n, dict(warmup_steps=1000, decay_shape='cosine')),
      ('infinite', n, dict(warmup_steps=1000, decay_shape='inverse_sqrt')),
      ('rewarm', n, dict(warmup_steps=1000, start_lr=3e-4)),
      ('cycles', n, dict(warmup_steps=1000, cycle_steps=0)),
  ]


@pytest.mark.parametrize('name,total,kwargs', _continuous_cases())
def test_continuous_schedules_have_no_jumps(name, total, kwargs):
  values = _values(_build(total, name=name, **kwargs), total - 1)  # the steps a run trains
  # Over 100k steps a continuous schedule moves at most ~1% of the peak per step (1-sqrt's first
  # decay step, (peak - floor) sqrt(1/20000), is the steepest); a join at the wrong level would jump.
  assert np.max(np.abs(np.diff(values))) < 1e-2 * PEAK
  np.testing.assert_allclose(values[-1], FLOOR, rtol=1e-3)  # and the last step is at the floor


@pytest.mark.parametrize('name', sorted(schedules.SCHEDULES))
def test_every_schedule_is_jit_compatible_and_drives_optax(name):
  fn = _build(300, name=name, warmup_steps=10, cycle_steps=100, start_lr=1e-4)
  steps = [0, 5, 10, 100, 150, 250, 299, 300]
  jitted = jax.jit(fn)
  for step in steps:
    np.testing.assert_allclose(jitted(jnp.int32(step)), fn(step), rtol=1e-6)
  np.testing.assert_allclose(jitted(jnp.asarray(steps)), [fn(s) for s in steps], rtol=1e-6)
  # As optax's learning rate: SGD's first update is -lr(0) * grad.
  params = {'w': jnp.ones(3)}
  grads = {'w': jnp.full(3, 2.0)}
  sgd = optax.sgd(fn)
  updates, _ = jax.jit(sgd.update)(grads, sgd.init(params))
  np.testing.assert_allclose(updates['w'], -2.0 * float(fn(0)) * np.ones(3), rtol=1e-6)
  adamw = optax.adamw(fn, weight_decay=0.1)
  state = adamw.init(params)
  update = jax.jit(adamw.update)
  for _ in range(2):
    updates, state = update(grads, state, params)
  assert np.all(np.isfinite(updates['w'])) and np.all(np.asarray(updates['w']) < 0)


def test_phased_picks_the_phase_and_passes_the_local_step():
  first = _build(100, name='warmup_cosine', warmup_steps=10)
  second = _build(200, name='rewarm', warmup_steps=20, start_lr=float(first(100)))
  third = _build(50, name='constant', peak_lr=5e-4, warmup_steps=0)
  fn = schedules.phased([first, second, third], [0, 100, 300])
  for step, expected in [(0, first(0)), (50, first(50)), (99, first(99)), (100, second(0)),
                         (110, second(10)), (299, second(199)), (300, third(0)),
                         (1000, third(700))]:
    np.testing.assert_allclose(fn(step), expected, rtol=1e-6)
  np.testing.assert_allclose(fn(100), FLOOR, rtol=1e-5)  # the rewarm starts at the last LR
  np.testing.assert_allclose(fn(120), PEAK, rtol=1e-6)  # ... and peaks after its 20 steps
  assert abs(float(fn(100)) - float(fn(99))) < 1e-6  # continuous at the join (a 1e-4 jump from 0)
  assert abs(float(schedules.phased([first, _build(200, name='rewarm', warmup_steps=20)],
                                    [0, 100])(100)) - float(fn(99))) > 0.9 * FLOOR
  np.testing.assert_allclose(jax.jit(fn)(jnp.arange(400)), _values(fn, 399), rtol=1e-6)
  np.testing.assert_allclose(schedules.phased([second], [0])(7), second(7), rtol=1e-6)


def test_phased_rejects_mismatched_or_unordered_starts():
  fn = schedules.constant(1e-3)
  with pytest.raises(ValueError, match='one start per schedule'):
    schedules.phased([fn, fn], [0])
  with pytest.raises(ValueError, match='strictly increasing'):
    schedules.phased([fn, fn], [10, 10])


def test_every_registered_schedule_builds_from_the_base_config():
  for name in schedules.SCHEDULES:
    config = base.get_config().schedule
    config.name = name
    fn = schedules.make_schedule(config, 1000)
    assert 0 < float(fn(500)) <= config.peak_lr * (1 + 1e-6)


@pytest.mark.parametrize('kwargs,message', [
    (dict(name='cosine'), "schedule.name='cosine' is not a known schedule"),
    (dict(name='wsd', decay_shape='square'),
     r"schedule.decay_shape='square' is not a decay shape; choose one of \['linear', 'cosine', "
     r"'1-sqrt', 'exponential', 'inverse_sqrt'\]"),
    (dict(name='wsd', decay_fraction=0.0), r'schedule.decay_fraction=0.0 must be in \(0, 1\]'),
    (dict(name='wsd', decay_fraction=1.5), r'schedule.decay_fraction=1.5 must be in \(0, 1\] \(a '
     r'fraction of train.steps\); set --config.schedule.decay_fraction in \(0, 1\]\.'),
    (dict(name='wsd', warmup_steps=190, decay_fraction=0.2),
     r'schedule.warmup_steps=190 is longer than the run before the decay \(160 of train.steps=200 '
     r'with schedule.decay_fraction=0.2\); set --config.schedule.warmup_steps <= 160 or lower '
     r'schedule.decay_fraction\.'),
    (dict(name='rewarm', warmup_steps=300),
     r'schedule.warmup_steps=300 is longer than the phase \(train.steps=200\); set '
     r'--config.schedule.warmup_steps <= 200\.'),
    (dict(name='cycles', warmup_steps=50, cycle_steps=50),
     r'schedule.warmup_steps=50 does not fit in a cycle of 50 steps'),
    (dict(name='warmup_cosine', final_lr_fraction=2.0),
     r'schedule.final_lr_fraction=2.0 puts the floor above the peak.*set '
     r'--config.schedule.final_lr_fraction in \[0, 1\]'),
    (dict(name='wsd', decay_shape='exponential', final_lr_fraction=0.0),
     r'schedule.final_lr_fraction=0.0 gives a floor of 0, which an exponential decay never reaches'),
    (dict(name='infinite', const_lr_fraction=1.5),
     r'schedule.const_lr_fraction=1.5 puts the constant LR above the peak'),
    (dict(name='infinite', const_lr_fraction=0.05),
     r'schedule.final_lr_fraction=0.1 is above schedule.const_lr_fraction=0.05'),
    (dict(name='infinite', cooldown_fraction=0.6, anneal_fraction=0.5),
     r'schedule.cooldown_fraction=0.6 plus schedule.anneal_fraction=0.5 is more than the whole run'),
    (dict(name='infinite', anneal_fraction=1.0), r'schedule.anneal_fraction=1.0 must be in \[0, 1\)'),
    (dict(name='rewarm', start_lr=-1e-4), r'schedule.start_lr=-0.0001 is negative'),
    (dict(name='warmup_inverse_sqrt', inv_sqrt_alpha=0.0), r'schedule.inv_sqrt_alpha=0.0 must be > 0'),
    (dict(name='constant', peak_lr=0.0), r'schedule.peak_lr=0.0 must be > 0'),
])
def test_bad_values_name_the_key_the_value_and_the_fix(kwargs, message):
  config = base.get_config().schedule
  config.update({'warmup_steps': 10, **kwargs})
  with pytest.raises(errors.UserError, match=message) as raised:
    schedules.make_schedule(config, 200)
  assert 'schedule.' in str(raised.value) and str(raised.value).endswith('.')


def _phases(**phases):
  return ml_collections.ConfigDict({name: ml_collections.ConfigDict(p) for name, p in phases.items()})


def test_phases_of_one_run_rewarm_from_the_lr_reached():
  config = base.get_config().schedule
  config.update(peak_lr=PEAK, warmup_steps=10, final_lr_fraction=0.1)  # warmup_cosine
  phases = _phases(code={'at_step': 60, 'schedule': {'name': 'rewarm', 'peak_lr': 2 * PEAK,
                                                     'warmup_steps': 10, 'start_lr': -1.0}})
  run = schedules.make_run_schedule(config, phases, 100)
  first = schedules.make_schedule(config, 60)  # the run's schedule ends where the phase starts
  values = _values(run, 100)
  np.testing.assert_allclose(values[:60], _values(first, 59), rtol=1e-6)
  assert values[59] > FLOOR and values[60] == pytest.approx(FLOOR, rel=1e-5)  # first's end value
  assert values[70] == pytest.approx(2 * PEAK, rel=1e-6)  # the new peak after 10 warmup steps
  assert values[100] == pytest.approx(0.1 * 2 * PEAK, rel=1e-5)  # re-decayed to its floor
  assert abs(values[61] - values[60]) < 0.2 * PEAK  # a continuous join, then the warmup
  jitted = jax.jit(run)
  assert float(jitted(65)) == pytest.approx(float(run(65)))
  assert schedules.make_run_schedule(config, _phases(), 100)(30) == schedules.make_schedule(
      config, 100)(30)


@pytest.mark.parametrize('phases, message', [
    ({'p': {'at_step': 150, 'schedule': {'name': 'constant'}}},
     r'phases.p starts at step 150, outside the run'),
    ({'p': {'at_step': 50}}, r'phases.p must be a ConfigDict with a start'),
    ({'p': {'at_fraction': 0.5, 'schedule': {'peak': 1.0}}},
     r"phases.p.schedule sets \['peak'\], which are not schedule.\* keys"),
    ({'p': {'at_step': 50, 'schedule': {'name': 'rewarm', 'warmup_steps': 80}}},
     r'phases.p: schedule.warmup_steps=80'),
    ({'p': {'at_step': 50, 'schedule': {}}, 'q': {'at_fraction': 0.5, 'schedule': {}}},
     r'Two phases that change the schedule start at the same step'),
])
def test_bad_phases_are_named(phases, message):
  with pytest.raises(errors.UserError, match=message):
    schedules.make_run_schedule(base.get_config().schedule, _phases(**phases), 100)
