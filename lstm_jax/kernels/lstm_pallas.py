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
- Shared with the tanh RNN (``rnn_pallas``) and reset-after GRU (``gru_pallas``) kernels, in
  ``lstm_jax.kernels.tiles``: the tile choice (``layout``), per-gate padding, backend / interpret resolution,
  compiler params, the tiled in-kernel dots, the ``pallas_call`` over ``(K, Bp / bB)`` and the ``custom_vjp``.

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
- Cells: kernels exist for the LSTM, the tanh RNN and the reset-after GRU (``model.PALLAS``); the reset-before
  GRU and the peephole / coupled LSTMs have none (``recurrence=pallas`` refuses them, ``auto`` picks fused_vjp or
  scan).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lstm_jax.cells import lstm
from lstm_jax.cells.lstm import NUM_GATES, LSTMCarry
from lstm_jax.kernels import tiles
from lstm_jax.kernels.tiles import BACKENDS, layout

# ----------------------------------------------------------------------------------------------------------------
# Kernels. Per program: seq refs [T, bB, D], state refs [bB, Hp], weight refs [Hp, 4Hp] / [4Hp, Hp].
# ----------------------------------------------------------------------------------------------------------------

def _forward_kernel(xproj_ref, w_ref, h0_ref, c0_ref, *out_refs, num_steps, cols, matmul_dtype, save):
  """``h_t, c_t`` over all T steps; writes ``hs[t]`` (and ``acts[t]``, ``c_prev[t]`` when ``save``)."""
  hs_ref, hT_ref, cT_ref = out_refs[:3]

  def step(t, state):
    h_tiles, c_tiles = state
    hm = tuple(h.astype(matmul_dtype) for h in h_tiles)
    new_h, new_c = [], []
    for n in range(cols.num_tiles):
      act = []
      for g in range(NUM_GATES):
        pre = tiles.gate_dot(xproj_ref[t, :, cols.gate(g, n)].astype(jnp.float32), hm, w_ref, g, n, cols)
        act.append(jnp.tanh(pre) if g == 2 else tiles.sigmoid(pre))
      i, f, gg, o = act
      c = f * c_tiles[n] + i * gg
      h = o * jnp.tanh(c)
      hs_ref[t, :, cols.h(n)] = h.astype(hs_ref.dtype)
      if save:
        acts_ref, cprev_ref = out_refs[3:]
        for g in range(NUM_GATES):
          acts_ref[t, :, cols.gate(g, n)] = act[g]
        cprev_ref[t, :, cols.h(n)] = c_tiles[n]
      new_h.append(h)
      new_c.append(c)
    return tuple(new_h), tuple(new_c)

  h_tiles, c_tiles = jax.lax.fori_loop(0, num_steps, step, (tiles.load_tiles(h0_ref, cols),
                                                            tiles.load_tiles(c0_ref, cols)))
  tiles.store_tiles(hT_ref, h_tiles, cols)
  tiles.store_tiles(cT_ref, c_tiles, cols)


def _backward_kernel(wt_ref, acts_ref, cprev_ref, dhs_ref, dhT_ref, dcT_ref, dgates_ref, dh0_ref, dc0_ref, *,
                     num_steps, cols, matmul_dtype):
  """Reverse walk: ``(dh, dc)`` from step t+1 and ``dhs[t]`` -> ``dgates[t]``, ``dh_{t-1}``, ``dc_{t-1}``."""

  def step(s, state):
    t = num_steps - 1 - s
    dh_tiles, dc_tiles = state
    dgate_tiles, new_dc = {}, []
    for n in range(cols.num_tiles):
      i, f, gg, o = (acts_ref[t, :, cols.gate(g, n)] for g in range(NUM_GATES))
      c_prev = cprev_ref[t, :, cols.h(n)]
      tanh_c = jnp.tanh(f * c_prev + i * gg)
      dh = dh_tiles[n] + dhs_ref[t, :, cols.h(n)].astype(jnp.float32)
      dc = dc_tiles[n] + dh * (o * (1.0 - tanh_c * tanh_c))
      grads = (dc * (gg * i * (1.0 - i)), dc * (c_prev * f * (1.0 - f)), dc * (i * (1.0 - gg * gg)),
               dh * (tanh_c * o * (1.0 - o)))
      for g in range(NUM_GATES):
        dgates_ref[t, :, cols.gate(g, n)] = grads[g].astype(dgates_ref.dtype)
        dgate_tiles[g, n] = grads[g].astype(matmul_dtype)
      new_dc.append(dc * f)
    new_dh = tuple(tiles.gate_dot_t(None, dgate_tiles, wt_ref, k, NUM_GATES, cols) for k in range(cols.num_tiles))
    return new_dh, tuple(new_dc)

  dh_tiles, dc_tiles = jax.lax.fori_loop(0, num_steps, step, (tiles.load_tiles(dhT_ref, cols),
                                                              tiles.load_tiles(dcT_ref, cols)))
  tiles.store_tiles(dh0_ref, dh_tiles, cols)
  tiles.store_tiles(dc0_ref, dc_tiles, cols)


