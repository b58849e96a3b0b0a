"""The sizes of the kernels' blocks and the shapes they take: the padded layout per backend
(``lstm_jax.kernels.layout``) and the TPU layout against the chip's VMEM; the persistent GPU LSTM's plan (programs,
units per program, where its slice of ``W_h`` lives); the envelope (``lstm_jax.kernels.envelope``): the largest
shapes each kernel takes per platform, at both sides of the edge, and one device; ``recurrence=auto`` picks the
kernel only inside it (one line when it does not); an explicit ``recurrence=pallas`` outside it is one line naming
the limit and the fix, exit 2, nothing written."""

import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from lstm_jax.cells.lstm import LSTMCarry
from lstm_jax.kernels import envelope
from lstm_jax.kernels import layout as layout_lib
from lstm_jax.kernels import lstm_pallas, lstm_persistent
from lstm_jax.models import scratch as model_lib
from lstm_jax.models.placement import Placement
from lstm_jax.train import validation

REPO = pathlib.Path(__file__).resolve().parents[1]
CHIPS = {"v4": 16 << 20, "v5p": 64 << 20, "v5e": 128 << 20}


def test_layout_pads_to_backend_tiles():
  kernel = lstm_pallas.KERNEL
  triton = layout_lib.layout("triton", kernel, 35, 3, 20)
  assert (triton.Tp, triton.Tc, triton.Bp, triton.bB, triton.Hp, triton.bh) == (35, 35, 16, 16, 32, 32)
  assert layout_lib.layout("triton", kernel, 9, 40, 1000)[2:6] == (48, 16, 1024, 128)
  tpu = layout_lib.tpu_layout(kernel, 35, 3, 20, jnp.float32, vmem_bytes=128 << 20)
  assert (tpu.Tp, tpu.Tc, tpu.Bp, tpu.bB, tpu.Hp, tpu.bh) == (36, 18, 8, 8, 128, 128)  # 2 chunks, 1 padded step
  assert layout_lib.tpu_layout(kernel, 5, 3, 20, jnp.bfloat16, vmem_bytes=128 << 20)[:6] == (5, 5, 16, 16, 128, 128)
  with pytest.raises(ValueError, match="backend"):
    lstm_pallas.recurrence({"W_h": jnp.zeros((4, 16))}, jnp.zeros((2, 1, 16)),
                           LSTMCarry(jnp.zeros((1, 4)), jnp.zeros((1, 4))), backend="mosaic_gpu")


def test_tpu_layout_fits_the_chip_and_evens_out_the_chunks():
  kernel = lstm_pallas.KERNEL
  for vmem in (16 << 20, 64 << 20, 128 << 20):
    for T, B, H in ((35, 32, 256), (100, 64, 512), (1000, 16, 512), (100, 128, 1024)):
      lay = layout_lib.tpu_layout(kernel, T, B, H, jnp.float32, vmem)
      if lay is None:
        continue
      assert lay.vmem <= layout_lib.vmem_budget(vmem)
      assert lay.Tp >= T and lay.Tp - T < lay.num_chunks  # the padding is under one step per chunk
      assert lay.Bp % lay.bB == 0 and lay.bB % 8 == 0 and lay.Hp % 128 == 0
  small = layout_lib.tpu_layout(kernel, 100, 128, 1024, jnp.float32, 64 << 20)
  large = layout_lib.tpu_layout(kernel, 100, 128, 1024, jnp.float32, 128 << 20)
  assert small.bB * small.Tc < large.bB * large.Tc  # more VMEM, bigger blocks
  assert layout_lib.tpu_layout(kernel, 100, 128, 1024, jnp.float32, 16 << 20) is None  # 16 MiB of W_h alone


def test_the_persistent_plan_splits_the_hidden_units_over_at_most_half_the_sms():
  plan = lstm_persistent.plan(100, 64, 512, "float32", sms=132)
  assert (plan.Bp, plan.Hp, plan.U, plan.P) == (64, 512, 16, 32)
  assert plan.resident  # 4 x 512 x 16 float32 = 128 KiB: kept on chip
  assert lstm_persistent.plan(100, 128, 1024, "bfloat16", sms=132).resident  # 128 KiB
  assert not lstm_persistent.plan(100, 128, 1024, "float32", sms=132).resident  # 256 KiB: read from L2 each step
  wide = lstm_persistent.plan(35, 32, 2048, "float32", sms=132)
  assert wide.P <= 66 and wide.U * wide.P == 2048 and wide.U == 32
  a100 = lstm_persistent.plan(35, 32, 2048, "float32", sms=108)
  assert a100.P <= 54


