"""A persistent LSTM for GPUs: ``W_h`` split by hidden units over P programs that stay resident for the whole
sequence, one grid-wide barrier per step (Pallas-Triton).

Same contract as ``lstm_jax.kernels.lstm_pallas.recurrence`` for one member: ``{"W_h": [H, 4H]}``, projected
inputs ``xproj [T, B, 4H]`` (gate order i, f, g, o, bias included), carry ``LSTMCarry(h, c) [B, H]`` ->
``(final carry, hs [T, B, H])``, differentiated by a ``custom_vjp`` whose gradients equal ``lstm_fused_vjp``'s.

Design (the persistent RNN of Diamos et al. 2016 and cuDNN's persistent LSTM, in Pallas-Triton)
------------------------------------------------------------------------------------------------
- Program ``p`` of ``P`` owns the hidden units ``[p U, (p + 1) U)`` (``U = Hp / P``, at least 16: Triton dots
  need 16 columns) and the four gates' columns of ``W_h`` for them, ``[Hp, 4U]``. Where that slice fits the
  register budget (``RESIDENT_BYTES``) it is loaded once, before the time loop, as ``Hp / 128`` loop-invariant
  ``[128, U]`` tiles per gate, and stays on chip for the whole sequence; otherwise each step reads it from L2
  (``Plan.resident``).
- Forward step ``t``: read all of ``h_{t-1}`` (``[Bp, Hp]``, written by every program at step ``t - 1``) with
  loads that bypass L1 (``.cg``), one ``[Bp, Hp] x [Hp, U]`` dot per gate, the gate update on the owned units
  (``c`` stays in the program), write the owned slice of ``h_t``, then the grid barrier.
- Reverse step ``t``: the owned units' ``dh`` is ``dhs[t]`` plus the sum over programs of the partial products
  they wrote at step ``t + 1``; the gate gradients of the owned units; then this program's partial
  ``dh_{t-1} = dgates[:, owned] @ W_h[:, owned]^T`` (all ``Hp`` units, from the same column slice: no second copy
  of ``W_h``) into a two-slot exchange buffer ``[2, P, Bp, Hp]``; then the barrier. ``dh_0`` (the last partials
  summed), ``dc_0`` and ``dW_h = h_prev^T @ dgates`` (one matmul over all ``T B`` rows) are XLA ops after it.
- The grid barrier, from what Pallas-Triton exposes: a block barrier (every thread's stores issued), one
  ``atomic_add`` of 1 on a counter (acquire-release at GPU scope), then polling the counter with ``atomic_add``
  of 0 (acquire) until it reaches ``P (t + 1)``, then a block barrier. The counter only grows; it is an input
  aliased to an output, zeroed by the wrapper at every call. A poll cap (``SPIN_CAP``) sets an error flag instead
  of hanging; the wrapper turns the flag into an error. ``P`` is at most half the device's SMs
  (``device.core_count`` at trace time) so every program is resident.
- State exchange in HBM: the wrapper passes ``hseq [T+1, Bp, Hp]`` with ``hseq[0] = h0`` and ``cseq`` with
  ``cseq[0] = c0`` (aliased inputs); step ``t`` reads ``hseq[t]`` and writes ``hseq[t+1]``, so ``hs`` is
  ``hseq[1:]`` and the backward's ``c_prev`` is ``cseq[:T]``.
- One step body, two drivers. Compiled: grid ``(P,)``, a ``fori_loop`` over steps with the barrier. Interpret mode
  (this CPU, tests): grid ``(T, P)``; interpret mode runs grid points in order, so every program of step ``t``
  finishes before step ``t + 1`` starts, which is what the barrier means (a spin barrier would never return
  there). ``c`` and ``dc`` go through ``cseq`` / ``dcseq`` there instead of registers.

Envelope (``plan``): ``Bp <= 128`` (one batch block: the whole batch in each program); ``P <= SMs / 2`` by
widening ``U``. Elsewhere ``lstm_pallas`` runs its batch-blocked kernels. Run time has not been measured on a GPU.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from lstm_jax.cells.lstm import NUM_GATES, LSTMCarry
from lstm_jax.kernels import layout as layout_lib
from lstm_jax.kernels import tiles

MIN_UNITS = 16            # Triton dots need 16 columns
K_TILE = 128              # rows of one W_h tile (the dots' K)
MAX_BATCH = 128           # one batch block: Bp rows in every program
RESIDENT_BYTES = 128 << 10  # the W_h slice kept on chip when at most this (what ptxas reports there:
                           # docs/accelerators.md, "Kernel measurements")
SPIN_CAP = 1 << 24        # polls of the barrier counter before the error flag is set
DEFAULT_SMS = 132         # when the device has no core_count (a CPU): an H100's
NUM_WARPS = 8


class Plan(NamedTuple):
  """Static sizes: ``T`` steps, ``Bp`` padded batch, ``Hp`` padded hidden (power of two), ``U`` units per program,
  ``P`` programs, ``kt`` rows per ``W_h`` tile, ``resident``: the slice stays on chip."""
  T: int
  Bp: int
  Hp: int
  U: int
  P: int
  kt: int
  resident: bool

  @property
  def num_k(self) -> int:
    return self.Hp // self.kt

  def slice_bytes(self, itemsize: int) -> int:
    return NUM_GATES * self.Hp * self.U * itemsize


def device_sms() -> int:
  """The SM count of the default device (``core_count``), or ``DEFAULT_SMS`` where it has none."""
  return int(getattr(layout_lib.default_device(), "core_count", 0) or DEFAULT_SMS)


def plan(T: int, B: int, H: int, matmul_dtype="float32", sms: int | None = None) -> Plan | None:
  """The persistent kernel's sizes for ``[T, B, H]``: ``U`` the smallest power of two >= 16 that keeps ``P = Hp / U``
  within half the SMs; None outside its envelope (batch over ``MAX_BATCH``)."""
  sms = device_sms() if sms is None else sms
  Bp = max(layout_lib.next_pow2(B), layout_lib.TRITON_BATCH_BLOCK)
  Hp = layout_lib.next_pow2(max(H, MIN_UNITS))
  if Bp > MAX_BATCH:
    return None
  U = MIN_UNITS
  while Hp // U > sms // 2 and U < Hp:
    U *= 2
  P = Hp // U
  itemsize = jnp.dtype(matmul_dtype).itemsize
  lay = Plan(T, Bp, Hp, U, P, min(K_TILE, Hp), True)
  return lay._replace(resident=lay.slice_bytes(itemsize) <= RESIDENT_BYTES)


def limit(T: int, B: int, H: int, matmul_dtype="float32", sms: int | None = None) -> str | None:
  """One line naming why ``plan`` refuses the shape, or None."""
  if plan(T, B, H, matmul_dtype, sms) is not None:
    return None
  return f"batch {B} exceeds the persistent kernel's {MAX_BATCH} rows (every program holds the whole batch)"


# ----------------------------------------------------------------------------------------------------------------
# The step bodies (values in, values out), shared by both drivers.
# ----------------------------------------------------------------------------------------------------------------

def _own(lay: Plan, p, g: int = 0):
  """Columns of program ``p``'s units in gate block ``g`` of a gate-blocked ``[.., 4 Hp]`` (``g = 0``: of a
  ``[.., Hp]`` state)."""
  start = g * lay.Hp + p * lay.U
  return pl.ds(pl.multiple_of(start, lay.U) if not isinstance(start, int) else start, lay.U)


def _rows(lay: Plan, k):
  start = k * lay.kt
  return pl.ds(start if isinstance(start, int) else pl.multiple_of(start, lay.kt), lay.kt)


class Weights(NamedTuple):
  """Program ``p``'s ``W_h`` columns: ``tiles[g][k]`` (``[kt, U]`` values loaded once, before the time loop) when
  resident, else read from ``ref`` at every use."""
  ref: object
  p: object
  lay: Plan
  tiles: list | None = None

  @classmethod
  def load(cls, ref, p, lay: Plan, resident: bool) -> "Weights":
    if not resident:
      return cls(ref, p, lay)
    return cls(ref, p, lay, [[ref[_rows(lay, k), _own(lay, p, g)] for k in range(lay.num_k)]
                             for g in range(NUM_GATES)])

  def tile(self, g: int, k):
    return self.tiles[g][k] if self.tiles is not None else self.ref[_rows(self.lay, k), _own(self.lay, self.p, g)]

  def k_loop(self, body, init):
    """``body(k, carry)`` over the ``W_h`` row tiles: unrolled over the resident tiles, else a rolled loop."""
    if self.tiles is not None:
      for k in range(self.lay.num_k):
        init = body(k, init)
      return init
    return tiles.tile_loop(self.lay.num_k, body, init)


def _load_exchanged(ref, leading: tuple, cols, compiled: bool):
  """``ref[*leading, :, cols]`` written by other programs: through L2 (``.cg``) when compiled."""
  view = ref.at[(*leading, slice(None), cols)]
  if compiled:
    from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415
    if jax.__version_info__ < (0, 11):  # jax 0.10's Triton lowering cannot look ".cg" up: a volatile load instead
      return pl_triton.load(view, volatile=True)
    return pl_triton.load(view, cache_modifier=".cg")
  return view[...]


def _forward_step(t, p, c_prev, x_ref, hseq_ref, weights: Weights, lay: Plan, matmul_dtype, compiled: bool):
  """Gates, ``c_t`` and ``h_t`` of program ``p``'s units at step ``t`` (reads ``hseq[t] = h_{t-1}``)."""

  def dots(k, pre):
    h_k = _load_exchanged(hseq_ref, (t,), _rows(lay, k), compiled).astype(matmul_dtype)
    return tuple(acc + jnp.dot(h_k, weights.tile(g, k).astype(matmul_dtype), preferred_element_type=jnp.float32)
                 for g, acc in enumerate(pre))

  pre = weights.k_loop(dots, tuple(x_ref[t, :, _own(lay, p, g)] for g in range(NUM_GATES)))
  i, f, gg, o = (jnp.tanh(x) if g == 2 else tiles.sigmoid(x) for g, x in enumerate(pre))
  c = f * c_prev + i * gg
  return (i, f, gg, o), c, o * jnp.tanh(c)


