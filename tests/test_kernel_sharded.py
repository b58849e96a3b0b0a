"""Data-parallel Pallas kernels (interpret mode, 2 simulated CPU devices): the train step traced under the mesh runs
one kernel per device on half the batch (a ``shard_map``), and its new parameters equal the one-device step's, for
every Pallas cell; a batch the devices do not divide, and a step without a mesh, call the kernel as it is.

XLA_FLAGS must be set before JAX initialises, so the check runs in a subprocess.
"""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]

_CHECK = r'''
import json
import jax, jax.numpy as jnp, numpy as np, optax
from lstm_jax import model as model_lib, sharding, train
from lstm_jax.train_state import create_train_state

assert jax.device_count() == 2, jax.devices()
mesh = sharding.mesh()
out = {}
for cell in ("lstm", "gru_reset_after", "rnn"):
  model = model_lib.LanguageModel(vocab_size=11, hidden_size=12, num_layers=2, cell=cell, recurrence="pallas",
                                  init_scheme="flax", kernel_devices=2)  # weights of order 1: W_h's gradient too
  optimizer = optax.sgd(20.0)
  tokens = jax.random.randint(jax.random.key(1), (6, 5), 0, 11)
  state = create_train_state(model, optimizer, 0, 6)
  one = train.compile_train_step(model, optimizer, carry_state=True)(
      create_train_state(model, optimizer, 0, 6), tokens, tokens)[0]  # the step donates the state it is given
  step = train.compile_train_step(model, optimizer, carry_state=True, mesh=mesh)
  placed = sharding.place_train_state(create_train_state(model, optimizer, 0, 6), mesh)
  split = step(placed, *sharding.split_leading((tokens, tokens), mesh))[0]
  with jax.set_mesh(mesh):
    traced = str(jax.make_jaxpr(lambda p, t, c: model.apply(p, t, c))(state.params, tokens, state.carry))
    odd = str(jax.make_jaxpr(lambda p, t: model.apply(p, t))(state.params, tokens[:5]))
  errors = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), (one.params, one.carry),
                        (split.params, split.carry))
  out[cell] = {"max_error": max(jax.tree.leaves(errors)),
               "moved": float(jnp.max(jnp.abs(one.params["layers"][0]["W_h"] - state.params["layers"][0]["W_h"]))),
               "shard_maps": traced.count("shard_map["), "odd_shard_maps": odd.count("shard_map["),
               "carry_rows": split.carry[0][0].sharding.shard_shape(split.carry[0][0].shape)[0]
               if cell == "lstm" else split.carry[0].sharding.shard_shape(split.carry[0].shape)[0],
               "unsplit_shard_maps": str(jax.make_jaxpr(lambda p, t: model.apply(p, t))(state.params, tokens)
                                         ).count("shard_map[")}
print(json.dumps(out))
'''


def test_split_batch_step_equals_the_one_device_step():
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
         "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  result = subprocess.run([sys.executable, "-c", _CHECK], env=env, capture_output=True, text=True, cwd=REPO,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  found = json.loads(result.stdout.strip().splitlines()[-1])
  for cell, check in found.items():
    assert check["moved"] > 1e-3, cell                      # the step changed W_h: the comparison means something
    assert check["max_error"] < 2e-5, (cell, check)         # W_h's gradient summed over both devices' rows
    assert check["shard_maps"] == 2, (cell, check)          # one per layer under the mesh
    assert check["carry_rows"] == 3, (cell, check)          # the carried state stays split: 6 rows, 3 per device
    assert check["odd_shard_maps"] == 0, (cell, check)      # 5 rows do not divide over 2 devices: one kernel call
    assert check["unsplit_shard_maps"] == 0, (cell, check)  # no mesh: the kernel as it is
