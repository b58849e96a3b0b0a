"""Placement of arrays on the visible devices with ``jax.sharding``: a 1-D mesh whose one axis splits a leading
dimension (the batch in data-parallel training, the members in population training); everything else replicated.

On a single device every function returns its input unchanged, so one code path serves 1 and N devices. Every
process of a multi-host job computes the same global arrays (batches are a pure function of seed and epoch,
parameters of the seed), and ``put`` builds the global array from the shards that live on its own devices.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lstm_jax.kernels.sharded import DATA_AXIS


def mesh(devices: list[jax.Device] | None = None, axis_name: str = DATA_AXIS) -> Mesh:
  """A 1-D mesh over ``devices`` (default: every device of every process)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (axis_name,))


def leading_axis(mesh_: Mesh, size: int) -> NamedSharding:
  """Splits a leading dimension of ``size`` over the mesh, or replicates when it does not divide evenly."""
  axis = mesh_.axis_names[0]
  return NamedSharding(mesh_, PartitionSpec(axis) if size % mesh_.size == 0 else PartitionSpec())


def replicated(mesh_: Mesh) -> NamedSharding:
  return NamedSharding(mesh_, PartitionSpec())


def put(x: Any, sharding: NamedSharding) -> jax.Array:
  """``jax.device_put`` that also reaches devices of other processes: every process passes the same global value
  ``x`` and contributes the shards of its own devices (``jax.make_array_from_callback``)."""
  if sharding.is_fully_addressable:
    return jax.device_put(x, sharding)
  if isinstance(x, jax.Array) and not x.is_fully_addressable:  # already global: reshard inside XLA
    return x if x.sharding == sharding else jax.jit(lambda a: a, out_shardings=sharding)(x)
  if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):  # typed keys travel as their key data
    return jax.random.wrap_key_data(put(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x))
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def split_leading(tree: Any, mesh_: Mesh) -> Any:
  """Places every array of ``tree`` split along its leading dimension (replicated where it does not divide)."""
  if mesh_.size == 1:
    return tree
  return jax.tree.map(lambda x: put(x, leading_axis(mesh_, np.shape(x)[0])), tree)


def replicate(tree: Any, mesh_: Mesh) -> Any:
  if mesh_.size == 1:
    return tree
  return jax.tree.map(lambda x: put(x, replicated(mesh_)), tree)


def place_train_state(state: Any, mesh_: Mesh) -> Any:
  """Data parallel: parameters, optimizer state, step and RNG replicated; the carried state ``[B, H]`` split by
  batch row like the minibatches it continues."""
  if mesh_.size == 1:
    return state
  return replicate(state._replace(carry=None), mesh_)._replace(carry=split_leading(state.carry, mesh_))


def data_parallel_mesh(batch_size: int) -> Mesh:
  """The mesh for data-parallel training over every visible device (warns when the batch cannot be split)."""
  mesh_ = mesh()
  if batch_size % mesh_.size:
    logging.warning("data.batch_size=%d does not divide over %d devices: minibatches are replicated, not split; "
                    "set --config.data.batch_size to a multiple of %d.", batch_size, mesh_.size, mesh_.size)
  return mesh_
