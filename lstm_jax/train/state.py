"""The train state and its saved form.

``TrainState`` is what the jitted step reads and returns. A checkpoint holds ``SavedState``'s dict: the state's
fields by name (the RNG key as raw key data), the data position of the next minibatch and the running sums of the
current epoch. ``abstract_saved_state`` gives its shapes and dtypes, the restore target.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array   # int32 scalar: minibatches trained so far
  rng: jax.Array    # base key; step t uses fold_in(rng, t)
  carry: Any        # recurrent state carried between minibatches (sequential sampling)


def create_train_state(model, optimizer: optax.GradientTransformation, seed: int, batch_size: int) -> TrainState:
  """Fresh parameters from ``seed``, the optimizer's initial state, step 0 and a zero carry ``[batch, hidden]``."""
  init_key, train_key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key)
  return TrainState(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32),
                    rng=train_key, carry=model.zero_carry(batch_size))


@dataclasses.dataclass
class SavedState:
  """A train state with where the run stands: ``epoch`` and ``batch`` of the next minibatch (1-based epoch,
  0-based batch) and the current epoch's summed loss (nats) and token count so far."""
  state: TrainState
  epoch: int = 1
  batch: int = 0
  nll_sum: Any = 0.0
  tokens: int = 0

  def to_tree(self) -> dict[str, Any]:
    """The dict a checkpoint's ``state`` item holds (every field by name)."""
    fields = self.state._asdict()
    fields["rng"] = jax.random.key_data(self.state.rng)
    return {"train": fields,
            "position": {"epoch": np.int64(self.epoch), "batch": np.int64(self.batch)},
            "epoch_sums": {"nll": jnp.asarray(self.nll_sum, jnp.float32), "tokens": np.int64(self.tokens)}}

  @classmethod
  def from_tree(cls, tree: dict[str, Any]) -> "SavedState":
    fields = dict(tree["train"])
    fields["rng"] = jax.random.wrap_key_data(jnp.asarray(fields["rng"]))
    state = jax.tree.map(jnp.asarray, TrainState(**fields))
    return cls(state=state, epoch=int(tree["position"]["epoch"]), batch=int(tree["position"]["batch"]),
               nll_sum=jnp.asarray(tree["epoch_sums"]["nll"]), tokens=int(tree["epoch_sums"]["tokens"]))


def abstract_saved_state(state: TrainState) -> dict[str, Any]:
  """The shape/dtype structure of ``SavedState(state).to_tree()`` (``state`` concrete or from ``jax.eval_shape``)."""
  fields = state._asdict()
  fields["rng"] = jax.eval_shape(jax.random.key_data, state.rng)
  tree = {"train": fields, "position": {"epoch": np.int64(0), "batch": np.int64(0)},
          "epoch_sums": {"nll": jnp.zeros((), jnp.float32), "tokens": np.int64(0)}}
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)
