"""The report's runs: where each (row, seed) lives, reading finished ones, training missing ones (two worker
processes at a time, each bound to its own core), and the greedy samples of a finished run."""

from __future__ import annotations

import concurrent.futures
import datetime
import multiprocessing
import os
import pathlib
import time
from typing import Any

from lstm_jax import cells
from lstm_jax import config as config_lib
from lstm_jax.d2l.rows import ROWS, Row, load_config
from lstm_jax.train import progress as progress_lib
from lstm_jax.train import workdir as workdir_lib

def workdir_of(runs_dir: pathlib.Path, row: Row, seed: int) -> pathlib.Path:
  return runs_dir / row.name / f"seed{seed}"


def read_run(workdir: pathlib.Path) -> dict[str, Any] | None:
  """A finished run's per-epoch records, final summary, training time and ``date`` (UTC, of its metrics file's last
  write), or None when it has not finished (or its log is damaged: said in one line)."""
  try:
    records = workdir_lib.read_metrics(workdir)
  except workdir_lib.MetricsLogError as e:  # resuming the run rebuilds its log from its checkpoint
    print(f"warning: {e} The run counts as unfinished.", flush=True)
    return None
  final = [r for r in records if r.get("final")]
  if not final:
    return None
  epochs = {int(r["epoch"]): r for r in records if "epoch" in r and not r.get("final")}
  written = (workdir_lib.path(workdir) / workdir_lib.METRICS_FILE).stat().mtime
  return {"epochs": epochs, "final": final[-1], "wall_time_sec": workdir_lib.training_time(records),
          "date": datetime.datetime.fromtimestamp(written, datetime.timezone.utc).date().isoformat()}


def check_runs_match(rows: list[Row], seeds: int, runs_dir: pathlib.Path) -> None:
  """Refuses to read or resume a run whose saved config is not its row's config (an edited experiment file, a
  different --runs_dir layout): its numbers would be reported under the wrong recipe."""
  stale = []
  for row in rows:
    for seed in range(seeds):
      workdir = workdir_of(runs_dir, row, seed)
      saved = workdir_lib.read_config(workdir)
      if saved is not None:
        config = load_config(row.experiment)
        config.seed = seed
        found = config_lib.differences(saved, config, (*config_lib.RECIPE_SECTIONS, "train.num_epochs"),
                                       saved_as="run")
        if found:
          stale.append(f"{workdir}: {'; '.join(found)}")
  if stale:
    raise ValueError("These runs were made with another config than their row's now:\n  " + "\n  ".join(stale) +
                     "\nMove them aside (their numbers belong to the old recipe) or pass another --runs_dir.")


def train_row(row: Row, seed: int, workdir: pathlib.Path) -> None:
  from lstm_jax.train import loop as train  # noqa: PLC0415 (reading runs needs no JAX)
  config = load_config(row.experiment)
  config.seed = seed
  config.train.checkpoint_every_epochs = 0  # one checkpoint, at the end (for the samples)
  config.train.generate_every_epochs = 0
  print(f"Training {row.name} seed {seed} -> {workdir}", flush=True)
  train.train_and_evaluate(config, str(workdir))


def _train_task(name: str, seed: int, workdir: str) -> float:
  start = time.perf_counter()
  train_row(ROWS[name], seed, pathlib.Path(workdir))
  return time.perf_counter() - start


def run_cost(model_config, train_tokens: int, num_epochs: int) -> float:
  """A run's relative training cost, only to order runs: recurrent multiply-adds per token x tokens per epoch x
  epochs (layer 0's one-hot input projection is a gather and the output layer is small: both left out; so is the
  elementwise work, which makes the 1.x rows, hidden 32 and batch 1024, costlier than this says)."""
  gates = cells.get(model_config.cell).num_gates
  hidden = model_config.hidden_size
  per_token = sum(gates * hidden * (hidden + (hidden if layer else 0)) for layer in range(model_config.num_layers))
  return float(per_token) * train_tokens * num_epochs


