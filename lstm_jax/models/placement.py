"""Where a model runs: the platform its kernels are built for, the devices its batch (or a population's members)
is split over, and what those devices split. The run decides it and passes it where the model is built
(``lstm_jax.models.factory.from_config(model_config, vocab_size, placement=...)``): a training run takes the
default (this machine), ``lstm_jax.aot`` a chip this machine lacks (``Target.placement``), and
``lstm_jax.sweeps.population`` the members over its devices. Configs do not carry it.

``target`` "cuda" / "tpu" builds the kernels for that platform (to lower or compile train steps for a chip this
machine lacks; ``recurrence=auto`` resolves as there). ``split`` "batch" is data parallel, one kernel per device
(``lstm_jax.kernels.sharded``); "members" is a population whose members do not divide over the devices and are
replicated on each, where no kernel call can go (``lstm_jax.kernels.envelope``).
"""

from __future__ import annotations

import dataclasses

TARGETS = ("", "cuda", "tpu")
SPLITS = ("batch", "members")


@dataclasses.dataclass(frozen=True)
class Placement:
  """Where a model runs; every field is checked when the placement is made (one-line ``ValueError``)."""
  target: str = ""      # "": kernels for this machine; "cuda" / "tpu": kernels built for that platform
  devices: int = 0      # devices the batch (or the members) is split over; 0: jax.device_count()
  split: str = "batch"  # what those devices split: "batch" (data parallel) or "members" (a population's)

  def __post_init__(self):
    if self.target not in TARGETS:
      raise ValueError(f"Placement target={self.target!r}: choose '' (this machine), 'cuda' or 'tpu'.")
    if not isinstance(self.devices, int) or isinstance(self.devices, bool) or self.devices < 0:
      raise ValueError(f"Placement devices={self.devices!r}: give a device count >= 1, or 0 for all of them.")
    if self.split not in SPLITS:
      raise ValueError(f"Placement split={self.split!r}: choose 'batch' (data parallel) or 'members'.")