def _reverse_step(t, p, dc_next, acts_ref, cseq_ref, dhs_ref, part_ref, weights: Weights, lay: Plan,
                  matmul_dtype, compiled: bool):
  """Program ``p``'s gate gradients at step ``t``, written to ``dgates_ref`` by the caller, and its partial
  ``dh_{t-1}`` (written here, slot ``t % 2``): reads the partials of step ``t + 1`` (slot ``(t + 1) % 2``)."""
  add = lambda q, dh: dh + _load_exchanged(part_ref, (tiles.slot(t + 1), q), _own(lay, p), compiled)
  dh = jax.lax.fori_loop(0, lay.P, add, dhs_ref[t, :, _own(lay, p)])
  i, f, gg, o = (acts_ref[t, :, _own(lay, p, g)] for g in range(NUM_GATES))
  c_prev = cseq_ref[t, :, _own(lay, p)]
  tanh_c = jnp.tanh(f * c_prev + i * gg)
  dc = dc_next + dh * (o * (1.0 - tanh_c * tanh_c))
  dgates = (dc * (gg * i * (1.0 - i)), dc * (c_prev * f * (1.0 - f)), dc * (i * (1.0 - gg * gg)),
            dh * (tanh_c * o * (1.0 - o)))

  def partial(k, carry):
    block = sum(jnp.dot(dgates[g].astype(matmul_dtype), weights.tile(g, k).astype(matmul_dtype).T,
                        preferred_element_type=jnp.float32) for g in range(NUM_GATES))
    part_ref[tiles.slot(t), p, :, _rows(lay, k)] = block
    return carry

  weights.k_loop(partial, 0)
  return dgates, dc * f


