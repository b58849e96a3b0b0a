"""The LSTM recurrence as two Pallas kernels (whole-sequence forward, whole-sequence reverse) behind a ``custom_vjp``.

Same contract as ``lstm_jax.cells.lstm_fused_vjp.recurrence``: parameters ``{"W_h": [H, 4H], ...}`` (gate order
i, f, g, o), projected inputs ``xproj [T, B, 4H]`` (time-major, bias included), carry ``LSTMCarry(h, c)``
``[B, H]``; returns ``(final carry, hs [T, B, H])`` and the gradients w.r.t. ``W_h``, ``xproj`` and the carry. A
leading members axis (``W_h [K, H, 4H]``, ``xproj [K, T, B, 4H]``, carry ``[K, B, H]``, see
``population_recurrence``) runs as the same single ``pallas_call`` with K as a grid axis.

Design
------
- Forward: ONE ``pallas_call``, grid ``(K, Bp / bB)`` (both axes independent: "parallel"). Each program owns a
  batch block of ``bB`` rows and walks all T steps with ``lax.fori_loop``; ``h`` and ``c`` are the loop carry
  (registers on GPU, vregs/VMEM on TPU), so the state never goes back to HBM between steps. Per step and per
  hidden tile: the ``[bB, H] x [H, 4H]`` dot (``preferred_element_type=float32``) and the fused gate update
  (``sigmoid(x) = tanh(x/2)/2 + 1/2``, as lstm_fused_vjp); it writes ``hs[t]`` and, when differentiated, the activated
  gates ``acts [T, B, 4H]`` and the previous cell ``c_prev [T, B, H]`` (the backward recomputes
  ``c = f*c_prev + i*g`` and ``tanh(c)`` from them).
- Backward: ONE reverse ``pallas_call`` with the same grid; carry ``(dh, dc)`` in registers; per step the gate
  gradients (written to ``dgates [T, B, 4H]``, which is also the gradient of ``xproj``) and one
  ``[bB, 4H] x [4H, H]`` dot with ``W_h^T`` (transposed once in the wrapper) for ``dh_{t-1}``; it ends with
  ``(dh0, dc0)``. ``dW_h = h_prev^T @ dgates`` is then one XLA matmul over all ``T*B`` rows, as in lstm_fused_vjp.
- Memory layout: the wrapper views ``4H`` as ``[4, H]``, pads batch to ``Bp`` and hidden per gate block to
  ``Hp`` and flattens back to ``[.., Bp, 4*Hp]``, so each gate is a contiguous, tile-aligned column block
  ``[g*Hp, (g+1)*Hp)``. Padded units get zero weights (rows and columns) and zero inputs, so their
  pre-activation is 0, ``g = tanh(0) = 0``, ``c_pad`` stays exactly 0 and ``h_pad = sigmoid(0)*tanh(0) = 0``:
  they never leak into real units. Padded batch rows are independent rows. Outputs are sliced back.
- Tiles: Triton (GPU) needs power-of-two block dims and dot operands >= 16: ``Hp = next_pow2(max(H, 16))``,
  ``bB = 16``, and the dots are split statically into ``bh x bh`` tiles with ``bh = min(Hp, 128)`` (h and c are
  carried as tuples of ``[bB, bh]`` tiles), so no single dot operand exceeds ``128 x 128`` (64 KB f32 in
  shared memory). Mosaic TPU: ``(8, 128)`` f32 / ``(16, 128)`` bf16 tiles, ``Hp = round_up(H, 128)``,
  ``bB = round_up(B, 8 or 16)`` up to 256 rows, one tile over all of ``Hp`` (the MXU takes big dots).
- Where things live. TPU: each program's whole blocks (``W_h`` ``[Hp, 4Hp]``, the sequence blocks
  ``[T, bB, 4Hp]``) are DMA'd into VMEM once and ``W_h`` stays resident in VMEM for the whole sequence; the
  state lives in vregs/VMEM. GPU/Triton: refs are pointers to HBM; the ``W_h`` tiles are re-read every step
  (served from L2: 60 MB on H200 holds ``W_h`` up to H ~ 1900 f32) through shared memory into the tensor-core
  dot; xproj/hs/acts are streamed per step; h/c live in registers of one thread block per batch block.
  ``matmul_dtype=bfloat16`` stores ``W_h`` in bf16 (half the re-read bytes) and casts h / dgates to bf16 for
  the dots only; accumulation, state and gates stay float32.
- Backend choice (GPU): Triton, selected by passing ``pallas.triton.CompilerParams(num_warps, num_stages=1)``
  (``pallas_call`` has no ``backend=`` argument in jax 0.10). Mosaic GPU (jax 0.10's default GPU backend) stages
  whole blocks in shared memory and refused a whole-sequence block at 622 KB > 227 KB; Triton keeps the
  sequence in HBM, loads only the per-step tiles, and runs on Ampere and Hopper alike.
- ``interpret=None``: interpret mode when ``jax.default_backend() == "cpu"`` (semantics only, slow), else
  compiled. ``backend=None``: "triton" on GPU and CPU (so CPU interpret runs the GPU layout), "tpu" on TPU.

Known limits / next steps
- GPU: this simple design re-reads all of ``W_h`` from L2 every step in every batch-block program, and the
  tile loops are unrolled statically (``4 (Hp/bh)^2`` dots per step: 256 at H=1024), so compile time grows with
  H^2 and register pressure with ``bB * Hp`` (h and c tiles; H=1024 holds 32K floats per block). The persistent
  design (``W_h`` split by hidden units across thread blocks and kept on chip, blocks synchronised once per step
  through global memory, as cuDNN's persistent LSTM / Diamos et al. 2016) is the next step, not built.
- TPU: VMEM must hold ``W_h`` (``16 Hp^2`` bytes f32, 8 bytes bf16) plus double-buffered sequence blocks
  (``~4 T bB (4Hp + 2Hp) `` bytes fwd): e.g. H=1024 f32 is 16 MiB of ``W_h`` alone, so H <= ~1024 f32 /
  ~1536 bf16 on 64 MiB-VMEM chips, and long T needs a smaller batch block (or a time-chunked grid, not built).
- ``unroll`` is accepted for the contract and ignored. Reverse mode only (custom_vjp).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from lstm_jax.cells.lstm import NUM_GATES, LSTMCarry

BACKENDS = ("triton", "tpu")
_TRITON_TILE = 128  # max side of one dot tile on Triton
_TRITON_BATCH_BLOCK = 16  # Triton dots need M >= 16
_TPU_MAX_BATCH_BLOCK = 256


class _Config(NamedTuple):
  """Static (hashable) kernel settings."""
  matmul_dtype: str
  interpret: bool
  backend: str


class _Layout(NamedTuple):
  """Padded sizes: batch ``Bp`` in blocks of ``bB``, hidden ``Hp`` in dot tiles of ``bh``."""
  Bp: int
  bB: int
  Hp: int
  bh: int


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _next_pow2(n: int) -> int:
  return 1 << max(0, (n - 1).bit_length())


def layout(backend: str, batch: int, hidden: int, matmul_dtype=jnp.float32) -> _Layout:
  """Tile sizes of ``backend`` for a ``[B, H]`` problem (see the module docstring)."""
  if backend == "triton":
    Hp = _next_pow2(max(hidden, 16))
    bB = _TRITON_BATCH_BLOCK
    return _Layout(Bp=_round_up(batch, bB), bB=bB, Hp=Hp, bh=min(Hp, _TRITON_TILE))
  if backend == "tpu":
    sublanes = 16 if jnp.dtype(matmul_dtype) == jnp.bfloat16 else 8
    bB = min(_round_up(batch, sublanes), _TPU_MAX_BATCH_BLOCK)
    Hp = _round_up(hidden, 128)
    return _Layout(Bp=_round_up(batch, bB), bB=bB, Hp=Hp, bh=Hp)
  raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _resolve(matmul_dtype, interpret, backend) -> _Config:
  platform = jax.default_backend()
  if interpret is None:
    interpret = platform == "cpu"
  if backend is None:
    backend = "tpu" if platform == "tpu" else "triton"
  if backend == "mosaic_tpu":
    backend = "tpu"
  if backend not in BACKENDS:
    raise ValueError(f"backend must be one of {BACKENDS} (GPU: triton, TPU: tpu), got {backend!r}")
  dtype = jnp.dtype(matmul_dtype)
  if dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
    raise ValueError(f"matmul_dtype must be float32 or bfloat16, got {dtype}")
  return _Config(matmul_dtype=dtype.name, interpret=bool(interpret), backend=backend)


def _compiler_params(cfg: _Config, lay: _Layout, vmem_bytes: int):
  if cfg.backend == "triton":
    from jax.experimental.pallas import triton as pl_triton
    return pl_triton.CompilerParams(num_warps=4 if lay.bh * lay.bB <= 64 * 16 else 8, num_stages=1)
  from jax.experimental.pallas import tpu as pltpu
  limit = int(min(max(2 * vmem_bytes + (4 << 20), 32 << 20), 100 << 20))
  return pltpu.CompilerParams(dimension_semantics=("parallel", "parallel"), vmem_limit_bytes=limit)


def _sigmoid(x):
  return 0.5 * jnp.tanh(0.5 * x) + 0.5


# ----------------------------------------------------------------------------------------------------------------
# Kernels. Per program: seq refs [T, bB, D], state refs [bB, Hp], weight refs [Hp, 4Hp] / [4Hp, Hp].
# ----------------------------------------------------------------------------------------------------------------

def _forward_kernel(xproj_ref, w_ref, h0_ref, c0_ref, *out_refs, num_steps, Hp, bh, matmul_dtype, save):
  """``h_t, c_t`` over all T steps; writes ``hs[t]`` (and ``acts[t]``, ``c_prev[t]`` when ``save``)."""
  hs_ref, hT_ref, cT_ref = out_refs[:3]
  tiles = Hp // bh
  hcols = lambda n: pl.ds(n * bh, bh)
  gcols = lambda g, n: pl.ds(g * Hp + n * bh, bh)

  def step(t, state):
    h_tiles, c_tiles = state
    hm = tuple(h.astype(matmul_dtype) for h in h_tiles)
    new_h, new_c = [], []
    for n in range(tiles):
      act = []
      for g in range(NUM_GATES):
        pre = xproj_ref[t, :, gcols(g, n)].astype(jnp.float32)
        for k in range(tiles):
          pre = pre + jnp.dot(hm[k], w_ref[hcols(k), gcols(g, n)], preferred_element_type=jnp.float32)
        act.append(jnp.tanh(pre) if g == 2 else _sigmoid(pre))
      i, f, gg, o = act
      c = f * c_tiles[n] + i * gg
      h = o * jnp.tanh(c)
      hs_ref[t, :, hcols(n)] = h.astype(hs_ref.dtype)
      if save:
        acts_ref, cprev_ref = out_refs[3:]
        for g in range(NUM_GATES):
          acts_ref[t, :, gcols(g, n)] = act[g]
        cprev_ref[t, :, hcols(n)] = c_tiles[n]
      new_h.append(h)
      new_c.append(c)
    return tuple(new_h), tuple(new_c)

  init = (tuple(h0_ref[:, hcols(n)].astype(jnp.float32) for n in range(tiles)),
          tuple(c0_ref[:, hcols(n)].astype(jnp.float32) for n in range(tiles)))
  h_tiles, c_tiles = jax.lax.fori_loop(0, num_steps, step, init)
  for n in range(tiles):
    hT_ref[:, hcols(n)] = h_tiles[n].astype(hT_ref.dtype)
    cT_ref[:, hcols(n)] = c_tiles[n].astype(cT_ref.dtype)


def _backward_kernel(wt_ref, acts_ref, cprev_ref, dhs_ref, dhT_ref, dcT_ref, dgates_ref, dh0_ref, dc0_ref, *,
                     num_steps, Hp, bh, matmul_dtype):
  """Reverse walk: ``(dh, dc)`` from step t+1 and ``dhs[t]`` -> ``dgates[t]``, ``dh_{t-1}``, ``dc_{t-1}``."""
  tiles = Hp // bh
  hcols = lambda n: pl.ds(n * bh, bh)
  gcols = lambda g, n: pl.ds(g * Hp + n * bh, bh)

  def step(s, state):
    t = num_steps - 1 - s
    dh_tiles, dc_tiles = state
    dgate_tiles, new_dc = {}, []
    for n in range(tiles):
      i, f, gg, o = (acts_ref[t, :, gcols(g, n)] for g in range(NUM_GATES))
      c_prev = cprev_ref[t, :, hcols(n)]
      tanh_c = jnp.tanh(f * c_prev + i * gg)
      dh = dh_tiles[n] + dhs_ref[t, :, hcols(n)].astype(jnp.float32)
      dc = dc_tiles[n] + dh * (o * (1.0 - tanh_c * tanh_c))
      grads = (dc * (gg * i * (1.0 - i)), dc * (c_prev * f * (1.0 - f)), dc * (i * (1.0 - gg * gg)),
               dh * (tanh_c * o * (1.0 - o)))
      for g in range(NUM_GATES):
        dgates_ref[t, :, gcols(g, n)] = grads[g].astype(dgates_ref.dtype)
        dgate_tiles[g, n] = grads[g].astype(matmul_dtype)
      new_dc.append(dc * f)
    new_dh = []
    for k in range(tiles):
      acc = None
      for g in range(NUM_GATES):
        for n in range(tiles):
          term = jnp.dot(dgate_tiles[g, n], wt_ref[gcols(g, n), hcols(k)], preferred_element_type=jnp.float32)
          acc = term if acc is None else acc + term
      new_dh.append(acc)
    return tuple(new_dh), tuple(new_dc)

  init = (tuple(dhT_ref[:, hcols(n)].astype(jnp.float32) for n in range(tiles)),
          tuple(dcT_ref[:, hcols(n)].astype(jnp.float32) for n in range(tiles)))
  dh_tiles, dc_tiles = jax.lax.fori_loop(0, num_steps, step, init)
  for n in range(tiles):
    dh0_ref[:, hcols(n)] = dh_tiles[n].astype(dh0_ref.dtype)
    dc0_ref[:, hcols(n)] = dc_tiles[n].astype(dc0_ref.dtype)


# ----------------------------------------------------------------------------------------------------------------
# Padding and the pallas_calls (all arrays carry the members axis K here).
# ----------------------------------------------------------------------------------------------------------------

def _pad_gates(x, B, H, lay: _Layout):
  """``[K, (T,) B, 4H] -> [K, (T,) Bp, 4Hp]``, padding each gate block separately."""
  x = x.reshape(*x.shape[:-1], NUM_GATES, H)
  pads = [(0, 0)] * (x.ndim - 3) + [(0, lay.Bp - B), (0, 0), (0, lay.Hp - H)]
  x = jnp.pad(x, pads)
  return x.reshape(*x.shape[:-2], NUM_GATES * lay.Hp)


def _unpad_gates(x, B, H, lay: _Layout):
  x = x.reshape(*x.shape[:-1], NUM_GATES, lay.Hp)[..., :B, :, :H]
  return x.reshape(*x.shape[:-2], NUM_GATES * H)


def _pad_state(x, B, H, lay: _Layout):
  """``[K, (T,) B, H] -> [K, (T,) Bp, Hp]``."""
  return jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(0, lay.Bp - B), (0, lay.Hp - H)])


def _pad_weights(W_h, H, lay: _Layout, dtype):
  """``[K, H, 4H] -> [K, Hp, 4Hp]`` with zero rows and zero columns for the padded units."""
  W = W_h.reshape(W_h.shape[0], H, NUM_GATES, H)
  W = jnp.pad(W, [(0, 0), (0, lay.Hp - H), (0, 0), (0, lay.Hp - H)])
  return W.reshape(W_h.shape[0], lay.Hp, NUM_GATES * lay.Hp).astype(dtype)


def _specs(K, T, lay: _Layout):
  seq = lambda d: pl.BlockSpec((None, T, lay.bB, d), lambda k, b: (k, 0, b, 0))
  state = pl.BlockSpec((None, lay.bB, lay.Hp), lambda k, b: (k, b, 0))
  weight = lambda r, c: pl.BlockSpec((None, r, c), lambda k, b: (k, 0, 0))
  return seq, state, weight


def _forward_call(Wp, xp, h0p, c0p, cfg: _Config, lay: _Layout, save: bool):
  """Padded ``Wp [K, Hp, 4Hp]``, ``xp [K, T, Bp, 4Hp]``, ``h0p/c0p [K, Bp, Hp]`` -> hs, hT, cT (+ acts, c_prev)."""
  K, T = xp.shape[:2]
  G = NUM_GATES * lay.Hp
  seq, state, weight = _specs(K, T, lay)
  f32 = jnp.float32
  out_shape = [jax.ShapeDtypeStruct((K, T, lay.Bp, lay.Hp), f32), jax.ShapeDtypeStruct((K, lay.Bp, lay.Hp), f32),
               jax.ShapeDtypeStruct((K, lay.Bp, lay.Hp), f32)]
  out_specs = [seq(lay.Hp), state, state]
  if save:
    out_shape += [jax.ShapeDtypeStruct((K, T, lay.Bp, G), f32), jax.ShapeDtypeStruct((K, T, lay.Bp, lay.Hp), f32)]
    out_specs += [seq(G), seq(lay.Hp)]
  itemsize = jnp.dtype(cfg.matmul_dtype).itemsize
  vmem = lay.Hp * G * itemsize + 4 * T * lay.bB * (G + lay.Hp + (G + lay.Hp if save else 0))
  kernel = functools.partial(_forward_kernel, num_steps=T, Hp=lay.Hp, bh=lay.bh,
                             matmul_dtype=jnp.dtype(cfg.matmul_dtype), save=save)
  return pl.pallas_call(
      kernel, out_shape=out_shape, grid=(K, lay.Bp // lay.bB),
      in_specs=[seq(G), weight(lay.Hp, G), state, state], out_specs=out_specs,
      interpret=cfg.interpret, compiler_params=_compiler_params(cfg, lay, vmem),
      name="lstm_forward_save" if save else "lstm_forward")(xp, Wp, h0p, c0p)


def _backward_call(WTp, acts, cprev, dhsp, dhTp, dcTp, cfg: _Config, lay: _Layout):
  """``WTp [K, 4Hp, Hp]``, saved ``acts [K, T, Bp, 4Hp]``, ``c_prev``, ``dhs [K, T, Bp, Hp]``, ``dhT/dcT`` ->
  ``dgates [K, T, Bp, 4Hp]``, ``dh0``, ``dc0 [K, Bp, Hp]``."""
  K, T = acts.shape[:2]
  G = NUM_GATES * lay.Hp
  seq, state, weight = _specs(K, T, lay)
  f32 = jnp.float32
  itemsize = jnp.dtype(cfg.matmul_dtype).itemsize
  vmem = lay.Hp * G * itemsize + 4 * T * lay.bB * (2 * G + 2 * lay.Hp)
  kernel = functools.partial(_backward_kernel, num_steps=T, Hp=lay.Hp, bh=lay.bh,
                             matmul_dtype=jnp.dtype(cfg.matmul_dtype))
  return pl.pallas_call(
      kernel,
      out_shape=[jax.ShapeDtypeStruct((K, T, lay.Bp, G), f32), jax.ShapeDtypeStruct((K, lay.Bp, lay.Hp), f32),
                 jax.ShapeDtypeStruct((K, lay.Bp, lay.Hp), f32)],
      grid=(K, lay.Bp // lay.bB),
      in_specs=[weight(G, lay.Hp), seq(G), seq(lay.Hp), seq(lay.Hp), state, state],
      out_specs=[seq(G), state, state],
      interpret=cfg.interpret, compiler_params=_compiler_params(cfg, lay, vmem),
      name="lstm_backward")(WTp, acts, cprev, dhsp, dhTp, dcTp)


def _shapes(W_h, xproj):
  (K, T, B, G), H = xproj.shape, W_h.shape[1]
  if G != NUM_GATES * H or W_h.shape != (K, H, G):
    raise ValueError(f"W_h {W_h.shape} and xproj {xproj.shape} do not match [K, H, 4H] / [K, T, B, 4H]")
  return K, T, B, H


def _forward(W_h, xproj, h0, c0, cfg: _Config, save: bool):
  K, T, B, H = _shapes(W_h, xproj)
  lay = layout(cfg.backend, B, H, cfg.matmul_dtype)
  outs = _forward_call(_pad_weights(W_h, H, lay, cfg.matmul_dtype), _pad_gates(xproj.astype(jnp.float32), B, H, lay),
                       _pad_state(h0.astype(jnp.float32), B, H, lay), _pad_state(c0.astype(jnp.float32), B, H, lay),
                       cfg, lay, save)
  hs = outs[0][:, :, :B, :H].astype(xproj.dtype)
  hT, cT = (x[:, :B, :H].astype(dtype) for x, dtype in zip(outs[1:3], (h0.dtype, c0.dtype)))
  return (hT, cT, hs), (outs[3:] if save else None), lay


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _pallas(W_h, xproj, h0, c0, cfg):
  return _forward(W_h, xproj, h0, c0, cfg, save=False)[0]


def _pallas_fwd(W_h, xproj, h0, c0, cfg):
  outputs, (acts, cprev), _ = _forward(W_h, xproj, h0, c0, cfg, save=True)
  return outputs, (W_h, xproj, h0, c0, outputs[2], acts, cprev)


def _pallas_bwd(cfg, saved, cotangents):
  W_h, xproj, h0, c0, hs, acts, cprev = saved
  dhT, dcT, dhs = cotangents
  K, T, B, H = _shapes(W_h, xproj)
  lay = layout(cfg.backend, B, H, cfg.matmul_dtype)
  WTp = jnp.swapaxes(_pad_weights(W_h, H, lay, cfg.matmul_dtype), 1, 2)
  pad = lambda x: _pad_state(x.astype(jnp.float32), B, H, lay)
  dgates_p, dh0_p, dc0_p = _backward_call(WTp, acts, cprev, pad(dhs), pad(dhT), pad(dcT), cfg, lay)
  dgates = _unpad_gates(dgates_p, B, H, lay)
  h_prev = jnp.concatenate([h0[:, None].astype(jnp.float32), hs[:, :-1].astype(jnp.float32)], axis=1)
  dW_h = jnp.einsum("ktbh,ktbg->khg", h_prev, dgates)
  return (dW_h.astype(W_h.dtype), dgates.astype(xproj.dtype), dh0_p[:, :B, :H].astype(h0.dtype),
          dc0_p[:, :B, :H].astype(c0.dtype))


_pallas.defvjp(_pallas_fwd, _pallas_bwd)


def population_recurrence(params, xproj_KTBG: jax.Array, carry: LSTMCarry, unroll: int = 1, *,
                          matmul_dtype=jnp.float32, interpret=None, backend=None) -> tuple[LSTMCarry, jax.Array]:
  """K independent members in ONE pallas_call (K is a grid axis): ``W_h [K, H, 4H]``, ``xproj [K, T, B, 4H]``,
  carry ``[K, B, H]`` -> ``(final carry [K, B, H], hs [K, T, B, H])``."""
  del unroll
  cfg = _resolve(matmul_dtype, interpret, backend)
  h, c = carry
  hT, cT, hs = _pallas(params["W_h"], xproj_KTBG, h, c, cfg)
  return LSTMCarry(h=hT, c=cT), hs


def recurrence(params, xproj_TBG: jax.Array, carry: LSTMCarry, unroll: int = 1, *, matmul_dtype=jnp.float32,
               interpret=None, backend=None) -> tuple[LSTMCarry, jax.Array]:
  """Runs the recurrence over projected inputs ``[T, B, 4H]``; returns ``(final carry, hs [T, B, H])``.

  Equal to ``lstm_fused_vjp.recurrence`` (outputs and gradients). ``W_h`` with a leading members axis
  (``[K, H, 4H]``) dispatches to ``population_recurrence``. ``matmul_dtype``: float32 or bfloat16 dot operands
  (float32 accumulation and state); ``interpret``: None = interpret on CPU; ``backend``: "triton" or "tpu"
  (None = from ``jax.default_backend()``).
  """
  kwargs = dict(matmul_dtype=matmul_dtype, interpret=interpret, backend=backend)
  if params["W_h"].ndim == 3:
    return population_recurrence(params, xproj_TBG, carry, unroll, **kwargs)
  h, c = carry
  final, hs = population_recurrence({"W_h": params["W_h"][None]}, xproj_TBG[None], LSTMCarry(h[None], c[None]),
                                    unroll, **kwargs)
  return LSTMCarry(h=final.h[0], c=final.c[0]), hs[0]


def layer(params, xs_TBI: jax.Array, carry: LSTMCarry | None = None, unroll: int = 1,
          **kwargs) -> tuple[LSTMCarry, jax.Array]:
  """A whole LSTM layer over ``[T, B, in]``: the hoisted input projection, then the Pallas recurrence."""
  from lstm_jax.cells.lstm import project_inputs, zero_carry
  if carry is None:
    carry = zero_carry(xs_TBI.shape[1], params["W_h"].shape[0], xs_TBI.dtype)
  return recurrence(params, project_inputs(params, xs_TBI), carry, unroll, **kwargs)


__all__ = ["recurrence", "population_recurrence", "layer", "layout", "BACKENDS"]
