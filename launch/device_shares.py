"""Splitting one machine's devices between sweep points that run side by side (`--parallel=N`).

The machine's accelerator is read from /dev without starting JAX (a process that started it would
hold the devices its children need): TPU chips are /dev/accel* (v2-v4) or /dev/vfio/<n> (v5e and
later), GPUs /dev/nvidia<n>, otherwise the CPU cores this process may run on. Slot k of N gets the
k-th of N equal shares, through the environment each accelerator's runtime reads:

- TPU: one chip per process (TPU_VISIBLE_CHIPS, 1,1,1 process bounds, its own TPU_PROCESS_PORT),
  the layout libtpu supports for independent processes on one host.
- GPU: CUDA_VISIBLE_DEVICES (a subset of the one already set, if any).
- CPU: the process is pinned to its share of the cores (sched_setaffinity), which also sizes
  XLA's thread pool.
"""

import dataclasses
import glob
import os

from research import errors

_TPU_PORT = 8476  # libtpu's default process port; slot k uses _TPU_PORT + k


@dataclasses.dataclass(frozen=True)
class Share:
  """What one slot's process gets: extra environment variables and, on CPU, the cores to run on."""
  env: dict[str, str]
  cpus: frozenset[int] = frozenset()


def detect() -> tuple[str, list[int]]:
  """('tpu' | 'gpu' | 'cpu', the device ids) of this machine, read from /dev and the environment."""
  chips = glob.glob('/dev/accel*') or [
      path for path in glob.glob('/dev/vfio/*') if os.path.basename(path).isdigit()]
  if chips:
    return 'tpu', list(range(len(chips)))
  gpus = sorted(int(path[len('/dev/nvidia'):]) for path in glob.glob('/dev/nvidia[0-9]*'))
  if gpus:
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    return 'gpu', [int(i) for i in visible.split(',') if i.strip()] if visible else gpus
  return 'cpu', sorted(os.sched_getaffinity(0))


def shares(kind: str, devices: list[int], parallel: int) -> list[Share]:
  """`parallel` equal, disjoint shares of `devices` (as `detect` returns them)."""
  if parallel < 1:
    raise errors.UserError(f'--parallel={parallel} must be at least 1.')
  if parallel == 1:
    return [Share({})]
  if len(devices) < parallel or len(devices) % parallel:
    raise errors.UserError(
        f'--parallel={parallel} does not split this machine\'s {len(devices)} {kind.upper()} '
        f'device(s) into equal shares; use a --parallel that divides {len(devices)}.')
  size = len(devices) // parallel
  parts = [devices[k * size:(k + 1) * size] for k in range(parallel)]
  if kind == 'cpu':
    return [Share({}, frozenset(part)) for part in parts]
  if kind == 'gpu':
    return [Share({'CUDA_VISIBLE_DEVICES': ','.join(map(str, part))}) for part in parts]
  if size != 1:
    raise errors.UserError(
        f'--parallel={parallel} would give each point {size} TPU chips; points running side by '
        f'side on a TPU VM get one chip each: use --parallel={len(devices)} or --parallel=1.')
  return [Share({'TPU_VISIBLE_CHIPS': str(chip), 'TPU_PROCESS_BOUNDS': '1,1,1',
                 'TPU_CHIPS_PER_PROCESS_BOUNDS': '1,1,1', 'TPU_PROCESS_PORT': str(_TPU_PORT + k),
                 'TPU_PROCESS_ADDRESSES': f'localhost:{_TPU_PORT + k}', 'CLOUD_TPU_TASK_ID': '0'})
          for k, (chip,) in enumerate(parts)]
