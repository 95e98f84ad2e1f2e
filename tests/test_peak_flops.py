"""Peak FLOP/s (research/peak_flops.py): the table's figure follows the run's compute dtype."""

import json
import types

import jax
import pytest

from research import peak_flops


@pytest.mark.parametrize('kind, dtype, expected', [
    ('NVIDIA A100-SXM4-80GB', 'bfloat16', 312e12),
    ('NVIDIA A100-SXM4-80GB', 'float32', 156e12),  # dense TF32
    ('NVIDIA H100 80GB HBM3', 'bfloat16', 989e12),
    ('NVIDIA H100 80GB HBM3', 'float32', 494.7e12),
    ('NVIDIA H200', 'float32', 494.7e12),
    ('TPU v4', 'float32', 275e12),  # one bfloat16 pass at default precision
    ('TPU v5 lite', 'bfloat16', 197e12),
])
def test_device_peak_is_the_compute_dtype_s(kind, dtype, expected):
  assert peak_flops.device_peak_flops(kind, dtype) == expected


def test_unknown_device_kinds_and_dtypes_are_named():
  with pytest.raises(ValueError, match="device kind 'NVIDIA T4'"):
    peak_flops.device_peak_flops('NVIDIA T4', 'float32')
  with pytest.raises(ValueError, match="compute dtype 'float16'"):
    peak_flops.device_peak_flops('NVIDIA H200', 'float16')


def test_a_float32_run_on_gpus_is_measured_against_the_tf32_peak_of_all_local_devices(monkeypatch):
  gpu = types.SimpleNamespace(platform='gpu', device_kind='NVIDIA H100 80GB HBM3')
  monkeypatch.setattr(jax, 'local_devices', lambda: [gpu] * 8)
  monkeypatch.setattr(jax, 'local_device_count', lambda: 8)
  assert peak_flops.peak_flops_per_second('float32') == 8 * 494.7e12
  assert peak_flops.peak_flops_per_second('bfloat16') == 8 * 989e12


def test_a_cpu_peak_is_the_best_probe_ever_measured(monkeypatch, tmp_path):
  """A probe that ran on loaded cores reads low; the peak kept is the best measurement, so one
  low probe neither lowers it nor lasts."""
  cache = tmp_path / 'peak_flops.json'
  monkeypatch.setattr(peak_flops, '_CACHE', str(cache))
  probes = iter([100e9, 300e9, 200e9])
  monkeypatch.setattr(peak_flops, 'matmul_flops_per_second', lambda *a, **k: next(probes))
  assert [peak_flops.peak_flops_per_second() for _ in range(3)] == [100e9, 300e9, 300e9]
  assert list(json.loads(cache.read_text()).values()) == [300e9]
