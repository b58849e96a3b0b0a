"""Population training: every member of a vmapped population equals the single run of the same config."""

import jax
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax.data import batching
from lstm_jax.sweeps import population
from lstm_jax.train import checkpoint
from lstm_jax.train import loop as train
from lstm_jax.train import metrics
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import workdir as workdir_lib

MEMBERS = [  # (seed, learning rate, clip norm): seeds 0 and 3 give epoch 1 different numbers of minibatches
    (0, 1.0, 1.0),
    (3, 2.0, 0.0),
    (0, 0.5, 0.1),
]


def _config(corpus, seed, learning_rate, clip_norm):
  c = config_lib.default_config()
  c.data.corpus = str(corpus); c.data.edition = "raw"; c.data.max_tokens = 583; c.data.num_val_tokens = 90
  c.data.batch_size = 4; c.data.num_steps = 8; c.model.hidden_size = 8
  c.seed = seed; c.optimizer.learning_rate = learning_rate; c.optimizer.clip_norm = clip_norm
  c.train.num_epochs = 2; c.train.generate_every_epochs = 0
  return c


@pytest.fixture
def corpus(tmp_path):
  path = tmp_path / "corpus.txt"
  path.write_text("a cat sat on a mat and a rat sat on a hat; the dog ran. " * 14)
  return path


@pytest.mark.slow
def test_members_equal_single_runs(tmp_path, corpus):
  configs = [_config(corpus, *m) for m in MEMBERS]
  ids = np.arange(583)
  lengths = {len(batching.epoch_batches(ids, sampling="sequential", edition="raw", batch_size=4, num_steps=8,
                                        seed=s, epoch=1)) for s, _, _ in MEMBERS}
  assert len(lengths) == 2  # the masking of members whose epoch is shorter is exercised
  population.train_population(configs, [tmp_path / f"member{k}" for k in range(len(MEMBERS))])
  for k, config in enumerate(configs):
    single_dir = tmp_path / f"single{k}"
    train.train_and_evaluate(config, str(single_dir))
    member_log = [r for r in workdir_lib.read_metrics(tmp_path / f"member{k}") if "final" not in r]
    single_log = [r for r in workdir_lib.read_metrics(single_dir) if "final" not in r]
    assert [r["step"] for r in member_log] == [r["step"] for r in single_log]
    for m, s in zip(member_log, single_log):
      np.testing.assert_allclose(m["train_perplexity"], s["train_perplexity"], rtol=1e-5)
    np.testing.assert_allclose(member_log[-1]["val_perplexity"], single_log[-1]["val_perplexity"], rtol=1e-5)
    member_params = checkpoint.load_params(tmp_path / f"member{k}")[1]  # single-run checkpoint layout
    single_params = checkpoint.load_params(single_dir)[1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), member_params, single_params)
  finals = [workdir_lib.read_metrics(tmp_path / f"member{k}")[-1] for k in range(len(MEMBERS))]
  assert all(f["final"] == 1 and f["population_size"] == len(MEMBERS) for f in finals)
  assert len({f["train_perplexity"] for f in finals}) == len(MEMBERS)  # the members really differ


def test_members_that_differ_in_shape_are_refused(corpus):
  wider = _config(corpus, 0, 1.0, 1.0)
  wider.model.hidden_size = 16
  with pytest.raises(ValueError, match=r"model.hidden_size"):
    population.check_shareable([_config(corpus, 0, 1.0, 1.0), wider])


def test_clip_off_member_has_the_single_run_optimizer_state(corpus):
  config = _config(corpus, 0, 1.0, 0.0)
  pop = population.Population([config, _config(corpus, 0, 1.0, 1.0)], vocab_size=11)
  states = pop.init()
  single = optimizer_lib.make_optimizer(config.optimizer).init(jax.tree.map(lambda x: x[0], states.params))
  member = optimizer_lib.single_run_opt_state(jax.tree.map(lambda x: x[0], states.opt_state), 0.0)
  assert jax.tree.structure(member) == jax.tree.structure(single)


def test_population_benchmark_measures_both_ways_on_tiny_shapes():
  from lstm_jax.benchmarks import population as benchmark_population

  shape = benchmark_population.Shape(hidden_size=8, batch_size=2, num_steps=3, vocab_size=7)
  result = benchmark_population.measure(size=3, steps=2, rounds=3, shape=shape)
  assert result["population_size"] == 3
  rates = (result["population_member_steps_per_sec"], result["sequential_member_steps_per_sec"])
  assert all(np.isfinite(rate) and rate > 0 for rate in rates)
  assert result["ratio_min"] <= result["ratio"] <= result["ratio_max"]
  assert np.isfinite(result["ratio_with_compile"]) and result["population_compile_sec"] > 0
  assert benchmark_population.markdown_row(result).startswith("| 3 | ")
