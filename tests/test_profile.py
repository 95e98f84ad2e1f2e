"""train.profile_steps: a jax.profiler trace of the chosen steps under WORKDIR/profile/."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

from research import config as config_lib
from research import errors, train
from tests.test_train import tiny_config


def test_profile_steps_write_a_trace(data_dir, tmp_path):
  config = tiny_config(data_dir, data=1)
  config.train.steps, config.eval.every, config.checkpoint.every = 3, 3, 3
  config.train.profile_steps = (1, 3)
  train.train(config, str(tmp_path), devices=jax.devices()[:1])
  traces = glob.glob(os.path.join(str(tmp_path), 'profile', '**', '*.xplane.pb'), recursive=True)
  assert len(traces) == 1 and os.path.getsize(traces[0]) > 0


@pytest.mark.parametrize('value', [(3, 1), (1,), (0, 7), (-1, 2), (1.0, 3), (1, 2, 3)])
def test_bad_profile_steps_name_the_key_the_value_and_the_fix(data_dir, tmp_path, value):
  config = tiny_config(data_dir, data=1)  # train.steps = 6
  config.train.profile_steps = value
  with pytest.raises(errors.UserError) as error:
    config_lib.validate(config, str(tmp_path / 'run'), jax.devices()[:1])
  message = str(error.value)
  assert f'train.profile_steps={value!r}' in message
  assert '0 <= a < b <= train.steps (6)' in message and 'or () for no trace' in message


def _traced(monkeypatch, steps, first_step, last, enabled=True):
  """The (event, step) pairs of a loop over steps [first_step, last) under ProfileTrace."""
  events, current = [], []
  monkeypatch.setattr(jax.profiler, 'start_trace',
                      lambda log_dir: events.append(('start before', current[-1])))
  monkeypatch.setattr(jax.profiler, 'stop_trace', lambda: events.append(('stop after', current[-1])))
  with train.ProfileTrace(steps, '/unused', first_step, enabled) as trace:
    for step in range(first_step, last):
      current.append(step)
      trace.before_step(step)
      trace.after_step(step + 1, jnp.zeros(()), last=step + 1 == last)
  return events


@pytest.mark.parametrize('first_step, last, expected', [
    (0, 6, [('start before', 2), ('stop after', 3)]),  # a fresh run traces steps 2 and 3
    (3, 6, [('start before', 3), ('stop after', 3)]),  # resumed inside the range: the rest of it
    (4, 6, []),  # resumed past the range: nothing
    (0, 3, [('start before', 2), ('stop after', 2)]),  # stop_after ends the run inside the range
])
def test_trace_covers_the_range_from_the_first_step(monkeypatch, first_step, last, expected):
  assert _traced(monkeypatch, (2, 4), first_step, last) == expected


def test_only_the_main_process_traces(monkeypatch):
  assert _traced(monkeypatch, (0, 2), 0, 6, enabled=False) == []


def test_an_error_inside_the_range_ends_the_trace(monkeypatch):
  events = []
  monkeypatch.setattr(jax.profiler, 'start_trace', lambda log_dir: events.append('start'))
  monkeypatch.setattr(jax.profiler, 'stop_trace', lambda: events.append('stop'))
  with pytest.raises(RuntimeError), train.ProfileTrace((0, 4), '/unused', 0) as trace:
    trace.before_step(0)
    raise RuntimeError('a failing step')
  assert events == ['start', 'stop']