# ----------------------------------------------------------------------------------------------------------------
# Drivers: compiled (grid (P,), a time loop with the grid barrier) and interpret (grid (T, P)).
# ----------------------------------------------------------------------------------------------------------------

def _barrier(count_ref, flag_ref, target, failed):
  """Waits until ``count`` reaches ``target`` after adding this program's 1; sets ``flag`` (and returns True)
  when the poll cap is hit. Once ``failed``, it no longer waits."""
  from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415

  pl_triton.debug_barrier()
  pl_triton.atomic_add(count_ref, 0, 1)
  seen, _ = jax.lax.while_loop(lambda s: (s[0] < target) & (s[1] < SPIN_CAP) & jnp.logical_not(failed),
                               lambda s: (pl_triton.atomic_add(count_ref, 0, 0), s[1] + 1),
                               (jnp.int32(0), jnp.int32(0)))
  pl_triton.debug_barrier()
  timed_out = failed | (seen < target)

  @pl.when(timed_out)
  def _():
    flag_ref[0] = jnp.int32(1)

  return timed_out


def _forward_kernel(x_ref, w_ref, hseq_in, cseq_in, count_in, hseq_ref, cseq_ref, count_ref, flag_ref, *acts_ref,
                    lay: Plan, matmul_dtype, compiled: bool):
  del hseq_in, cseq_in, count_in  # aliased to hseq_ref, cseq_ref, count_ref
  p = pl.program_id(1 if not compiled else 0)

  def step(t, c_prev, weights):
    gates, c, h = _forward_step(t, p, c_prev, x_ref, hseq_ref, weights, lay, matmul_dtype, compiled)
    hseq_ref[t + 1, :, _own(lay, p)] = h
    cseq_ref[t + 1, :, _own(lay, p)] = c
    if acts_ref:
      for g, a in enumerate(gates):
        acts_ref[0][t, :, _own(lay, p, g)] = a
    return c

  if not compiled:
    t = pl.program_id(0)
    step(t, cseq_ref[t, :, _own(lay, p)], Weights.load(w_ref, p, lay, resident=False))
    return
  weights = Weights.load(w_ref, p, lay, lay.resident)  # before the time loop: on chip for the whole sequence

  def body(t, carry):
    c, failed = carry
    c = step(t, c, weights)
    return c, _barrier(count_ref, flag_ref, (t + 1) * lay.P, failed)

  flag_ref[0] = jnp.int32(0)
  jax.lax.fori_loop(0, lay.T, body, (cseq_ref[0, :, _own(lay, p)], jnp.bool_(False)))


