"""Every shipped experiment file and variant loads and builds its model (no training): a broken config fails CI."""

import importlib.util
import pathlib

import jax
import pytest

from lstm_jax import model as model_lib

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


def _load(path):
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _variants(module):
  rows = getattr(module, "ROWS", None) or getattr(module, "CELLS", None)
  if rows:
    return [f"model={m},impl={i}" for m, i in rows]
  return [None]


CASES = [(path, arg) for path in sorted(EXPERIMENTS.glob("*.py")) if path.stem != "__init__"
         for arg in _variants(_load(path))]


@pytest.mark.parametrize("path, arg", CASES, ids=[f"{p.stem}:{a}" for p, a in CASES])
def test_experiment_loads_and_builds(path, arg):
  config = _load(path).get_config(arg) if arg else _load(path).get_config()
  config.lock()
  model = model_lib.from_config(config.model, 50)
  shapes = jax.eval_shape(model.init, jax.random.key(0))
  assert jax.tree.leaves(shapes)
  assert config.optimizer.name and config.train.num_epochs > 0


def test_bad_variant_is_a_clear_error():
  module = _load(EXPERIMENTS / "d2l_2019.py")
  with pytest.raises(ValueError, match="keys from"):
    module.get_config("modle=lstm")
