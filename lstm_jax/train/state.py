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
  average: Any = None  # averaged SGD (optimizer.averaging): {"params": the average, "count": int32 iterates in it,
                       # 0 until averaging starts}; None without averaging


def create_train_state(model, optimizer: optax.GradientTransformation, seed: int, batch_size: int,
                       averaging: bool = False) -> TrainState:
  """Fresh parameters from ``seed``, the optimizer's initial state, step 0 and a zero carry ``[batch, hidden]``;
  with ``averaging``, an empty parameter average (count 0)."""
  init_key, train_key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key)
  average = {"params": jax.tree.map(jnp.copy, params), "count": jnp.zeros((), jnp.int32)} if averaging else None
  return TrainState(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32),
                    rng=train_key, carry=model.zero_carry(batch_size), average=average)


def update_average(average: Any, params: Any) -> Any:
  """The running mean of the iterates once averaging has started (``count > 0``): one more iterate in it;
  unchanged before. Pure, for the jitted step."""
  if average is None:
    return None
  started = average["count"] > 0
  count = average["count"] + started.astype(jnp.int32)
  weight = jnp.where(started, 1.0 / jnp.maximum(count, 1).astype(jnp.float32), 0.0)
  mean = jax.tree.map(lambda a, p: a + (p - a) * weight.astype(a.dtype), average["params"], params)
  return {"params": mean, "count": count}


def start_average(state: TrainState) -> TrainState:
  """The state with averaging started at its current parameters (count 1)."""
  return state._replace(average={"params": jax.tree.map(jnp.copy, state.params), "count": jnp.ones((), jnp.int32)})


def evaluation_params(state: TrainState) -> Any:
  """What evaluation, generation and "best" use: the average once averaging has started, else the parameters."""
  if state.average is not None and int(state.average["count"]) > 0:
    return state.average["params"]
  return state.params


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
    fields = _without_empty_average(self.state._asdict())
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
  fields = _without_empty_average(state._asdict())
  fields["rng"] = jax.eval_shape(jax.random.key_data, state.rng)
  tree = {"train": fields, "position": {"epoch": np.int64(0), "batch": np.int64(0)},
          "epoch_sums": {"nll": jnp.zeros((), jnp.float32), "tokens": np.int64(0)}}
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def _without_empty_average(fields: dict[str, Any]) -> dict[str, Any]:
  """The state's fields as saved: no ``average`` entry without averaging (the checkpoints of such runs)."""
  return {k: v for k, v in fields.items() if not (k == "average" and v is None)}
