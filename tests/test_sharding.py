import jax
import numpy as np
import pytest

from experiments import base
from research import errors, sharding


def _mesh_config(data=-1, fsdp=1, tensor=1, expert=1):
  config = base.get_config()
  mesh = config.mesh
  mesh.data, mesh.fsdp, mesh.tensor, mesh.expert = data, fsdp, tensor, expert
  return mesh


def test_minus_one_takes_the_remaining_devices():
  assert sharding.mesh_shape(_mesh_config(-1, 2, 2), 8) == (2, 2, 2, 1)
  assert sharding.mesh_shape(_mesh_config(2, -1, 1), 8) == (2, 4, 1, 1)
  assert sharding.mesh_shape(_mesh_config(-1, 1, 1), 1) == (1, 1, 1, 1)
  assert sharding.mesh_shape(_mesh_config(-1, 1, 1, 2), 8) == (4, 1, 1, 2)


@pytest.mark.parametrize('sizes, message', [
    ((4, 2, 2), r'needs 16 devices but 8 are available'),
    ((-1, -1, 1), r'mesh.data and mesh.fsdp are all -1'),
    ((-1, 3, 1), r'use 3 devices, which does not divide the 8 devices'),
    ((0, 1, 1), r'mesh.data=0 is not a valid mesh size'),
])
def test_bad_meshes_name_the_key(sizes, message):
  with pytest.raises(errors.UserError, match=message):
    sharding.mesh_shape(_mesh_config(*sizes), 8)


def test_rules_name_unknown_mesh_axes():
  config = base.get_config()
  config.mesh.rules.mlp = 'model'
  with pytest.raises(errors.UserError, match=r"mesh.rules.mlp maps to the unknown mesh axis 'model'"):
    sharding.logical_rules(config.mesh)


@pytest.mark.parametrize('tensor, expert, rows', [(2, 1, 2), (1, 2, 1)])
def test_batch_is_split_over_data_fsdp_and_expert(tensor, expert, rows):
  config = base.get_config()
  mesh_config = config.mesh
  mesh_config.data, mesh_config.fsdp, mesh_config.tensor, mesh_config.expert = 2, 2, tensor, expert
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.logical_rules(config.mesh)
  assert sharding.batch_axes(rules) == ('data', 'fsdp', 'expert')
  assert sharding.data_parallel_size(mesh.shape, rules) == 4 * expert
  batch = {'x': np.arange(8 * 3).reshape(8, 3)}
  placed = sharding.global_batch(batch, sharding.batch_sharding(mesh, rules))['x']
  np.testing.assert_array_equal(placed, batch['x'])
  assert placed.sharding.spec == jax.sharding.PartitionSpec(('data', 'fsdp', 'expert'), None)
  assert {s.data.shape for s in placed.addressable_shards} == {(rows, 3)}
