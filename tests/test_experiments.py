"""Every shipped experiment file, every variant and every point of every sweep loads and builds its model (no
training): a broken experiment file fails CI. Files are discovered, not listed, so new ones are covered.

Variants come from the file's ``VARIANTS`` (a list of ``key=value,...`` strings) or, for the book-table files, the
``(model, impl)`` keys of ``ROWS`` / ``CELLS``; sweeps from ``SWEEPS`` (names passed to ``sweep(add, name)``) or a
bare ``sweep(add)``.
"""

import importlib.util
import pathlib

import jax
import pytest

from lstm_jax.data import corpora, pipeline
from lstm_jax.models import factory as models
from lstm_jax.sweeps import launch as sweep_lib

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _variants(module):
  if hasattr(module, "VARIANTS"):
    return list(module.VARIANTS)
  rows = getattr(module, "ROWS", None) or getattr(module, "CELLS", None)
  if rows:
    return [f"model={m},impl={i}" for m, i in rows]
  return [None]


def _sweep_names(module):
  if not hasattr(module, "sweep"):
    return []
  return list(getattr(module, "SWEEPS", None) or [None])


FILES = [path for path in sorted(EXPERIMENTS.glob("*.py")) if path.stem != "__init__"]
CASES = [(path, arg) for path in FILES for arg in _variants(_load(path))]
SWEEPS = [(path, name) for path in FILES for name in _sweep_names(_load(path))]


def _check_builds(config):
  model = models.from_config(config.model, 50)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  assert jax.tree.leaves(shapes)
  assert config.optimizer.name and config.train.num_epochs > 0 and config.data.batch_size > 0


@pytest.mark.parametrize("path, arg", CASES, ids=[f"{p.stem}:{a}" for p, a in CASES])
def test_experiment_loads_and_builds(path, arg):
  config = _load(path).get_config(arg) if arg else _load(path).get_config()
  config.lock()
  _check_builds(config)


@pytest.mark.parametrize("path, name", SWEEPS, ids=[f"{p.stem}:{n}" for p, n in SWEEPS])
def test_every_sweep_point_loads_and_builds_for_every_variant(path, name, tmp_path):
  module = _load(path)
  points = []
  if name is None:
    module.sweep(lambda **overrides: points.append(overrides))
  else:
    module.sweep(lambda **overrides: points.append(overrides), name)
  assert points, f"{path.name}: sweep {name!r} adds no points"
  for arg in _variants(module):
    spec = f"{path}:{arg}" if arg else str(path)
    for point in points:
      config = sweep_lib.run_config(spec, point)  # raises on an override that names no config field
      _check_builds(config)
    if name is not None:
      runs = sweep_lib.expand(spec, name, tmp_path)
      assert len({run.workdir for run in runs}) == len(points), "two points of a sweep share a workdir"


def test_bad_variant_is_a_clear_error():
  module = _load(EXPERIMENTS / "d2l_2019.py")
  with pytest.raises(ValueError, match="keys from"):
    module.get_config("modle=lstm")


def test_bad_sweep_override_is_a_clear_error():
  with pytest.raises(ValueError, match="names no config field"):
    sweep_lib.run_config(str(EXPERIMENTS / "lstm.py"), {"model.hiden_size": 8})


def test_d2l_0x_random_row_is_the_books_sequential_data_with_a_zero_state_per_minibatch():
  from lstm_jax.train import loop as train  # noqa: PLC0415
  module = _load(EXPERIMENTS / "d2l_0x.py")
  book = module.get_config("model=rnn,impl=scratch,sampling=random")
  assert book.data.sampling == "sequential" and not pipeline.carries_state(book.data)
  shuffled = module.get_config("model=rnn,impl=scratch,sampling=random_iter")
  assert shuffled.data.sampling == "random" and not pipeline.carries_state(shuffled.data)
  assert pipeline.carries_state(module.get_config("model=rnn,impl=scratch").data)
  with pytest.raises(ValueError, match="random_iter"):
    module.get_config("model=rnn,impl=scratch,sampling=shuffled")


def test_tinyshakespeare_decays_its_learning_rate_over_exactly_its_epochs(real_data_dir):
  """The cosine schedule's length is written in steps: it must be the epoch's minibatches times the epochs."""
  module = _load(EXPERIMENTS / "tinyshakespeare.py")
  config = module.get_config("variant=regularized,epochs=2")
  config.data.data_dir = real_data_dir
  corpus = corpora.load(config.data)
  assert len(pipeline.epoch_batches(config, corpus, epoch=1)) == module.STEPS_PER_EPOCH
  assert config.optimizer.decay_steps == module.STEPS_PER_EPOCH * config.train.num_epochs == 2 * 627
