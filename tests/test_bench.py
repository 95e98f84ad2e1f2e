"""The benchmark sections run and report what they measure (no assertion on speed)."""

from experiments import base
from launch import bench


def test_data_section_reports_throughput_of_the_configured_batches(data_dir):
  config = base.get_config()
  config.data.cache_dir, config.data.seq_len, config.train.batch_size = data_dir, 64, 4
  result = bench.data_section(config, steps=3, repeats=2)
  assert (result['batch_size'], result['seq_len'], result['steps_per_repeat']) == (4, 64, 3)
  assert 0 < result['tokens_per_second_min'] <= result['tokens_per_second_median'] <= (
      result['tokens_per_second_max'])


def test_matmul_section_measures_both_dtypes():
  result = bench.matmul_section()
  assert set(result) == {'float32_flops_per_second', 'bfloat16_flops_per_second'}
  assert all(value > 1e8 for value in result.values())  # any real CPU does 0.1 GFLOP/s