def _reverse_kernel(w_ref, acts_ref, cseq_ref, dhs_ref, part_in, dcseq_in, count_in, dgates_ref, part_ref,
                    dcseq_ref, count_ref, flag_ref, *, lay: Plan, matmul_dtype, compiled: bool):
  del part_in, dcseq_in, count_in
  p = pl.program_id(1 if not compiled else 0)

  def step(t, dc_next, weights):
    dgates, dc = _reverse_step(t, p, dc_next, acts_ref, cseq_ref, dhs_ref, part_ref, weights, lay, matmul_dtype,
                               compiled)
    for g, d in enumerate(dgates):
      dgates_ref[t, :, _own(lay, p, g)] = d
    dcseq_ref[t, :, _own(lay, p)] = dc
    return dc

  if not compiled:
    t = lay.T - 1 - pl.program_id(0)
    step(t, dcseq_ref[t + 1, :, _own(lay, p)], Weights.load(w_ref, p, lay, resident=False))
    return
  weights = Weights.load(w_ref, p, lay, lay.resident)

  def body(s, carry):
    dc, failed = carry
    t = lay.T - 1 - s
    dc = step(t, dc, weights)
    return dc, _barrier(count_ref, flag_ref, (s + 1) * lay.P, failed)

  flag_ref[0] = jnp.int32(0)
  jax.lax.fori_loop(0, lay.T, body, (dcseq_ref[lay.T, :, _own(lay, p)], jnp.bool_(False)))


