"""Checkpoints written with orbax: the parameters, with the config and vocabulary beside them as JSON."""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections
import orbax.checkpoint as ocp

from lstm_jax.data.vocab import Vocab


def save_final(workdir: pathlib.Path, params: Any, config: ml_collections.ConfigDict, vocab: Vocab) -> pathlib.Path:
  """Writes ``<workdir>/final/{params, meta}``; returns the directory."""
  directory = (pathlib.Path(workdir) / "final").absolute()
  checkpointer = ocp.Checkpointer(ocp.CompositeCheckpointHandler())
  checkpointer.save(directory, ocp.args.Composite(
      params=ocp.args.StandardSave(params),
      meta=ocp.args.JsonSave({"config": config.to_dict(), "vocab": vocab.to_json()})), force=True)
  checkpointer.close()
  return directory
