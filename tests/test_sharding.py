"""Data parallel: the same training run on 8 simulated CPU devices (batch split over a mesh) and on 1 device agree.

XLA_FLAGS must be set before JAX initialises, so each run happens in its own subprocess.
"""

import pathlib

import numpy as np
import pytest

from simulated_devices import run_script

REPO = pathlib.Path(__file__).resolve().parents[1]

_RUN = r'''
import json, sys
import jax, numpy as np
from lstm_jax import config as config_lib
from lstm_jax.train import checkpoint
from lstm_jax.train import loop as train
from lstm_jax.train import sharding

corpus, workdir, expected_devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
assert jax.device_count() == expected_devices, jax.devices()
c = config_lib.default_config()
c.data.corpus = corpus; c.data.edition = "raw"; c.data.max_tokens = 700; c.data.num_val_tokens = 120
c.data.batch_size = 8; c.data.num_steps = 6; c.model.hidden_size = 8
c.optimizer.learning_rate = 2.0; c.optimizer.clip_norm = 1.0
c.train.num_epochs = 2; c.train.generate_every_epochs = 0
summary = train.train_and_evaluate(c, workdir)
batch = np.zeros((8, 6), np.int32)
placed = sharding.split_leading(batch, sharding.data_parallel_mesh(8))
params = checkpoint.load_params(workdir)[1]
np.savez(workdir + "/params.npz", *[np.asarray(x) for x in jax.tree.leaves(params)])
print(json.dumps({"shard_rows": placed.sharding.shard_shape(batch.shape)[0] if expected_devices > 1 else 8,
                  "train_perplexity": summary["train_perplexity"], "val_perplexity": summary["val_perplexity"]}))
'''


def _run(tmp_path, devices):
  corpus = tmp_path / "corpus.txt"
  if not corpus.exists():
    corpus.write_text("the time traveller smiled and held up the little lever. " * 20)
  workdir = tmp_path / f"devices{devices}"
  summary = run_script(_RUN, str(corpus), str(workdir), str(devices), devices=devices)
  with np.load(workdir / "params.npz") as f:
    params = [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]
  return summary, params


@pytest.mark.slow
def test_sharded_run_matches_single_device_run(tmp_path):
  sharded, sharded_params = _run(tmp_path, 8)
  single, single_params = _run(tmp_path, 1)
  assert sharded["shard_rows"] == 1  # the batch of 8 rows really was split over the 8 devices
  for key in ("train_perplexity", "val_perplexity"):
    np.testing.assert_allclose(sharded[key], single[key], rtol=1e-5)
  assert len(sharded_params) == len(single_params)
  for a, b in zip(sharded_params, single_params):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  assert not np.allclose(single_params[0], 0.0)


_POPULATION = r'''
import json
import jax, numpy as np
from lstm_jax import config as config_lib
from lstm_jax.sweeps import population

assert jax.device_count() == 8
configs = []
for k in range(8):
  c = config_lib.default_config()
  c.data.batch_size = 2; c.data.num_steps = 5; c.model.hidden_size = 8
  c.seed = k % 3; c.optimizer.learning_rate = 0.5 * (k + 1); c.optimizer.clip_norm = 0.5 if k % 2 else 0.0
  configs.append(c)
results = []
for devices in (jax.devices(), jax.devices()[:1]):
  pop = population.Population(configs, vocab_size=7, devices=devices)
  states = pop.init()
  rng = np.random.default_rng(0)
  for _ in range(3):
    inputs, targets = rng.integers(0, 7, (2, 8, 2, 5)).astype(np.int32)
    states, _ = pop.step(states, inputs, targets, np.arange(8) < 7)
  results.append(states)
sharded, single = results
assert len(sharded.params["head"]["W"].sharding.device_set) == 8
assert sharded.params["head"]["W"].sharding.shard_shape(sharded.params["head"]["W"].shape)[0] == 1
jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), sharded.params, single.params)
assert not np.allclose(single.params["head"]["W"][0], single.params["head"]["W"][1])
print(json.dumps("ok"))
'''


@pytest.mark.slow
def test_population_split_over_devices_matches_one_device():
  assert run_script(_POPULATION, devices=8) == "ok"