# ----------------------------------------------------------------------------------------------------------------
# The calls, the custom_vjp, the contract.
# ----------------------------------------------------------------------------------------------------------------

class Settings(NamedTuple):
  """Static settings of a call: matmul dtype name, interpret mode, and the SM count the plan was made for."""
  matmul_dtype: str
  interpret: bool
  sms: int


def _call(kernel, name: str, settings: Settings, lay: Plan, args, out_shapes, aliases: dict[int, int]):
  compiled = not settings.interpret
  grid = (lay.P,) if compiled else (lay.T, lay.P)
  params = {}
  if compiled:
    from jax.experimental.pallas import triton as pl_triton  # noqa: PLC0415
    params = dict(compiler_params=pl_triton.CompilerParams(num_warps=NUM_WARPS, num_stages=1))
  body = functools.partial(kernel, lay=lay, matmul_dtype=jnp.dtype(settings.matmul_dtype), compiled=compiled)
  return pl.pallas_call(body, out_shape=out_shapes, grid=grid, input_output_aliases=aliases,
                        interpret=settings.interpret, name=name, **params)(*args)


def _check_flag(flag, what: str, *outputs):
  """``outputs`` poisoned with NaN when a kernel's barrier hit the poll cap instead of hanging, and on a live GPU
  a host callback that raises one clear error (a compile-only target has no host to call back)."""
  if jax.default_backend() == "gpu":
    def check(value):
      if int(value[0]):
        raise RuntimeError(f"the persistent LSTM's {what} kernel gave up waiting at its grid barrier (not every "
                           f"program was resident); use --config.model.recurrence=fused_vjp.")
    jax.debug.callback(check, flag)
  return tuple(jnp.where(flag[0] != 0, jnp.nan, x) for x in outputs)


def _pad(x, shape):
  return jnp.pad(x.astype(jnp.float32), [(0, s - d) for d, s in zip(x.shape, shape)])


def _forward(settings: Settings, W_h, xproj, h0, c0, save: bool):
  T, B, G = xproj.shape
  H = W_h.shape[0]
  lay = plan(T, B, H, settings.matmul_dtype, settings.sms)
  Wp = tiles.pad_weights(W_h[None], H, _as_layout(lay), settings.matmul_dtype, NUM_GATES)[0]
  xp = tiles.pad_gates(xproj[None], B, H, _as_layout(lay), NUM_GATES)[0]
  hseq = jnp.zeros((T + 1, lay.Bp, lay.Hp), jnp.float32).at[0].set(_pad(h0, (lay.Bp, lay.Hp)))
  cseq = jnp.zeros((T + 1, lay.Bp, lay.Hp), jnp.float32).at[0].set(_pad(c0, (lay.Bp, lay.Hp)))
  outs = [jax.ShapeDtypeStruct(hseq.shape, jnp.float32), jax.ShapeDtypeStruct(cseq.shape, jnp.float32),
          jax.ShapeDtypeStruct((1,), jnp.int32), jax.ShapeDtypeStruct((1,), jnp.int32)]
  if save:
    outs.append(jax.ShapeDtypeStruct((T, lay.Bp, NUM_GATES * lay.Hp), jnp.float32))
  results = _call(_forward_kernel, "lstm_persistent_forward", settings, lay,
                  (xp, Wp, hseq, cseq, jnp.zeros((1,), jnp.int32)), outs, {2: 0, 3: 1, 4: 2})
  hseq, cseq, _, flag = results[:4]
  if not settings.interpret:
    hseq, cseq = _check_flag(flag, "forward", hseq, cseq)
  hs = hseq[1:, :B, :H].astype(xproj.dtype)
  outputs = (hseq[T, :B, :H].astype(h0.dtype), cseq[T, :B, :H].astype(c0.dtype), hs)
  return outputs, ((W_h, xproj, h0, hs, cseq, results[4]) if save else None)


