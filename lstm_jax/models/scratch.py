"""A character (or word) language model: input encoding -> stacked recurrent layers -> dense output layer.

Parameters are a pytree::

    {"embed": [V, E]            (only when ``embed_dim`` is set; otherwise inputs are one-hot),
     "layers": ({"W_x": [in, G*H], "W_h": [H, G*H], "b": [G*H]}, ...),   one dict per layer
     "head": {"W": [H, V], "b": [V]}}   (tie_weights: {"b": [V]}, and "proj": [H, E] when H != E; the
                                        output layer is then the embedding transposed)

Regularizers (``weight_drop``, ``locked_dropout``, ``embedding_dropout``, ``recurrent_dropout``, ``ar`` / ``tar``;
``lstm_jax.models.regularizers``) act only in training, when ``apply`` gets a dropout key.

One-hot inputs, as in every edition of D2L, are never materialised: ``one_hot(tokens) @ W_x`` equals the row
gather ``W_x[tokens]``, which is what the first layer's hoisted input projection computes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from lstm_jax import cells
from lstm_jax.cells import initializers
from lstm_jax.cells import matmul as matmul_lib
from lstm_jax.models import regularizers
from lstm_jax.models import variable_length
from lstm_jax.models.placement import Placement

Carry = tuple[Any, ...]  # one carry per layer

# How the recurrence runs and is differentiated. "scan": autodiff through the cell's lax.scan; "fused_vjp": a
# hand-written whole-sequence backward (same results, faster; the cells in FUSED_VJP); "pallas": the Pallas kernels
# of lstm_jax.kernels (the cells in PALLAS: lstm_pallas, rnn_pallas, gru_pallas for the reset-after GRU; interpret
# mode on CPU, for tests); "auto": on a GPU/TPU, the candidate with the lowest estimated train-step time on that chip
# and shape (lstm_jax.estimates; the kernel only inside its envelope), else fused_vjp where one exists, else scan.
RECURRENCES = ("auto", "scan", "fused_vjp", "pallas")
FUSED_VJP = tuple(name for name, family in cells.REGISTRY.items() if family.fused_vjp is not None)
PALLAS = ("lstm", "rnn", "gru_reset_after")
# The minibatch ``resolved_recurrence`` assumes where no shape is given (the book's); ``apply`` resolves ``auto``
# at the shape it is traced with.
DEFAULT_BATCH, DEFAULT_STEPS = 32, 35


def _pallas_recurrence(cell: str):
  # Pallas imports only when a kernel is asked for.
  from lstm_jax.kernels import gru_pallas, lstm_pallas, rnn_pallas  # noqa: PLC0415
  kernels = {"lstm": lstm_pallas, "rnn": rnn_pallas, "gru_reset_after": gru_pallas}
  return kernels[cell].recurrence


def _padded(recurrence, seq_lengths_B: jax.Array, params, xproj_TBG: jax.Array, carry, unroll: int = 1):
  """``recurrence`` over a batch padded after ``seq_lengths [B]`` (``variable_length.masked_recurrence``)."""
  return variable_length.masked_recurrence(recurrence, params, xproj_TBG, carry, seq_lengths_B, unroll=unroll)


@dataclasses.dataclass(frozen=True)
class LanguageModel:
  """Static description of the model; ``init`` and ``apply`` are pure functions of params and inputs."""
  vocab_size: int
  hidden_size: int = 256
  num_layers: int = 1
  cell: str = "lstm"            # a name in lstm_jax.cells.REGISTRY
  embed_dim: int | None = None  # None: one-hot inputs (D2L); an int: a learned embedding of that width
  init_scheme: str = "d2l"      # see lstm_jax.cells.initializers
  forget_bias: float = 0.0      # added to the LSTM forget-gate bias at init
  dropout: float = 0.0          # dropout rate between stacked layers (training only)
  weight_drop: float = 0.0      # DropConnect on each layer's W_h, one mask per minibatch (training only)
  locked_dropout: float = 0.0   # one mask per sequence, the same at every step: on each layer's inputs (the
                                # first layer's with embed_dim) and the top layer's outputs (training only)
  embedding_dropout: float = 0.0  # whole rows of the embedding dropped per minibatch (needs embed_dim)
  recurrent_dropout: float = 0.0  # a mask per sequence on h where it enters h @ W_h (scan, fused_vjp; lstm, rnn)
  tie_weights: bool = False     # output layer = the embedding transposed (needs embed_dim; a [H, E] projection
                                # before it when hidden_size != embed_dim)
  ar: float = 0.0               # training loss + ar * mean(top layer's outputs after dropout ^ 2)
  tar: float = 0.0              # training loss + tar * mean((h_t - h_{t-1}) ^ 2) of the top outputs before dropout
  unroll: int = 1               # lax.scan unroll factor
  recurrence: str = "auto"      # see RECURRENCES
  matmul_dtype: str = "float32"  # float32 | bfloat16: operands of the layers' matmuls (accumulation, state: float32)
  placement: Placement = Placement()  # where it runs (lstm_jax.models.placement); the run sets it, not the config

  def __post_init__(self):
    found = regularizers.problems(dataclasses.asdict(self))
    if found:
      raise ValueError(found[0])

  @property
  def family(self):
    return cells.get_family(self.cell)

  @property
  def platform(self) -> str:
    """The platform the model is built for: ``placement.target``'s ("cuda" -> "gpu", "tpu") when set, else this
    machine's default backend."""
    return {"cuda": "gpu", "tpu": "tpu"}.get(self.placement.target, jax.default_backend())

  @property
  def resolved_recurrence(self) -> str:
    """The recurrence ``recurrence`` selects for this cell on ``platform`` at the book's minibatch (32 x 35)."""
    return self.recurrence_for(DEFAULT_BATCH, DEFAULT_STEPS)

  def recurrence_for(self, batch: int, steps: int) -> str:
    """The recurrence ``recurrence`` selects for ``[batch, steps]`` minibatches: an explicit one as it is; ``auto``
    on a GPU/TPU the lowest estimate of ``lstm_jax.estimates`` (the kernel only inside its envelope), elsewhere
    fused_vjp where the cell has one, else scan."""
    if self.recurrence not in RECURRENCES:
      raise ValueError(f"Unknown recurrence {self.recurrence!r}; choose one of {RECURRENCES} "
                       f"(--config.model.recurrence=NAME).")
    for name, supported in (("fused_vjp", FUSED_VJP), ("pallas", PALLAS)):
      if self.recurrence == name and self.cell not in supported:
        raise ValueError(f"recurrence={name!r} exists only for cells {sorted(supported)}, not {self.cell!r}; "
                         f"use --config.model.recurrence=scan (or auto).")
    if self.recurrence != "auto":
      return self.recurrence
    if self.recurrent_dropout > 0.0:  # the recurrences with the variational mask inside the step
      return "fused_vjp" if self.cell in FUSED_VJP else "scan"
    found = self.estimates(batch, steps)
    if found:
      from lstm_jax.estimates import step_time  # noqa: PLC0415
      return step_time.choose(found)
    return "fused_vjp" if self.cell in FUSED_VJP else "scan"

  def candidates(self) -> tuple[str, ...]:
    """The recurrences ``auto`` chooses among on ``platform``: the kernel (inside its envelope, on a GPU/TPU),
    fused_vjp and scan, as the cell has them."""
    names = ("pallas",) if self.cell in PALLAS and self.platform in ("gpu", "tpu") and self.kernel_limit is None \
        else ()
    if self.recurrent_dropout > 0.0:
      return (("fused_vjp",) if self.cell in FUSED_VJP else ()) + ("scan",)
    return names + (("fused_vjp",) if self.cell in FUSED_VJP else ()) + ("scan",)

  def estimates(self, batch: int, steps: int) -> dict:
    """Estimated train steps of ``[batch, steps]`` minibatches per candidate on this platform's chip
    (``lstm_jax.estimates.step_time.Estimate``); empty on a CPU or for a cell with no candidate but scan."""
    if self.platform not in ("gpu", "tpu") or len(self.candidates()) < 2:
      return {}
    from lstm_jax.estimates import chips, step_time  # noqa: PLC0415
    chip, _ = chips.current(self.platform)
    return step_time.estimates(self.shape(batch, steps), chip, self.candidates())

  def shape(self, batch: int, steps: int):
    """The ``lstm_jax.estimates.step_time.Shape`` of training this model on ``[batch, steps]`` minibatches."""
    from lstm_jax.estimates import step_time  # noqa: PLC0415
    return step_time.Shape(self.cell, self.num_layers, self.hidden_size, batch, steps, self.vocab_size,
                           self.matmul_dtype)

  def recurrence_line(self, batch: int, steps: int) -> str | None:
    """One line at start when ``auto`` chose on a GPU/TPU (which recurrence, on which chip, and the estimates)
    or passed over the kernel (``recurrence_note``); None otherwise."""
    found = self.estimates(batch, steps) if self.recurrence == "auto" else {}
    note = self.recurrence_note()
    if not found:
      return note
    from lstm_jax.estimates import chips, step_time  # noqa: PLC0415
    chip, known = chips.current(self.platform)
    line = step_time.choice_line(self.shape(batch, steps), chip, known, found, step_time.choose(found))
    return f"{line} {note}" if note else line

  @property
  def kernel_limit(self) -> str | None:
    """Why the Pallas kernel cannot take this model on ``platform`` (outside ``lstm_jax.kernels.envelope``), or
    None (inside it, or on a CPU, where the kernels run in interpret mode)."""
    if self.cell not in PALLAS or self.platform not in ("gpu", "tpu"):
      return None
    from lstm_jax.kernels import envelope  # noqa: PLC0415 (Pallas imports only when a kernel is asked for)
    devices = self.placement.devices or jax.device_count()
    return envelope.limit(self.cell, self.platform, self.hidden_size, self.matmul_dtype,
                          member_devices=devices if self.placement.split == "members" else 1)

  def recurrence_problem(self) -> str | None:
    """One line for ``recurrence=pallas`` outside the kernels' envelope (naming the limit and the way out)."""
    if self.recurrence == "pallas" and self.kernel_limit is not None:
      return (f"--config.model.recurrence=pallas: {self.kernel_limit}; use --config.model.recurrence=auto (or "
              f"fused_vjp), or a smaller --config.model.hidden_size.")
    return None

  def recurrence_note(self) -> str | None:
    """One line when ``recurrence=auto`` passes over the Pallas kernel on a GPU/TPU because of the envelope."""
    if self.recurrence == "auto" and self.kernel_limit is not None:
      return f"recurrence=auto does not consider the Pallas kernel: {self.kernel_limit}."
    return None

  @property
  def recurrence_fn(self):
    """The ``recurrence(params, xproj_TBG, carry, unroll)`` function that ``recurrence`` selects (at the book's
    minibatch for ``auto``; ``apply`` uses ``recurrence_fn_for`` at the traced shape)."""
    return self.recurrence_fn_for(self.resolved_recurrence)

  def recurrence_fn_for(self, chosen: str):
    """The ``recurrence(params, xproj_TBG, carry, unroll)`` function of the recurrence named ``chosen``."""
    if self.matmul_dtype not in matmul_lib.MATMUL_DTYPES:
      raise ValueError(f"Unknown model.matmul_dtype {self.matmul_dtype!r}; choose one of "
                       f"{matmul_lib.MATMUL_DTYPES}.")
    if chosen == "pallas":
      from lstm_jax.kernels import sharded  # noqa: PLC0415
      target = {"": {}, "cuda": dict(interpret=False, backend="triton"), "tpu": dict(interpret=False, backend="tpu")}
      return sharded.split_batch(functools.partial(_pallas_recurrence(self.cell),
                                                   matmul_dtype=jnp.dtype(self.matmul_dtype),
                                                   **target[self.placement.target]))
    if chosen == "fused_vjp":
      return cells.get(self.cell).fused_vjp
    return self.family.recurrence

  def matmul_params(self, layer_params: dict[str, Any], chosen: str | None = None) -> dict[str, Any]:
    """A layer's params with ``W_x`` / ``W_h`` in ``matmul_dtype`` (the Pallas kernels cast ``W_h`` themselves);
    ``chosen``: the recurrence that runs (default ``resolved_recurrence``)."""
    if self.matmul_dtype == "float32":
      return layer_params
    names = ("W_x",) if (chosen or self.resolved_recurrence) == "pallas" else ("W_x", "W_h")
    return {k: v.astype(self.matmul_dtype) if k in names else v for k, v in layer_params.items()}

  def init(self, key: jax.Array) -> dict[str, Any]:
    keys = jax.random.split(key, self.num_layers + 2)
    params: dict[str, Any] = {}
    input_size = self.vocab_size
    if self.embed_dim is not None:
      params["embed"] = jax.random.normal(keys[-1], (self.vocab_size, self.embed_dim)) * 0.01 \
          if self.init_scheme == "d2l" else jax.random.normal(keys[-1], (self.vocab_size, self.embed_dim))
      input_size = self.embed_dim
    layers = []
    for k in keys[:self.num_layers]:
      layers.append(cells.init_layer_params(self.cell, k, input_size, self.hidden_size, self.init_scheme,
                                            self.forget_bias))
      input_size = self.hidden_size
    params["layers"] = tuple(layers)
    kernel_init, bias_init = initializers.dense_initializers(self.init_scheme, self.hidden_size)
    k_w, k_b = jax.random.split(keys[self.num_layers])
    params["head"] = {"b": bias_init(k_b, (self.vocab_size,), jnp.float32)}
    if not self.tie_weights:
      params["head"]["W"] = kernel_init(k_w, (self.hidden_size, self.vocab_size), jnp.float32)
    elif self.embed_dim != self.hidden_size:
      params["head"]["proj"] = kernel_init(k_w, (self.hidden_size, self.embed_dim), jnp.float32)
    return params

  def zero_carry(self, batch_size: int, dtype=jnp.float32) -> Carry:
    return cells.stacked_zero_carry(self.cell, self.num_layers, batch_size, self.hidden_size, dtype)

  def apply(self, params: dict[str, Any], tokens_BT: jax.Array, carry: Carry | None = None, *,
            dropout_rng: jax.Array | None = None,
            seq_lengths: jax.Array | None = None) -> tuple[jax.Array, Carry]:
    """Tokens ``[B, T]`` (int) -> ``(logits [B, T, V], final carry)``. Dropout (every kind the model sets) only
    when ``dropout_rng`` is given.

    ``seq_lengths [B]``: a padded batch; the carry returned is each sequence's last valid one and the hidden
    states at padded steps are zero (their logits are the head's bias: mask them out of any loss).
    """
    logits_BTV, new_carry, _ = self.forward(params, tokens_BT, carry, dropout_rng=dropout_rng,
                                            seq_lengths=seq_lengths)
    return logits_BTV, new_carry

  def forward(self, params: dict[str, Any], tokens_BT: jax.Array, carry: Carry | None = None, *,
              dropout_rng: jax.Array | None = None,
              seq_lengths: jax.Array | None = None) -> tuple[jax.Array, Carry, jax.Array]:
    """``apply`` that also returns the training loss's activation penalty (AR / TAR; 0 when both are off)."""
    if carry is None:
      carry = self.zero_carry(tokens_BT.shape[0])
    raw_TBH, new_carry = self.hidden_states(params, tokens_BT.T, carry, dropout_rng, seq_lengths)
    dropped_TBH = regularizers.locked(raw_TBH, self.locked_dropout, dropout_rng, self.num_layers)
    penalty = regularizers.activation_penalty(self.ar, self.tar, dropped_TBH, raw_TBH)
    return jnp.swapaxes(self.logits(params, dropped_TBH), 0, 1), new_carry, penalty

  def logits(self, params: dict[str, Any], hs_TBH: jax.Array) -> jax.Array:
    """Top-layer hidden states ``[T, B, H]`` -> logits ``[T, B, V]`` (through the embedding with tied weights)."""
    head = params["head"]
    if not self.tie_weights:
      return hs_TBH @ head["W"] + head["b"]
    features = hs_TBH @ head["proj"] if "proj" in head else hs_TBH
    return features @ params["embed"].T + head["b"]

  def hidden_states(self, params, tokens_TB: jax.Array, carry: Carry, dropout_rng: jax.Array | None = None,
                    seq_lengths: jax.Array | None = None) -> tuple[jax.Array, Carry]:
    """Time-major tokens ``[T, B]`` -> ``(top-layer hidden states [T, B, H], final carry per layer)``, before the
    locked dropout on the top layer's outputs."""
    family = self.family
    chosen = self.recurrence_for(tokens_TB.shape[1], tokens_TB.shape[0])
    recurrence_fn = self.recurrence_fn_for(chosen)
    new_carry = []
    hs_TBH = None
    for index, (layer_params, layer_carry) in enumerate(zip(params["layers"], carry)):
      if index == 0 and "embed" not in params:
        xproj = layer_params["W_x"][tokens_TB] + layer_params["b"]  # == one_hot(tokens) @ W_x + b, kept float32
      else:
        if index == 0:
          embed = regularizers.embedding_rows(params["embed"], self.embedding_dropout, dropout_rng)
          inputs_TBI = embed[tokens_TB]
        else:
          inputs_TBI = regularizers.between_layers(hs_TBH, self.dropout, dropout_rng, index)
        inputs_TBI = regularizers.locked(inputs_TBI, self.locked_dropout, dropout_rng, index)
        xproj = family.project_inputs(self.matmul_params(layer_params, chosen), inputs_TBI)
      layer_params = dict(layer_params, W_h=regularizers.drop_connect(layer_params["W_h"], self.weight_drop,
                                                                      dropout_rng, index))
      layer_params = self.matmul_params(layer_params, chosen)
      layer_recurrence = recurrence_fn
      if seq_lengths is not None:
        layer_recurrence = functools.partial(_padded, family.recurrence, seq_lengths)
      mask_BH = regularizers.recurrent_mask(self.recurrent_dropout, dropout_rng, index, tokens_TB.shape[1],
                                            self.hidden_size)
      if mask_BH is not None and chosen == "fused_vjp" and seq_lengths is None:
        layer_recurrence = functools.partial(layer_recurrence, h_mask_BH=mask_BH)
      elif mask_BH is not None:
        layer_recurrence = regularizers.variational_recurrence(layer_recurrence, mask_BH)
      layer_carry, hs_TBH = layer_recurrence(layer_params, xproj, layer_carry, unroll=self.unroll)
      new_carry.append(layer_carry)
    return hs_TBH, tuple(new_carry)