def test_outside_the_persistent_envelope_the_batch_blocked_kernels_run():
  assert lstm_persistent.plan(35, 200, 256, sms=132) is None
  assert "batch 200 exceeds" in lstm_persistent.limit(35, 200, 256, sms=132)
  small = lstm_persistent.plan(35, 8, 256, sms=4)  # a small GPU: fewer, wider programs
  assert (small.P, small.U) == (2, 128)
  with pytest.raises(ValueError, match="cannot take this shape"):
    lstm_persistent.recurrence({"W_h": jnp.zeros((256, 1024))}, jnp.zeros((3, 200, 1024)),
                               LSTMCarry(jnp.zeros((200, 256)), jnp.zeros((200, 256))), sms=132)
  assert lstm_pallas.persistent_plan(35, 32, 256) is not None  # the dispatch lstm_pallas uses on a GPU


@pytest.mark.parametrize("cell", model_lib.PALLAS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tpu_edge_is_where_the_blocks_stop_fitting(cell, dtype):
  for chip, vmem in CHIPS.items():
    largest = envelope.max_hidden(cell, "tpu", dtype, vmem)
    assert largest >= 512, chip  # every chip takes the D2L sizes
    assert envelope.limit(cell, "tpu", largest, dtype, vmem_bytes=vmem) is None
    assert envelope.limit(cell, "tpu", largest + 1, dtype, vmem_bytes=vmem) is not None
    layout = layout_lib.tpu_layout(envelope.kernel(cell), 100, 64, largest, dtype, vmem)
    assert layout is not None and layout.vmem <= layout_lib.vmem_budget(vmem)
    assert layout_lib.tpu_layout(envelope.kernel(cell), 1, 1, largest + 128, dtype, vmem) is None
  assert envelope.max_hidden(cell, "tpu", dtype, 64 << 20) < envelope.max_hidden(cell, "tpu", dtype, 128 << 20)


def test_bfloat16_weights_and_fewer_gates_reach_further():
  vmem = 128 << 20
  assert envelope.max_hidden("lstm", "tpu", "bfloat16", vmem) > envelope.max_hidden("lstm", "tpu", "float32", vmem)
  assert envelope.max_hidden("rnn", "tpu", "float32", vmem) > envelope.max_hidden("gru_reset_after", "tpu",
                                                                                  "float32", vmem) \
      > envelope.max_hidden("lstm", "tpu", "float32", vmem)


def test_gpu_edge():
  assert envelope.limit("lstm", "gpu", envelope.GPU_MAX_HIDDEN) is None
  assert "2048" in envelope.limit("lstm", "gpu", envelope.GPU_MAX_HIDDEN + 1)
  assert "grid" in envelope.limit("rnn", "gpu", 256, batch=16 * 65536)
  assert envelope.limit("lstm", "cpu", 10 ** 6) is None  # interpret mode has no chip limit


def _model(hidden, **kwargs):
  return model_lib.LanguageModel(vocab_size=5, hidden_size=hidden, **kwargs)


@pytest.mark.parametrize("cell, fallback", [("lstm", "fused_vjp"), ("rnn", "fused_vjp"),
                                            ("gru_reset_after", "scan")])
def test_auto_considers_the_kernel_only_inside_the_envelope(monkeypatch, cell, fallback):
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")  # no TPU to ask: layout_lib.TPU_DEFAULT_VMEM
  largest = envelope.max_hidden(cell, "tpu", "float32")
  inside, outside = _model(largest, cell=cell), _model(largest + 1, cell=cell)
  assert "pallas" in inside.candidates() and inside.recurrence_note() is None
  assert "pallas" not in outside.candidates() and outside.resolved_recurrence == fallback
  note = outside.recurrence_note()
  assert "does not consider the Pallas kernel" in note and "VMEM" in note and "\n" not in note
  validation.check_model(outside)  # auto never refuses


def test_the_placement_target_decides_the_platform():
  assert "pallas" not in _model(4096, placement=Placement("cuda")).candidates()
  assert _model(4096, placement=Placement("cuda")).resolved_recurrence == "fused_vjp"
  assert "pallas" in _model(2048, placement=Placement("cuda")).candidates()
  assert "pallas" in _model(256, placement=Placement("tpu")).candidates()
  assert _model(256, placement=Placement("tpu")).platform == "tpu" and _model(256).platform == jax.default_backend()
  assert _model(256).candidates() == ("fused_vjp", "scan")  # this CPU: interpret mode is never chosen


def test_a_batch_split_over_devices_keeps_the_kernel_replicated_population_members_use_xla(monkeypatch):
  """Data parallel runs one kernel per device (kernels.sharded); population members that do not divide over the
  devices are replicated, where no kernel call can go."""
  for target in ("cuda", "tpu"):
    assert "pallas" in _model(256, placement=Placement(target, devices=4)).candidates()
    members = dict(placement=Placement(target, devices=4, split="members"))
    assert "pallas" not in _model(256, **members).candidates()
    assert _model(256, **members).resolved_recurrence == "fused_vjp"
    assert "divide over the 4 devices" in _model(256, **members).recurrence_note()
    assert "divide over the 4 devices" in _model(256, recurrence="pallas", **members).recurrence_problem()
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(jax, "device_count", lambda: 8)  # Placement.devices=0: this machine's devices
  assert "pallas" in _model(256).candidates()
  assert "pallas" not in _model(256, placement=Placement(split="members")).candidates()


@pytest.mark.parametrize("fields, named", [(dict(target="gpu"), "target='gpu'"), (dict(devices=-1), "devices=-1"),
                                           (dict(split="rows"), "split='rows'")])
def test_a_bad_placement_is_one_line_naming_the_field(fields, named):
  with pytest.raises(ValueError) as error:
    Placement(**fields)
  assert named in str(error.value) and "\n" not in str(error.value)


def test_configs_do_not_carry_the_placement():
  from lstm_jax import config as config_lib  # noqa: PLC0415
  from lstm_jax.models import factory  # noqa: PLC0415
  c = config_lib.default_config()
  assert not any(path.startswith("model.placement") or "kernel_" in path for path in config_lib.field_paths(c))
  with c.unlocked():
    c.model.placement = "cuda"
  with pytest.raises(ValueError, match="Unknown config.model keys \\['placement'\\]"):
    factory.from_config(c.model, 5)
  assert factory.from_config(config_lib.default_config().model, 5, placement=Placement("tpu")).platform == "tpu"


def test_explicit_pallas_outside_is_one_line_naming_the_limit_and_the_fix(monkeypatch):
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  with pytest.raises(validation.ConfigError) as error:
    validation.check_model(_model(4096, recurrence="pallas"))
  message = str(error.value)
  assert "\n" not in message and "hidden_size 4096" in message and "--config.model.recurrence=auto" in message
  validation.check_model(_model(2048, recurrence="pallas"))


PALLAS_CONFIG = '''
from lstm_jax import config as config_lib
def get_config():
  c = config_lib.default_config()
  c.data.corpus = {corpus!r}; c.data.edition = "raw"; c.data.batch_size = 4; c.data.num_steps = 8
  c.model.hidden_size = 4096; c.model.recurrence = "pallas"
  c.train.num_epochs = 1; c.train.generate_every_epochs = 0; c.generate.prefixes = ("ab",)
  return c
'''
# The training command as it runs, its models built for CUDA (the placement a GPU machine gives them by default):
# this machine has no GPU, and configs do not carry the placement.
MAIN_ON_CUDA = '''
import functools, sys
from lstm_jax.models import factory, placement
factory.from_config = functools.partial(factory.from_config, placement=placement.Placement("cuda"))
from lstm_jax import main
main.run()
'''


def test_main_refuses_pallas_outside_the_envelope_with_exit_2_and_writes_nothing(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("abcd efgh ijkl mnop " * 60)
  config = tmp_path / "pallas_config.py"
  config.write_text(PALLAS_CONFIG.format(corpus=str(corpus)))
  env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "-c", MAIN_ON_CUDA, f"--config={config}",
                           f"--workdir={tmp_path / 'w'}"], capture_output=True, text=True, env=env, cwd=REPO)
  assert result.returncode == 2, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and "hidden_size 4096" in lines[0] and "recurrence=auto" in lines[0], result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "w").exists()