def _backward(settings: Settings, saved, cotangents):
  W_h, xproj, h0, hs, cseq, acts = saved
  dhT, dcT, dhs = cotangents
  T, B, _ = xproj.shape
  H = W_h.shape[0]
  lay = plan(T, B, H, settings.matmul_dtype, settings.sms)
  Wp = tiles.pad_weights(W_h[None], H, _as_layout(lay), settings.matmul_dtype, NUM_GATES)[0]
  dhs_p = _pad(dhs, (T, lay.Bp, lay.Hp))
  parts = jnp.zeros((2, lay.P, lay.Bp, lay.Hp), jnp.float32).at[T % 2, 0].set(_pad(dhT, (lay.Bp, lay.Hp)))
  dcseq = jnp.zeros((T + 1, lay.Bp, lay.Hp), jnp.float32).at[T].set(_pad(dcT, (lay.Bp, lay.Hp)))
  outs = [jax.ShapeDtypeStruct((T, lay.Bp, NUM_GATES * lay.Hp), jnp.float32),
          jax.ShapeDtypeStruct(parts.shape, jnp.float32), jax.ShapeDtypeStruct(dcseq.shape, jnp.float32),
          jax.ShapeDtypeStruct((1,), jnp.int32), jax.ShapeDtypeStruct((1,), jnp.int32)]
  dgates_p, parts, dcseq, _, flag = _call(_reverse_kernel, "lstm_persistent_backward", settings, lay,
                                          (Wp, acts, cseq, dhs_p, parts, dcseq, jnp.zeros((1,), jnp.int32)),
                                          outs, {4: 1, 5: 2, 6: 3})
  if not settings.interpret:
    dgates_p, parts, dcseq = _check_flag(flag, "reverse", dgates_p, parts, dcseq)
  dgates = tiles.unpad_gates(dgates_p[None], T, B, H, _as_layout(lay), NUM_GATES)[0]
  dh0 = parts[0].sum(axis=0)[:B, :H]
  dW_h = tiles.weight_grad(tiles.previous_states(h0[None], hs[None]), dgates[None])[0]
  return (dW_h.astype(W_h.dtype), dgates.astype(xproj.dtype), dh0.astype(h0.dtype),
          dcseq[0, :B, :H].astype(dcT.dtype))


def _as_layout(lay: Plan) -> layout_lib.Layout:
  """The shared padding helpers' view of the plan (one chunk, one batch block)."""
  return layout_lib.Layout(Tp=lay.T, Tc=lay.T, Bp=lay.Bp, bB=lay.Bp, Hp=lay.Hp, bh=lay.kt)


_persistent = tiles.kernel_vjp(_forward, _backward)  # (settings, W_h, xproj, h0, c0) -> (hT, cT, hs)


def recurrence(params, xproj_TBG: jax.Array, carry: LSTMCarry, unroll: int = 1, *, matmul_dtype=jnp.float32,
               interpret=None, sms: int | None = None) -> tuple[LSTMCarry, jax.Array]:
  """The LSTM over projected inputs ``[T, B, 4H]`` with the persistent kernels; returns ``(final carry,
  hs [T, B, H])``. ``interpret=None``: interpret mode on a CPU. ``sms``: the SM count to plan for (default: the
  device's). Raises ``ValueError`` outside the envelope (``limit``)."""
  del unroll
  T, B, _ = xproj_TBG.shape
  H = params["W_h"].shape[0]
  dtype = jnp.dtype(matmul_dtype).name
  sms = device_sms() if sms is None else sms
  problem = limit(T, B, H, dtype, sms)
  if problem:
    raise ValueError(f"the persistent LSTM kernel cannot take this shape: {problem}.")
  interpret = jax.default_backend() == "cpu" if interpret is None else interpret
  h, c = carry
  hT, cT, hs = _persistent(Settings(dtype, bool(interpret), sms), params["W_h"], xproj_TBG, h, c)
  return LSTMCarry(h=hT, c=cT), hs
