"""Joining a multi-host JAX job: every process of the job runs the same command with ``LSTM_JAX_DISTRIBUTED=1``.

On a TPU VM or under SLURM, ``jax.distributed.initialize()`` finds the coordinator by itself. Elsewhere (a few
machines, or several processes on one: ``launch/multihost.sh``) each process names it:
``LSTM_JAX_COORDINATOR=host:port`` (process 0 listens there), ``LSTM_JAX_NUM_PROCESSES=N``,
``LSTM_JAX_PROCESS_ID=i`` (0..N-1). Process 0 then owns the workdir's lock, metrics, config and plots; every
process feeds the same global batches and orbax writes each checkpoint once.
"""

from __future__ import annotations

from typing import Mapping

import jax

ENABLE = "LSTM_JAX_DISTRIBUTED"
NAMES = {"coordinator_address": "LSTM_JAX_COORDINATOR", "num_processes": "LSTM_JAX_NUM_PROCESSES",
         "process_id": "LSTM_JAX_PROCESS_ID"}


def distributed_args(environ: Mapping[str, str]) -> dict[str, str | int]:
  """``jax.distributed.initialize`` keyword arguments from the environment ({}: let JAX detect the cluster);
  raises ``ValueError`` naming what is missing or malformed."""
  args: dict[str, str | int] = {arg: environ[name] for arg, name in NAMES.items() if environ.get(name)}
  if args and len(args) < len(NAMES):
    raise ValueError(f"set all of {', '.join(NAMES.values())} for a multi-process job without cluster detection "
                     f"(set: {', '.join(NAMES[a] for a in args)}).")
  for arg in ("num_processes", "process_id"):
    if arg in args:
      try:
        args[arg] = int(args[arg])
      except ValueError:
        raise ValueError(f"{NAMES[arg]}={args[arg]!r} is not an integer.") from None
  if args and not 0 <= args["process_id"] < args["num_processes"]:
    raise ValueError(f"{NAMES['process_id']}={args['process_id']} is outside 0..{args['num_processes'] - 1} "
                     f"({NAMES['num_processes']}={args['num_processes']}).")
  return args


def initialize_if_asked(environ: Mapping[str, str]) -> None:
  """Joins the job when ``LSTM_JAX_DISTRIBUTED=1``; nothing otherwise."""
  if environ.get(ENABLE) == "1":
    jax.distributed.initialize(**distributed_args(environ))
