"""Peak FLOP/s of the devices, the denominator of model FLOPs utilisation (MFU).

On TPU and GPU the peak comes from a table of dense bfloat16 FLOP/s per chip by device kind. On CPU
there is no reliable table, so the peak is measured once by a jitted square-matmul probe and cached
in ~/.cache/research/peak_flops.json by CPU model and dtype. Simulated CPU devices
(--xla_force_host_platform_device_count) share the same cores, so on CPU the peak is the machine's,
not multiplied by the device count.
"""

import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

# Dense bfloat16 peak FLOP/s per device, from the vendors' published specifications.
DEVICE_PEAK_FLOPS = {
    'TPU v2': 45e12 / 2,  # per core; jax sees each v2/v3 core as a device
    'TPU v3': 123e12 / 2,
    'TPU v4': 275e12,
    'TPU v5 lite': 197e12,
    'TPU v5e': 197e12,
    'TPU v5p': 459e12,
    'TPU v5': 459e12,
    'TPU v6 lite': 918e12,
    'TPU v6e': 918e12,
    'NVIDIA A100-SXM4-40GB': 312e12,
    'NVIDIA A100-SXM4-80GB': 312e12,
    'NVIDIA H100 80GB HBM3': 989e12,
    'NVIDIA H200': 989e12,
}
_CACHE = os.path.join(os.path.expanduser('~'), '.cache', 'research', 'peak_flops.json')


def matmul_flops_per_second(dtype=jnp.float32, sizes=(1024, 2048), repeats: int = 5) -> float:
  """The best FLOP/s of a jitted square matmul over a few sizes, after compilation (median of repeats)."""
  best = 0.0
  for n in sizes:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    matmul(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      matmul(a, a).block_until_ready()
      times.append(time.perf_counter() - start)
    best = max(best, 2 * n ** 3 / float(np.median(times)))
  return best


def _cpu_name() -> str:
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def peak_flops_per_second(dtype: str = 'float32') -> float:
  """Peak FLOP/s of all local devices together, for MFU."""
  device = jax.local_devices()[0]
  if device.platform != 'cpu':
    for kind, flops in DEVICE_PEAK_FLOPS.items():
      if device.device_kind.startswith(kind):
        return flops * jax.local_device_count()
    raise ValueError(f'No peak FLOP/s is known for device kind {device.device_kind!r}; add it to '
                     'DEVICE_PEAK_FLOPS in research/peak_flops.py.')
  key = f'{_cpu_name()} x{os.cpu_count()} jax {jax.__version__} {dtype}'
  try:
    with open(_CACHE, encoding='utf-8') as f:
      cache = json.load(f)
  except (OSError, ValueError):
    cache = {}
  if key not in cache:
    with jax.default_device(device):
      cache[key] = matmul_flops_per_second(jnp.dtype(dtype))
    try:
      os.makedirs(os.path.dirname(_CACHE), exist_ok=True)
      tmp = f'{_CACHE}.{os.getpid()}.tmp'
      with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(cache, f, indent=1)
      os.replace(tmp, _CACHE)
    except OSError:
      pass  # an unwritable home only costs re-measuring next time
  return cache[key]
