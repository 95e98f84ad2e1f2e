"""Device mesh, logical-axis rules and the placement of arrays on the mesh.

The mesh has the axes ('data', 'fsdp', 'tensor', 'expert') with sizes from `config.mesh`; -1 takes
all remaining devices. On a multislice TPU job, `config.mesh.dcn_<axis>` says how many slices an
axis spans (`device_grid`). `expert` is expert parallelism: mixture-of-experts weights and the tokens
dispatched to them split over it by expert (logical axis `expert`), while the rest of the model
treats it as one more data-parallel axis (the default rules put it in `batch`). Parameters carry logical axis names (research/model/layers.py) and
`config.mesh.rules` maps each logical name to mesh axes, as t5x and MaxText do.
"""

import contextlib
import math
import os

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from research import errors

MESH_AXES = ('data', 'fsdp', 'tensor', 'expert')


def maybe_initialize_distributed(distributed: ml_collections.ConfigDict) -> None:
  """Calls jax.distributed.initialize when the config or the environment asks for it.

  It runs when `distributed.initialize` is true, a coordinator address is configured, or the
  environment sets JAX_COORDINATOR_ADDRESS. Explicit `coordinator_address`, `num_processes` and
  `process_id` are passed on, from the config or else from the environment variables
  JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (so one command line serves every
  process); left unset, JAX detects them (TPU pods, SLURM, Open MPI).
  """
  address = distributed.coordinator_address or os.environ.get('JAX_COORDINATOR_ADDRESS', '')
  if not (distributed.initialize or address) or jax.distributed.is_initialized():
    return
  # Cross-process collectives between CPU devices (tests, CPU clusters); no effect on TPU or GPU.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  kwargs = {}
  if address:
    kwargs['coordinator_address'] = address
  for key, env in (('num_processes', 'JAX_NUM_PROCESSES'), ('process_id', 'JAX_PROCESS_ID')):
    value = distributed[key] if distributed[key] >= 0 else int(os.environ.get(env, -1))
    if value >= 0:
      kwargs[key] = value
  jax.distributed.initialize(**kwargs)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
  """Resolves the -1 entry of `config.mesh` so that the product equals `num_devices`."""
  sizes = {axis: mesh_config[axis] for axis in MESH_AXES}
  for axis, size in sizes.items():
    if size == 0 or size < -1:
      raise errors.UserError(f'mesh.{axis}={size} is not a valid mesh size; use a positive size or -1 '
                             '(all remaining devices).')
  free = [axis for axis, size in sizes.items() if size == -1]
  if len(free) > 1:
    raise errors.UserError(f'mesh.{" and mesh.".join(free)} are all -1; at most one mesh axis can take '
                           'the remaining devices.')
  fixed = math.prod(size for size in sizes.values() if size != -1)
  if free:
    if num_devices % fixed:
      raise errors.UserError(f'The mesh axes other than mesh.{free[0]} use {fixed} devices, which does not '
                             f'divide the {num_devices} devices here; choose sizes whose product divides '
                             f'{num_devices}.')
    sizes[free[0]] = num_devices // fixed
  total = math.prod(sizes.values())
  if total != num_devices:
    shape = ' x '.join(f'{a}={s}' for a, s in sizes.items())
    raise errors.UserError(f'The mesh {shape} needs {total} devices but {num_devices} are available; set '
                           f'the mesh sizes (mesh.data, mesh.fsdp, mesh.tensor, mesh.expert) so that their product is '
                           f'{num_devices}, or use -1 for one axis.')
  return tuple(sizes[axis] for axis in MESH_AXES)


def num_slices(devices) -> int:
  """How many slices (ICI domains, joined by the data-centre network) `devices` are in: a TPU
  device's `slice_index`; 1 on CPUs and GPUs, which have none."""
  return len({getattr(device, 'slice_index', 0) for device in devices})


def dcn_shape(mesh_config: ml_collections.ConfigDict, shape: tuple[int, ...],
              slices: int) -> tuple[int, ...]:
  """How many slices each mesh axis spans (`mesh.dcn_<axis>`, default 1), checked against the
  axis sizes `shape` and the number of `slices`."""
  dcn = tuple(mesh_config.get(f'dcn_{axis}', 1) for axis in MESH_AXES)
  for axis, size, spans in zip(MESH_AXES, shape, dcn):
    if spans < 1 or size % spans:
      raise errors.UserError(f'mesh.dcn_{axis}={spans} must be a positive divisor of mesh.{axis}='
                             f'{size} (the slices that axis spans; its size is over all of them).')
  if math.prod(dcn) != slices:
    spanned = ' x '.join(f'mesh.dcn_{a}={d}' for a, d in zip(MESH_AXES, dcn) if d > 1) or (
        'mesh.dcn_*=1')
    raise errors.UserError(f'The devices are in {slices} slices, but {spanned} spans '
                           f'{math.prod(dcn)}; set mesh.dcn_* so that their product is {slices} '
                           f'(mesh.dcn_data={slices}: each slice a data-parallel replica).')
  return dcn


