"""Peak FLOP/s of the devices, the denominator of model FLOPs utilisation (MFU).

On TPU and GPU the peak comes from a table of dense FLOP/s per chip by device kind and the run's
compute dtype (config model.dtype), for matmuls at JAX's default precision, which this project
keeps:

- bfloat16: the chip's dense bfloat16 peak.
- float32: on NVIDIA GPUs from Ampere on, XLA runs float32 matmuls on the tensor cores as TF32, so
  the peak is the dense TF32 figure (A100 156 TFLOP/s, H100 SXM and H200 494.7 TFLOP/s: half the
  bfloat16 one). On TPUs a float32 matmul at default precision is one bfloat16 pass on the MXU, so
  the peak is the bfloat16 one. (A run that raised jax_default_matmul_precision to 'highest' would
  make each TPU matmul 6 bfloat16 passes and each GPU matmul true float32; its MFU against this
  table would read too low. Nothing here sets it.)

On CPU there is no reliable table, so the peak is measured by a jitted square-matmul probe at every
call and the best measurement ever made is kept in ~/.cache/research/peak_flops.json by CPU model
and dtype: a probe that ran while other work loaded the cores (a test suite, a sweep's other
points) reads low, and a peak kept from it would put MFU above 1 on an idle machine. Simulated CPU devices
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


def _tpu(bfloat16: float) -> dict[str, float]:
  """A TPU's peaks: at default precision a float32 matmul is one bfloat16 pass."""
  return {'bfloat16': bfloat16, 'float32': bfloat16}


# Dense peak FLOP/s per device by compute dtype, from the vendors' published specifications.
DEVICE_PEAK_FLOPS = {
    'TPU v2': _tpu(45e12 / 2),  # per core; jax sees each v2/v3 core as a device
    'TPU v3': _tpu(123e12 / 2),
    'TPU v4': _tpu(275e12),
    'TPU v5 lite': _tpu(197e12),
    'TPU v5e': _tpu(197e12),
    'TPU v5p': _tpu(459e12),
    'TPU v5': _tpu(459e12),
    'TPU v6 lite': _tpu(918e12),
    'TPU v6e': _tpu(918e12),
    'NVIDIA A100-SXM4-40GB': {'bfloat16': 312e12, 'float32': 156e12},  # float32: TF32
    'NVIDIA A100-SXM4-80GB': {'bfloat16': 312e12, 'float32': 156e12},
    'NVIDIA H100 80GB HBM3': {'bfloat16': 989e12, 'float32': 494.7e12},
    'NVIDIA H200': {'bfloat16': 989e12, 'float32': 494.7e12},
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


def device_peak_flops(device_kind: str, dtype: str) -> float:
  """The table's peak FLOP/s of one TPU or GPU of `device_kind` computing in `dtype`."""
  for kind, peaks in DEVICE_PEAK_FLOPS.items():
    if device_kind.startswith(kind):
      if dtype not in peaks:
        raise ValueError(f'No peak FLOP/s is known for compute dtype {dtype!r}; known: '
                         f'{sorted(peaks)}.')
      return peaks[dtype]
  raise ValueError(f'No peak FLOP/s is known for device kind {device_kind!r}; add it to '
                   'DEVICE_PEAK_FLOPS in research/peak_flops.py.')


def peak_flops_per_second(dtype: str = 'float32') -> float:
  """Peak FLOP/s of all local devices together computing in `dtype` (model.dtype), for MFU."""
  device = jax.local_devices()[0]
  if device.platform != 'cpu':
    return device_peak_flops(device.device_kind, dtype) * jax.local_device_count()
  key = f'{_cpu_name()} x{os.cpu_count()} jax {jax.__version__} {dtype}'
  try:
    with open(_CACHE, encoding='utf-8') as f:
      cache = json.load(f)
  except (OSError, ValueError):
    cache = {}
  with jax.default_device(device):
    measured = matmul_flops_per_second(jnp.dtype(dtype), repeats=3)
  if measured > cache.get(key, 0.0):
    cache[key] = measured
    try:
      os.makedirs(os.path.dirname(_CACHE), exist_ok=True)
      tmp = f'{_CACHE}.{os.getpid()}.tmp'
      with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(cache, f, indent=1)
      os.replace(tmp, _CACHE)
    except OSError:
      pass  # an unwritable home keeps no best: each call has its own measurement
  return cache[key]
