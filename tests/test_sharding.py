import dataclasses

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


@dataclasses.dataclass(frozen=True)
class _Device:
  """What mesh_utils reads of a TPU device of a multislice job (no TPU needed)."""
  id: int
  slice_index: int
  platform: str = 'cpu'
  device_kind: str = 'cpu'


def _slices(num_slices: int, per_slice: int) -> list[_Device]:
  """Devices listed with the slices interleaved, so a layout in list order mixes the slices."""
  return [_Device(i, i % num_slices) for i in range(num_slices * per_slice)]


def test_two_slices_put_the_data_axis_across_them_and_keep_the_others_inside():
  config = _mesh_config(data=4, fsdp=2, tensor=2)
  config.dcn_data = 2
  grid = sharding.device_grid(config, _slices(2, 8))
  assert grid.shape == (4, 2, 2, 1)
  slice_of = np.vectorize(lambda device: device.slice_index)(grid)
  # Each fsdp x tensor block, the collectives that run every layer, is inside one slice; the data
  # axis's first half is slice 0 and its second half slice 1.
  assert (slice_of == np.array([0, 0, 1, 1])[:, None, None, None]).all()
  config.dcn_data, config.dcn_fsdp, config.fsdp, config.data = 1, 2, 4, 2
  grid = sharding.device_grid(config, _slices(2, 8))
  slice_of = np.vectorize(lambda device: device.slice_index)(grid)
  assert (slice_of == np.array([0, 0, 1, 1])[None, :, None, None]).all()  # fsdp across, by choice
  assert (np.ptp(slice_of, axis=2) == 0).all()  # tensor never crosses


@pytest.mark.parametrize('dcn, message', [
    ({}, r'The devices are in 2 slices, but mesh.dcn_\*=1 spans 1; set mesh.dcn_\* so that their '
         r'product is 2 \(mesh.dcn_data=2'),
    ({'dcn_data': 4}, r'mesh.dcn_data=4 spans 4'),
    ({'dcn_tensor': 3}, r'mesh.dcn_tensor=3 must be a positive divisor of mesh.tensor=2'),
    ({'dcn_data': 0}, r'mesh.dcn_data=0 must be a positive divisor'),
])
def test_dcn_sizes_that_do_not_match_the_slices_name_the_key(dcn, message):
  config = _mesh_config(data=4, fsdp=2, tensor=2)
  config.update(dcn)
  with pytest.raises(errors.UserError, match=message):
    sharding.device_grid(config, _slices(2, 8))


def test_one_slice_lays_out_as_before():
  devices = jax.devices()
  assert sharding.num_slices(devices) == 1
  np.testing.assert_array_equal(sharding.device_grid(_mesh_config(2, 2, 2), devices),
                                np.array(devices).reshape(2, 2, 2, 1))


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