# ----------------------------------------------------------------------------------------------------------------
# The pallas_calls on padded arrays (all with the members axis K), and the custom_vjp around them.
# ----------------------------------------------------------------------------------------------------------------

def _forward_call(Wp, xp, h0p, c0p, cfg: tiles.Config, lay: tiles.Layout, save: bool):
  """Padded ``Wp [K, Hp, 4Hp]``, ``xp [K, T, Bp, 4Hp]``, ``h0p/c0p [K, Bp, Hp]`` -> hs, hT, cT (+ acts, c_prev)."""
  blocks = tiles.Blocks(*xp.shape[:2], lay)
  G = NUM_GATES * lay.Hp
  outs = [blocks.seq_out(lay.Hp), blocks.state_out(), blocks.state_out()]
  if save:
    outs += [blocks.seq_out(G), blocks.seq_out(lay.Hp)]
  kernel = functools.partial(_forward_kernel, num_steps=blocks.T, cols=tiles.Columns(lay.Hp, lay.bh),
                             matmul_dtype=jnp.dtype(cfg.matmul_dtype), save=save)
  in_specs = [blocks.seq(G), blocks.whole(lay.Hp, G), blocks.state(), blocks.state()]
  return tiles.call(kernel, "lstm_forward_save" if save else "lstm_forward", cfg, blocks, (xp, Wp, h0p, c0p),
                    in_specs, outs)


def _backward_call(WTp, acts, cprev, dhsp, dhTp, dcTp, cfg: tiles.Config, lay: tiles.Layout):
  """``WTp [K, 4Hp, Hp]``, saved ``acts [K, T, Bp, 4Hp]``, ``c_prev``, ``dhs [K, T, Bp, Hp]``, ``dhT/dcT`` ->
  ``dgates [K, T, Bp, 4Hp]``, ``dh0``, ``dc0 [K, Bp, Hp]``."""
  blocks = tiles.Blocks(*acts.shape[:2], lay)
  G = NUM_GATES * lay.Hp
  kernel = functools.partial(_backward_kernel, num_steps=blocks.T, cols=tiles.Columns(lay.Hp, lay.bh),
                             matmul_dtype=jnp.dtype(cfg.matmul_dtype))
  in_specs = [blocks.whole(G, lay.Hp), blocks.seq(G), blocks.seq(lay.Hp), blocks.seq(lay.Hp), blocks.state(),
              blocks.state()]
  return tiles.call(kernel, "lstm_backward", cfg, blocks, (WTp, acts, cprev, dhsp, dhTp, dcTp), in_specs,
                    [blocks.seq_out(G), blocks.state_out(), blocks.state_out()])


