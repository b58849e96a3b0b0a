"""The held-out spread of the char-RNN recipe over seeds: the project (per recurrence) and PyTorch.

The recipe (issue 33): ``experiments/char_rnn.py`` on a text file, one LSTM layer of 512, no dropout, batch 32 x 64
steps of consecutive text with the state carried across minibatches, Adam 2e-3, global-norm clip 1.0, one epoch, the
last 10% of the text held out. A project run is ``train.loop.train_and_evaluate`` of that config (what ``python -m
lstm_jax.main`` runs; ``project_command`` prints the equivalent command line). The PyTorch run is the same recipe as a
PyTorch user writes it: ``torch.nn.LSTM`` + ``nn.Linear`` with torch's own initialisation (``torch.manual_seed``) and
both biases trained, one-hot inputs, the epoch's 32 streams cut by ``reference.sequential_minibatches`` at the
seed's offset (so the project and PyTorch read the same windows in the same order), the state carried and detached,
``clip_grad_norm_(1.0)``, ``torch.optim.Adam(2e-3)``; its held-out NLL is read as the project's evaluator reads it:
32 contiguous rows of the held-out text, 64 steps at a time, the state carried along each row.

Each run appends one JSON line (implementation, seed, training NLL = the epoch's token-mean loss, held-out NLL, wall
time) to a results file; ``seed_table`` turns the file into the Markdown table.
"""

from __future__ import annotations

import json
import math
import pathlib
import statistics
import time
from typing import Any, Sequence

import ml_collections
import numpy as np

from lstm_jax import config as config_lib

EXPERIMENT = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "char_rnn.py"
OVERRIDES = {"model.num_layers": 1, "model.dropout": 0.0, "data.batch_size": 32, "data.num_steps": 64,
             "optimizer.learning_rate": 0.002, "optimizer.clip_norm": 1.0}


def recipe_config(corpus: str, seed: int, recurrence: str = "auto",
                  carry_state: bool | None = None) -> ml_collections.ConfigDict:
  """``experiments/char_rnn.py:corpus=CORPUS,epochs=1`` with ``OVERRIDES``, the seed and the recurrence."""
  config = config_lib.experiment_config(f"{EXPERIMENT}:corpus={corpus},epochs=1")
  for path, value in {**OVERRIDES, "seed": seed, "model.recurrence": recurrence,
                      "data.carry_state": carry_state}.items():
    *sections, field = path.split(".")
    node = config
    for section in sections:
      node = node[section]
    node[field] = value
  return config


def project_command(corpus: str, seed: int, recurrence: str, workdir: str) -> str:
  """The ``python -m lstm_jax.main`` command line that trains the same run."""
  flags = " ".join(f"--config.{k}={v}" for k, v in {**OVERRIDES, "seed": seed, "model.recurrence": recurrence}.items())
  return (f"python -m lstm_jax.main --config experiments/char_rnn.py:corpus={corpus},epochs=1 --workdir {workdir} "
          f"{flags}")


def zeroed_held_out_nll(workdir: str) -> float:
  """The held-out NLL of a finished project run's parameters with the state zeroed before every ``num_steps``
  window (the project's evaluator carries it along each row instead)."""
  from lstm_jax.data import corpora, pipeline  # noqa: PLC0415
  from lstm_jax.train import checkpoint  # noqa: PLC0415
  from lstm_jax.train import evaluate
  model, params, _, saved = checkpoint.load_params(workdir)
  config = ml_collections.ConfigDict(saved)
  batches = pipeline.validation_batches(config, corpora.load(config.data))
  return evaluate.evaluate_batches(model, params, batches, carry_state=False).mean_nll


def project_run(corpus: str, seed: int, recurrence: str, workdir: str) -> dict[str, Any]:
  from lstm_jax.train import loop as train  # noqa: PLC0415
  config = recipe_config(corpus, seed, recurrence)
  config.train.resume = False
  start = time.perf_counter()
  summary = train.train_and_evaluate(config, workdir)
  wall_s = time.perf_counter() - start
  return {"implementation": f"project, recurrence={recurrence}", "seed": seed, "train_nll": summary["train_loss"],
          "val_nll": summary["val_nll"], "val_nll_zeroed": zeroed_held_out_nll(workdir), "wall_s": wall_s,
          "command": project_command(corpus, seed, recurrence, workdir)}


def _torch_held_out_nll(lstm, head, ids: np.ndarray, batch_size: int, num_steps: int, carry: bool = True) -> float:
  """Every next token of ``ids`` along ``batch_size`` rows, ``num_steps`` at a time, the state carried along each row
  (or zeroed before every window)."""
  import torch  # noqa: PLC0415
  row_length = (len(ids) - 1) // batch_size
  rows = torch.from_numpy(np.stack([ids[b * row_length:(b + 1) * row_length + 1]
                                    for b in range(batch_size)]).astype(np.int64))
  vocab, state, total = head.weight.shape[0], None, 0.0
  with torch.no_grad():
    for start in range(0, row_length, num_steps):
      stop = min(start + num_steps, row_length)
      hs, state = lstm(torch.nn.functional.one_hot(rows[:, start:stop], vocab).float(), state if carry else None)
      total += float(torch.nn.functional.cross_entropy(head(hs).reshape(-1, vocab), rows[:, start + 1:stop + 1]
                                                       .reshape(-1), reduction="sum"))
  return total / (batch_size * row_length)


