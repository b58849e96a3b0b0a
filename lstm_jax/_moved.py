"""The module paths of lstm_jax 0.3 (one flat package) keep importing, with a ``DeprecationWarning`` that names the
new home: ``import lstm_jax.model`` gives a module that forwards every attribute to ``lstm_jax.models.scratch``."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

MOVED = {
    "lstm_jax.model": "lstm_jax.models.scratch",
    "lstm_jax.library_model": "lstm_jax.models.library",
    "lstm_jax.nnx_model": "lstm_jax.models.nnx_model",
    "lstm_jax.cudnn_model": "lstm_jax.models.cudnn",
    "lstm_jax.linen": "lstm_jax.models.linen_layers",
    "lstm_jax.nnx": "lstm_jax.models.nnx_layers",
    "lstm_jax.variable_length": "lstm_jax.models.variable_length",
    "lstm_jax.train_state": "lstm_jax.train.state",
    "lstm_jax.optimizer": "lstm_jax.train.optimizer",
    "lstm_jax.checkpoint": "lstm_jax.train.checkpoint",
    "lstm_jax.workdir": "lstm_jax.train.workdir",
    "lstm_jax.metrics": "lstm_jax.train.metrics",
    "lstm_jax.progress": "lstm_jax.train.progress",
    "lstm_jax.plots": "lstm_jax.train.plots",
    "lstm_jax.validation": "lstm_jax.train.validation",
    "lstm_jax.loss": "lstm_jax.train.loss",
    "lstm_jax.evaluate": "lstm_jax.train.evaluate",
    "lstm_jax.generate": "lstm_jax.train.generate",
    "lstm_jax.sharding": "lstm_jax.train.sharding",
    "lstm_jax.multihost": "lstm_jax.train.multihost",
    "lstm_jax.run_inputs": "lstm_jax.commands.inputs",
    "lstm_jax.sweep": "lstm_jax.sweeps.launch",
    "lstm_jax.aggregate": "lstm_jax.sweeps.aggregate",
    "lstm_jax.population": "lstm_jax.sweeps.population",
}


def moved_warning(old: str, new: str) -> None:
  warnings.warn(f"{old} moved to {new}; import it from there (the old path goes in a later release).",
                DeprecationWarning, stacklevel=3)


class _Forwarding(types.ModuleType):
  """An old module path: every attribute is the new module's."""

  def __getattr__(self, name):
    return getattr(importlib.import_module(MOVED[self.__name__]), name)

  def __dir__(self):
    return dir(importlib.import_module(MOVED[self.__name__]))


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Finds the old paths (after every other finder, so only where no file is there)."""

  def find_spec(self, fullname, path=None, target=None):
    del path, target
    return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

  def create_module(self, spec):
    return _Forwarding(spec.name)

  def exec_module(self, module):
    moved_warning(module.__name__, MOVED[module.__name__])


def install() -> None:
  if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
    sys.meta_path.append(_Finder())