def _forward(cfg: tiles.Config, W_h, xproj, h0, c0, save: bool):
  """``((hT, cT, hs), residuals)``; residuals (``save``): the inputs, ``hs`` and the padded ``acts``, ``c_prev``."""
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout(cfg.backend, B, H, cfg.matmul_dtype)
  outs = _forward_call(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES),
                       tiles.pad_gates(xproj.astype(jnp.float32), B, H, lay, NUM_GATES),
                       tiles.pad_state(h0, B, H, lay), tiles.pad_state(c0, B, H, lay), cfg, lay, save)
  hs = tiles.unpad_state(outs[0], B, H, xproj.dtype)
  hT, cT = tiles.unpad_state(outs[1], B, H, h0.dtype), tiles.unpad_state(outs[2], B, H, c0.dtype)
  return (hT, cT, hs), ((W_h, xproj, h0, c0, hs, *outs[3:]) if save else None)


def _backward(cfg: tiles.Config, saved, cotangents):
  W_h, xproj, h0, c0, hs, acts, cprev = saved
  dhT, dcT, dhs = cotangents
  K, T, B, H = tiles.check_shapes(W_h, xproj, NUM_GATES)
  lay = layout(cfg.backend, B, H, cfg.matmul_dtype)
  WTp = jnp.swapaxes(tiles.pad_weights(W_h, H, lay, cfg.matmul_dtype, NUM_GATES), 1, 2)
  pad = lambda x: tiles.pad_state(x, B, H, lay)
  dgates_p, dh0_p, dc0_p = _backward_call(WTp, acts, cprev, pad(dhs), pad(dhT), pad(dcT), cfg, lay)
  dgates = tiles.unpad_gates(dgates_p, B, H, lay, NUM_GATES)
  dW_h = tiles.weight_grad(tiles.previous_states(h0, hs), dgates)
  return (dW_h.astype(W_h.dtype), dgates.astype(xproj.dtype), tiles.unpad_state(dh0_p, B, H, h0.dtype),
          tiles.unpad_state(dc0_p, B, H, c0.dtype))


_pallas = tiles.kernel_vjp(_forward, _backward)  # (cfg, W_h, xproj, h0, c0) -> (hT, cT, hs)


def population_recurrence(params, xproj_KTBG: jax.Array, carry: LSTMCarry, unroll: int = 1, *,
                          matmul_dtype=jnp.float32, interpret=None, backend=None) -> tuple[LSTMCarry, jax.Array]:
  """K independent members in ONE pallas_call (K is a grid axis): ``W_h [K, H, 4H]``, ``xproj [K, T, B, 4H]``,
  carry ``[K, B, H]`` -> ``(final carry [K, B, H], hs [K, T, B, H])``."""
  del unroll
  cfg = tiles.resolve(matmul_dtype, interpret, backend)
  h, c = carry
  hT, cT, hs = _pallas(cfg, params["W_h"], xproj_KTBG, h, c)
  return LSTMCarry(h=hT, c=cT), hs


def recurrence(params, xproj_TBG: jax.Array, carry: LSTMCarry, unroll: int = 1, *, matmul_dtype=jnp.float32,
               interpret=None, backend=None) -> tuple[LSTMCarry, jax.Array]:
  """Runs the recurrence over projected inputs ``[T, B, 4H]``; returns ``(final carry, hs [T, B, H])``.

  Equal to ``lstm_fused_vjp.recurrence`` (outputs and gradients). ``W_h`` with a leading members axis
  (``[K, H, 4H]``) dispatches to ``population_recurrence``. ``matmul_dtype``: float32 or bfloat16 dot operands
  (float32 accumulation and state); ``interpret``: None = interpret on CPU; ``backend``: "triton" or "tpu"
  (None = from ``jax.default_backend()``).
  """
  return tiles.on_members(population_recurrence, ("W_h",), params, xproj_TBG, carry, unroll,
                          matmul_dtype=matmul_dtype, interpret=interpret, backend=backend)


def layer(params, xs_TBI: jax.Array, carry: LSTMCarry | None = None, unroll: int = 1,
          **kwargs) -> tuple[LSTMCarry, jax.Array]:
  """A whole LSTM layer over ``[T, B, in]``: the hoisted input projection, then the Pallas recurrence."""
  return tiles.run_layer(lstm, recurrence, params, xs_TBI, carry, unroll, **kwargs)


__all__ = ["recurrence", "population_recurrence", "layer", "layout", "BACKENDS"]