def torch_run(corpus: str, seed: int, threads: int = 1) -> dict[str, Any]:
  """The recipe in PyTorch (see the module docstring)."""
  import torch  # noqa: PLC0415
  from lstm_jax.data import corpora  # noqa: PLC0415
  from lstm_jax.equivalence import reference  # noqa: PLC0415
  torch.set_num_threads(threads)
  config = recipe_config(corpus, seed)
  data, d = corpora.load(config.data), config.data
  vocab, hidden = len(data.vocab), config.model.hidden_size
  torch.manual_seed(seed)
  lstm, head = torch.nn.LSTM(vocab, hidden, batch_first=True), torch.nn.Linear(hidden, vocab)
  parameters = [*lstm.parameters(), *head.parameters()]
  optimizer = torch.optim.Adam(parameters, lr=config.optimizer.learning_rate)
  batches = reference.sequential_minibatches(data.train_ids, d.batch_size, d.num_steps,
                                             reference.epoch_offset(seed, 1, d.num_steps))
  start, state, nll_sum, tokens = time.perf_counter(), None, 0.0, 0
  for index, (inputs, targets) in enumerate(batches):
    hs, state = lstm(torch.nn.functional.one_hot(torch.from_numpy(inputs.astype(np.int64)), vocab).float(), state)
    loss = torch.nn.functional.cross_entropy(head(hs).reshape(-1, vocab),
                                             torch.from_numpy(targets.astype(np.int64)).reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(parameters, config.optimizer.clip_norm)
    optimizer.step()
    state = tuple(s.detach() for s in state)
    nll_sum, tokens = nll_sum + float(loss.detach()) * targets.size, tokens + targets.size
    if (index + 1) % 50 == 0:
      print(f"torch seed {seed}: step {index + 1}/{len(batches)} loss {float(loss.detach()):.4f} "
            f"{time.perf_counter() - start:.0f} s", flush=True)
  wall_s = time.perf_counter() - start
  return {"implementation": "PyTorch nn.LSTM", "seed": seed, "train_nll": nll_sum / tokens,
          "val_nll": _torch_held_out_nll(lstm, head, data.val_ids, d.batch_size, d.num_steps),
          "val_nll_zeroed": _torch_held_out_nll(lstm, head, data.val_ids, d.batch_size, d.num_steps, carry=False),
          "wall_s": wall_s}


def append(results_path: str, row: dict[str, Any]) -> None:
  path = pathlib.Path(results_path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with path.open("a") as f:
    f.write(json.dumps(row) + "\n")


def read(results_path: str) -> list[dict[str, Any]]:
  return [json.loads(line) for line in pathlib.Path(results_path).read_text().splitlines() if line.strip()]


def _mean_std(values: Sequence[float]) -> str:
  if len(values) < 2:
    return f"{values[0]:.3f}" if values else "-"
  return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def rescore(results_path: str) -> None:
  """Adds ``val_nll_zeroed`` to the project rows that lack it, from their workdirs (named in their command)."""
  found = {row["command"]: zeroed_held_out_nll(row["command"].split("--workdir ")[1].split()[0])
           for row in read(results_path) if "val_nll_zeroed" not in row and "--workdir" in row.get("command", "")}
  rows = read(results_path)  # again: a run may have appended a row meanwhile
  for row in rows:
    if row.get("command") in found:
      row["val_nll_zeroed"] = found[row["command"]]
  pathlib.Path(results_path).write_text("".join(json.dumps(row) + "\n" for row in rows))


def seed_table(rows: list[dict[str, Any]]) -> str:
  """Per implementation: one line per seed, then mean ± sample standard deviation over the seeds."""
  lines = ["| implementation | seed | epoch-mean training NLL | held-out NLL (state carried along each row: the "
           "project's evaluator) | held-out NLL (state zeroed every 64 characters) | wall time (s) |",
           "| --- | --- | --- | --- | --- | --- |"]
  order = list(dict.fromkeys(r["implementation"] for r in rows))
  for name in order:
    mine = sorted((r for r in rows if r["implementation"] == name), key=lambda r: r["seed"])
    for r in mine:
      zeroed = f"{r['val_nll_zeroed']:.3f}" if "val_nll_zeroed" in r else "-"
      lines.append(f"| {name} | {r['seed']} | {r['train_nll']:.3f} | {r['val_nll']:.3f} | {zeroed} | "
                   f"{r['wall_s']:.0f} |")
    columns = [[r[key] for r in mine if key in r and math.isfinite(r[key])]
               for key in ("train_nll", "val_nll", "val_nll_zeroed")]
    lines.append(f"| **{name}** | **mean ± std ({len(mine)} seeds)** | "
                 + " | ".join(f"**{_mean_std(values)}**" for values in columns) + " | |")
  return "\n".join(lines)


def stretch_nlls(workdir: str) -> dict[str, tuple[float, float]]:
  """A finished project run's NLL on four stretches as long as its held-out text (the held-out text, then the first,
  middle and last of its training text): ``(state carried along the rows, state zeroed every window)`` each."""
  from lstm_jax.data import batching, corpora  # noqa: PLC0415
  from lstm_jax.train import checkpoint  # noqa: PLC0415
  from lstm_jax.train import evaluate
  model, params, _, config = checkpoint.load_params(workdir)
  data, d = corpora.load(config.data), config.data
  train_ids, n = data.train_ids, len(data.val_ids)
  stretches = {"held-out": data.val_ids, "training text, first": train_ids[:n],
               "training text, middle": train_ids[len(train_ids) // 2:len(train_ids) // 2 + n],
               "training text, last": train_ids[-n:]}
  out = {}
  for name, ids in stretches.items():
    batches = batching.evaluation_batches(ids, d.batch_size, d.num_steps)
    out[name] = tuple(evaluate.evaluate_batches(model, params, batches, carry_state=carry).mean_nll
                      for carry in (True, False))
  return out