def device_grid(mesh_config: ml_collections.ConfigDict, devices) -> np.ndarray:
  """`devices` laid out in the mesh of `config.mesh`: within a slice by the ICI topology
  (mesh_utils.create_device_mesh); over several slices, each axis crossing only the slices that
  `mesh.dcn_<axis>` gives it (mesh_utils.create_hybrid_device_mesh), so the axes whose
  collectives are heavy (fsdp, tensor) stay on the fast links and the data axis takes the slow
  data-centre network, as in MaxText's multislice meshes."""
  shape = mesh_shape(mesh_config, len(devices))
  dcn = dcn_shape(mesh_config, shape, num_slices(devices))
  if math.prod(dcn) == 1:
    return mesh_utils.create_device_mesh(shape, devices)
  return mesh_utils.create_hybrid_device_mesh(
      tuple(size // spans for size, spans in zip(shape, dcn)), dcn, devices)


def make_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
  return Mesh(device_grid(mesh_config, jax.devices() if devices is None else devices), MESH_AXES)


def logical_rules(mesh_config: ml_collections.ConfigDict) -> tuple[tuple[str, object], ...]:
  """`config.mesh.rules` as the (logical axis, mesh axes) pairs Flax expects."""
  rules = []
  for logical, mesh_axes in mesh_config.rules.items():
    axes = mesh_axes if isinstance(mesh_axes, (tuple, list)) else (mesh_axes,)
    for axis in axes:
      if axis is not None and axis not in MESH_AXES:
        raise errors.UserError(f'mesh.rules.{logical} maps to the unknown mesh axis {axis!r}; mesh axes '
                               f'are {MESH_AXES}.')
    rules.append((logical, tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes))
  return tuple(rules)


@contextlib.contextmanager
def activate(mesh: Mesh, rules):
  """Makes `mesh` and the logical rules current, so activation constraints in the model apply."""
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    yield


def logical_shardings(abstract_tree, mesh: Mesh, rules):
  """NamedShardings for a tree whose leaves are (possibly) boxed with logical axis names."""
  specs = nn.get_partition_spec(abstract_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Sharding of [batch, length] arrays: the batch over the mesh axes of the `batch` rule."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(('batch', 'length'), rules))


def check_divisible(abstract_tree, shardings) -> None:
  """Fails naming the parameter, its dimension and the mesh axes when the mesh splits a
  dimension of `abstract_tree` (shapes, e.g. the parameters) into unequal parts."""
  leaves = jax.tree_util.tree_leaves_with_path(abstract_tree)
  for (path, leaf), leaf_sharding in zip(leaves, jax.tree.leaves(shardings)):
    mesh = leaf_sharding.mesh
    for dim, (size, axes) in enumerate(zip(leaf.shape, leaf_sharding.spec)):
      axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
      parts = math.prod(mesh.shape[axis] for axis in axes)
      if size % parts:
        sizes = ', '.join(f'mesh.{axis}={mesh.shape[axis]}' for axis in axes)
        raise errors.UserError(
            f'Parameter {jax.tree_util.keystr(path)} has {size} along dimension {dim}, which '
            f'{sizes} cannot split into {parts} equal parts; choose mesh sizes that divide the '
            'model\'s dimensions (model.num_heads, model.num_kv_heads, model.mlp_dim, '
            'model.d_model, model.vocab_size) or resize the model.')


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_axes(rules) -> tuple[str, ...]:
  """The mesh axes the batch dimension is split over (from the `batch` rule)."""
  spec = nn.logical_to_mesh_axes(('batch',), rules)[0]
  return () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)


def data_parallel_size(shape: dict[str, int], rules) -> int:
  """How many ways the batch is split: the product of the batch axes' sizes in `shape` (mesh.shape)."""
  return math.prod(shape[axis] for axis in batch_axes(rules))


def process_rows(sharding: NamedSharding, batch_size: int) -> np.ndarray:
  """int64 [R]: the rows of a global [batch_size, ...] batch that this process's devices hold,
  ascending: the union of their shards' rows (`addressable_devices_indices_map`).

  All the rows when the batch is not split across processes (mesh data=1, tensor=4 over two hosts:
  every device holds the whole batch); 1/P of them when its axes span P processes. Levanter's
  loader takes a process's rows the same way, so the global batch never depends on the host count.
  """
  rows = set()
  for index in sharding.addressable_devices_indices_map((batch_size,)).values():
    rows.update(range(*index[0].indices(batch_size)))
  return np.array(sorted(rows), np.int64)


def global_batch(batch: dict[str, np.ndarray], sharding: NamedSharding,
                 batch_size: int | None = None) -> dict:
  """Global jax.Arrays of a batch whose rows each process computed in part (the same code single-
  and multi-host). With `batch_size`, `batch` holds this process's rows of a global batch of that
  many rows (`process_rows(sharding, batch_size)`, in order); without, `batch` is the whole global
  batch and each process keeps its rows of it."""
  if batch_size is None:
    batch_size = len(next(iter(batch.values())))
    rows = process_rows(sharding, batch_size)
    batch = {k: v[rows] for k, v in batch.items()}
  else:
    rows = process_rows(sharding, batch_size)

  def from_rows(local: np.ndarray):
    def shard(index):
      wanted = np.arange(batch_size)[index[0]]
      return local[np.searchsorted(rows, wanted)][(slice(None), *index[1:])]
    return jax.make_array_from_callback((batch_size, *local.shape[1:]), sharding, shard)

  for key, local in batch.items():
    if len(local) != len(rows):
      raise ValueError(f'Batch entry {key!r} has {len(local)} rows; this process holds {len(rows)} '
                       f'rows of the global batch of {batch_size}.')
  return {k: from_rows(v) for k, v in batch.items()}
