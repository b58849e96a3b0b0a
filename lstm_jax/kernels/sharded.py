"""Data parallel kernels: a Pallas recurrence whose batch is split over several devices runs as one kernel per device.

A ``pallas_call`` is not partitioned by XLA (Mosaic refuses to; on GPUs XLA would gather the batch and run all of
it on every device), so ``split_batch`` wraps the recurrence in a ``jax.shard_map`` over the data axis of the mesh
the step is traced under (``jax.set_mesh``; ``train.compile_train_step`` sets it): each device runs the kernel on
its rows ``[T, B / devices, G]``, the weights replicated. ``W_h``'s gradient is the sum of the devices' gradients
(the transpose of a replicated ``shard_map`` input), so the step equals the one-device step.

Without a mesh, with a data axis of one device, a batch the devices do not divide (the minibatch is then
replicated: every device computes all of it, as XLA does for the rest of the model) or a members axis (a
population: its members, not the batch, are split) the recurrence is called as it is.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
from jax.sharding import PartitionSpec

DATA_AXIS = "data"  # the mesh axis a batch (or a population's members) is split over



def data_devices(batch: int, axis_name: str = DATA_AXIS) -> int:
  """The devices a batch of ``batch`` rows is split over under the current mesh (1: not split)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or axis_name not in mesh.axis_names:
    return 1
  devices = dict(mesh.shape)[axis_name]
  return devices if batch % devices == 0 else 1


def split_batch(recurrence: Callable, axis_name: str = DATA_AXIS) -> Callable:
  """``recurrence(params, xproj [T, B, G], carry [B, H] leaves, unroll)`` run per device on ``B / devices`` rows
  when the batch is split over the current mesh's ``axis_name``; otherwise ``recurrence`` itself."""

  @functools.wraps(recurrence)
  def run(params, xproj_TBG: jax.Array, carry, unroll: int = 1):
    if params["W_h"].ndim == 3 or data_devices(xproj_TBG.shape[1], axis_name) == 1:
      return recurrence(params, xproj_TBG, carry, unroll)
    rows, steps_rows = PartitionSpec(axis_name), PartitionSpec(None, axis_name)
    per_device = jax.shard_map(lambda p, x, c: recurrence(p, x, c, unroll),
                               in_specs=(PartitionSpec(), steps_rows, rows), out_specs=(rows, steps_rows),
                               check_vma=False)  # pallas_call has no varying-axes rule
    return per_device(params, xproj_TBG, carry)

  return run
