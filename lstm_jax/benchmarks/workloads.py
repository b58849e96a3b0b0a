"""The benchmark's workloads (vocabulary 28; ``lstm_jax.benchmarks.train_step`` says what each is) and ``Runner``,
one implementation of one workload as the timing code (``lstm_jax.benchmarks.timing``) runs it."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np

VOCAB = 28
GENERATE_TOKENS = 1000


@dataclasses.dataclass(frozen=True)
class Workload:
  name: str
  description: str
  num_layers: int
  hidden: int
  batch: int
  steps: int

  def train_flops_per_token(self) -> float:
    """3x the forward's matmul FLOPs per token (layer 0's one-hot projection is a gather: 0)."""
    gates = 4 * self.hidden
    forward = sum(2 * self.hidden * gates + (2 * self.hidden * gates if layer > 0 else 0)
                  for layer in range(self.num_layers)) + 2 * self.hidden * VOCAB
    return 3.0 * forward


WORKLOADS = {
    "W1": Workload("W1", "book: 1x256, batch 32, 35 steps", 1, 256, 32, 35),
    "W2": Workload("W2", "char-RNN: 2x512, batch 64, 100 steps", 2, 512, 64, 100),
    "W3": Workload("W3", "generation: 256, batch 1, 1000 tokens", 1, 256, 1, GENERATE_TOKENS),
    "W4": Workload("W4", "accelerator: 2x1024, batch 128, 100 steps", 2, 1024, 128, 100),
    "tiny": Workload("tiny", "command check: 1x16, batch 4, 5 steps", 1, 16, 4, 5),
}


@dataclasses.dataclass
class Runner:
  """One implementation of one workload: ``call()`` does one unit of work and returns something to wait on."""
  name: str
  call: Callable[[], Any]
  units_per_call: int           # tokens per call
  reference: str = ""           # "torch" / "cudnn": the row the "x PyTorch" / "x cuDNN" ratios divide by
  compile_s: float = float("nan")
  iterations: int = 1
  rates: list[float] = dataclasses.field(default_factory=list)  # tokens/s per round
  estimate: str = ""            # the model's estimated tokens/s on this chip (lstm_jax.estimates), GPU/TPU only


def block(result) -> None:
  """Waits for JAX's asynchronous dispatch; PyTorch on CPU has already finished."""
  if isinstance(result, (jax.Array, tuple, list, dict)):
    jax.block_until_ready(result)



def random_tokens(workload: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  return (rng.integers(0, VOCAB, (workload.batch, workload.steps)).astype(np.int32),
          rng.integers(0, VOCAB, (workload.batch, workload.steps)).astype(np.int32))
