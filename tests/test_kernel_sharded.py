"""Data-parallel Pallas kernels (interpret mode, 2 simulated CPU devices): the train step traced under the mesh runs
one kernel per device on half the batch (a ``shard_map``), and its new parameters equal the one-device step's, for
every Pallas cell; a batch the devices do not divide, and a step without a mesh, call the kernel as it is. A
population whose members divide over the devices steps each device's members there (the kernel in each), equal to
the one-device population; members that do not divide are replicated, and the kernels step aside on a GPU/TPU.

XLA_FLAGS must be set before JAX initialises, so the checks run in a subprocess (``kernel_problems.run_script``).
"""

from kernel_problems import run_script

_CHECK = r'''
import json
import jax, jax.numpy as jnp, numpy as np, optax
from lstm_jax.models import scratch as model_lib
from lstm_jax.models.placement import Placement
from lstm_jax.train import loop as train
from lstm_jax.train import sharding
from lstm_jax.train.state import create_train_state

assert jax.device_count() == 2, jax.devices()
mesh = sharding.mesh()
out = {}
for cell in ("lstm", "gru_reset_after", "rnn"):
  model = model_lib.LanguageModel(vocab_size=11, hidden_size=12, num_layers=2, cell=cell, recurrence="pallas",
                                  init_scheme="flax",  # weights of order 1: W_h's gradient too
                                  placement=Placement(devices=2))
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
  found = run_script(_CHECK, devices=2)
  for cell, check in found.items():
    assert check["moved"] > 1e-3, cell                      # the step changed W_h: the comparison means something
    assert check["max_error"] < 2e-5, (cell, check)         # W_h's gradient summed over both devices' rows
    assert check["shard_maps"] == 2, (cell, check)          # one per layer under the mesh
    assert check["carry_rows"] == 3, (cell, check)          # the carried state stays split: 6 rows, 3 per device
    assert check["odd_shard_maps"] == 0, (cell, check)      # 5 rows do not divide over 2 devices: one kernel call
    assert check["unsplit_shard_maps"] == 0, (cell, check)  # no mesh: the kernel as it is


_POPULATION = r"""
import json
import jax, jax.numpy as jnp, numpy as np
from lstm_jax import config as config_lib
from lstm_jax.sweeps import population

assert jax.device_count() == 2, jax.devices()
configs = []
for seed, learning_rate in ((0, 20.0), (1, 40.0)):
  c = config_lib.default_config()
  c.data.batch_size = 4; c.data.num_steps = 5; c.model.hidden_size = 12; c.model.recurrence = "pallas"
  c.model.init_scheme = "flax"; c.seed = seed; c.optimizer.learning_rate = learning_rate; c.optimizer.clip_norm = 0.0
  configs.append(c)
tokens = np.asarray(jax.random.randint(jax.random.key(2), (2, 4, 5), 0, 11))
active = np.ones(2, bool)
results = {}
for devices in (1, 2):
  pop = population.Population(configs, 11, devices=jax.devices()[:devices])
  states = pop.init()
  traced = str(jax.make_jaxpr(pop._step)(states, tokens, tokens, active))
  new, _ = pop.step(states, tokens, tokens, active)
  results[devices] = (new.params, traced.count("shard_map["), traced.count("pallas_call["),
                      new.params["layers"][0]["W_h"].sharding.shard_shape(new.params["layers"][0]["W_h"].shape)[0])
start = population.Population(configs, 11, devices=jax.devices()[:1]).init().params["layers"][0]["W_h"]
odd = population.Population(configs + configs[:1], 11, devices=jax.devices())
print(json.dumps({
    "max_error": max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), results[1][0],
                                                  results[2][0]))),
    "moved": float(jnp.max(jnp.abs(results[1][0]["layers"][0]["W_h"] - start))),
    "shard_maps": [results[d][1] for d in (1, 2)], "pallas_calls": [results[d][2] for d in (1, 2)],
    "members_per_device": results[2][3], "odd_split": odd.model.placement.split,
    "odd_devices": odd.model.placement.devices,
    "divided_devices": population.Population(configs, 11, devices=jax.devices()).model.placement.devices}))
"""


def test_population_split_over_devices_steps_each_devices_members_there():
  found = run_script(_POPULATION, devices=2)
  assert found["moved"] > 1e-3 and found["max_error"] < 2e-5, found
  assert found["shard_maps"] == [0, 1] and min(found["pallas_calls"]) >= 2, found  # the kernels inside the shard_map
  assert found["members_per_device"] == 1, found
  assert found["divided_devices"] == 1, found                                       # a kernel sees one device
  assert (found["odd_split"], found["odd_devices"]) == ("members", 2), found        # 3 members over 2: replicated
