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


def test_one_process_holds_every_row_and_places_a_batch_given_by_rows():
  mesh = sharding.make_mesh(_mesh_config(2, 2, 2))
  batch_sharding = sharding.batch_sharding(mesh, sharding.logical_rules(_mesh_config(2, 2, 2)))
  np.testing.assert_array_equal(sharding.process_rows(batch_sharding, 8), np.arange(8))
  rows = {'x': np.arange(8 * 3).reshape(8, 3)}
  placed = sharding.global_batch(rows, batch_sharding, batch_size=8)['x']
  np.testing.assert_array_equal(placed, rows['x'])
  with pytest.raises(ValueError, match=r"'x' has 4 rows; this process holds 8 rows"):
    sharding.global_batch({'x': rows['x'][:4]}, batch_sharding, batch_size=8)


def test_a_mesh_that_cannot_split_a_parameter_names_it():
  mesh = sharding.make_mesh(_mesh_config(2, 1, 4))
  abstract = {'attention': {'query': jax.ShapeDtypeStruct((16, 2, 8), np.float32)}}
  shardings = {'attention': {'query': jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec(None, 'tensor', None))}}
  with pytest.raises(errors.UserError, match=r"\['attention'\]\['query'\] has 2 along dimension 1, "
                     r'which mesh.tensor=4 cannot split'):
    sharding.check_divisible(abstract, shardings)
  abstract['attention']['query'] = jax.ShapeDtypeStruct((16, 4, 8), np.float32)
  sharding.check_divisible(abstract, shardings)