def pending_tasks(rows: list[Row], seeds: int, runs_dir: pathlib.Path,
                  longest_first: bool = False) -> list[tuple[str, int, str]]:
  """``(row name, seed, workdir)`` of every run without a finished record, in row order, or by ``run_cost``
  from the longest down (so parallel workers do not end with one long run alone)."""
  tasks = [(row.name, seed, str(workdir_of(runs_dir, row, seed))) for row in rows for seed in range(seeds)
           if read_run(workdir_of(runs_dir, row, seed)) is None]
  if not longest_first:
    return tasks
  from lstm_jax.data import corpora  # noqa: PLC0415
  costs = {}
  for name in {name for name, _, _ in tasks}:
    config = load_config(ROWS[name].experiment)
    costs[name] = run_cost(config.model, len(corpora.load(config.data).train_ids), config.train.num_epochs)
  return sorted(tasks, key=lambda task: -costs[task[0]])


def _pin_to_core(cores) -> None:
  """Worker initializer: binds this process, and the XLA threads it starts later, to one core of ``cores``."""
  os.sched_setaffinity(0, {cores.get()})


def train_missing(rows: list[Row], seeds: int, runs_dir: pathlib.Path, jobs: int = 1, pin_cores: bool = True) -> None:
  """Trains every (row, seed) without a finished run; ``jobs > 1`` trains that many at once in worker processes
  (the book's small models leave cores idle, so two runs at a time finish sooner on 2 cores than one), longest
  first, each worker bound to its own core when ``pin_cores`` and there are at least ``jobs`` cores (two
  unpinned XLA processes on 2 cores move between them and run each step ~20% slower)."""
  tasks = pending_tasks(rows, seeds, runs_dir, longest_first=jobs > 1)
  if not tasks:
    return
  if jobs <= 1:
    progress = progress_lib.Progress(len(tasks))
    for done, task in enumerate(tasks, start=1):
      print(f"[{done}/{len(tasks)}] {task[0]} seed {task[1]}  {progress.timing()}", flush=True)
      _train_task(*task)
      progress.advance()
    return
  context = multiprocessing.get_context("spawn")  # JAX does not survive fork
  cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  pinned = pin_cores and 0 < jobs <= len(cores)
  queue = context.Queue()
  for core in cores[:jobs] if pinned else ():
    queue.put(core)
  print(f"Training {len(tasks)} runs, {jobs} at a time"
        + (f", worker processes bound to cores {cores[:jobs]}" if pinned else "") + ".", flush=True)
  with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context,
                                              initializer=_pin_to_core if pinned else None,
                                              initargs=(queue,) if pinned else ()) as pool:
    futures = {pool.submit(_train_task, *task): task for task in tasks}
    progress = progress_lib.Progress(len(tasks))
    for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
      seconds = future.result()  # re-raises a run's error here
      name, seed, _ = futures[future]
      progress.advance()
      print(f"[{done}/{len(tasks)}] {name} seed {seed} trained in {seconds / 60:.1f} min  {progress.timing()}",
            flush=True)


def generated_text(workdir: pathlib.Path) -> list[str]:
  """Greedy samples for the config's prefixes from a run's last checkpoint (as the book prints them)."""
  from lstm_jax.train import checkpoint  # noqa: PLC0415
  from lstm_jax.train import generate
  model, params, vocab, config = checkpoint.load_params(workdir)
  return [generate.generate_text(model, params, vocab, prefix, config.generate.num_tokens)
          for prefix in config.generate.prefixes]


def collect_runs(rows: list[Row], seeds: int, runs_dir: pathlib.Path
                 ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
  """The finished runs of every row (``read_run``), and the greedy samples of each row's finished seed 0."""
  runs: dict[str, list[dict[str, Any]]] = {}
  samples: dict[str, list[str]] = {}
  for row in rows:
    for seed in range(seeds):
      run = read_run(workdir_of(runs_dir, row, seed))
      if run is not None:
        runs.setdefault(row.name, []).append(run)
    if read_run(workdir_of(runs_dir, row, 0)) is not None:  # finished runs only: an interrupted one may hold none
      samples[row.name] = generated_text(workdir_of(runs_dir, row, 0))
  return runs, samples
