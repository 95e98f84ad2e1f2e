"""When a knowledge-injection probe (research/data/probes.py) is in the training batches: its
exposure steps, read from its `data.probes` entry or from a finished run's config.json (the
forgetting report, research/analysis/report.py, reads them without building any data)."""

from research import errors, schedules


def count(spec, key: str, name: str) -> int:
  """Probe `name`'s integer `key` (default 1), checked to be >= 1."""
  value = spec.get(key, 1)
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise errors.UserError(f'data.probes.{name}.{key}={value!r} must be an integer >= 1.')
  return value


def exposure_steps(spec, name: str, total_steps: int) -> tuple[int, ...]:
  """The steps whose batches hold probe `name` (`spec`, its `data.probes` entry, a ConfigDict
  or the dict of a run's config.json): `at`, `at + every`, ..., `times` of them."""
  at = schedules.start_step(spec, f'data.probes.{name}', total_steps)
  every = count(spec, 'every', name)
  return tuple(at + i * every for i in range(count(spec, 'times', name)))
