"""The benchmark sections run and report what they measure (no assertion on speed)."""

import pytest

from experiments import base
from launch import bench
from research import errors


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


def test_moe_section_times_the_experts_against_a_dense_mlp_of_the_same_active_width():
  config = base.get_config()
  config.model.update(d_model=32, moe_experts=4, moe_top_k=2, moe_mlp_dim=16)
  config.data.seq_len, config.train.batch_size = 16, 2
  result = bench.moe_section(config, repeats=2)
  assert [result[k] for k in ('experts', 'top_k', 'expert_dim', 'tokens')] == [4, 2, 16, 32]
  assert result['moe_milliseconds'] > 0 and result['dense_milliseconds'] > 0
  assert result['moe_over_dense'] == pytest.approx(
      result['moe_milliseconds'] / result['dense_milliseconds'])
  config.model.moe_experts = 0
  with pytest.raises(errors.UserError, match='model.moe_experts=0'):
    bench.moe_section(config)
