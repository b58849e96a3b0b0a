"""Reproduces the book's perplexity tables (reference ``d2l_tables.md`` section 0) and writes a report.

``python -m lstm_jax.report --rows=tm2019 --seeds=3 --out_dir=reports/d2l`` trains every missing
``runs_dir/ROW/seedK`` in-process (``train.train_and_evaluate``), or reads it when it has finished, then writes:

- ``RESULTS.md``: per row the book's perplexity at each printed epoch, ours (mean +- std over seeds) at the same
  epochs, wall time, tokens/s and a verdict; the greedy samples for the book's prefixes; the scratch-vs-library
  table (same seed, same weights -> same loss curve, and the speed of each);
- one PNG per table: perplexity against epoch, ours (lines) against the book's points (markers).

``--rows`` takes row names, table names (jaychou, tm2019, tm0x, tm1x, all) or shell patterns, comma separated.
A row is *reproduced* when our mean final perplexity is at most the top of the book's run-to-run spread (section
6), or, where no spread exists, at most 10% above the book's number (lower is fine).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import time
from typing import Any

import numpy as np
from absl import app, flags, logging

from lstm_jax import config as config_lib
from lstm_jax.d2l_rows import ROWS, TABLES, Row, load_config, select_rows  # noqa: F401 (the report's vocabulary)

# Rows whose final number misses the criterion, with the experiment that explains why (shown in RESULTS.md).
EXPLANATIONS: dict[str, str] = {
    "jaychou_gru_scratch": (
        "the book's 1.44 is a single run, printed in the steepest part of the descent (4.86 at epoch 120, 1.44 at "
        "160). Our three seeds follow the book's curve to epoch 80 (149.7-151.6 at epoch 40 against 150.0, "
        "31.7-33.4 at 80 against 32.6) and end at 1.73-1.74. Experiment: the book's code written again in PyTorch "
        "(`python -m lstm_jax.torch_crosscheck --experiment=d2l_jaychou.py:model=gru,impl=scratch`, its own "
        "N(0, 0.01) draws, our minibatches; [tables](torch_crosscheck_jaychou_gru_scratch.md)) ends at "
        "1.777 ± 0.004 over three seeds (6.01 at 120). Started from our JAX run's weights (`--init=ours`) it gives "
        "our per-epoch perplexity to 6 digits for 20 epochs (seed 0: 654.6789 / 264.4830 at epochs 1 / 20, ours "
        "654.6791 / 264.4829), then rounding differences grow and it ends at 1.753 and 1.745 against our 1.735 "
        "and 1.728. ShusenTang's PyTorch port of d2l-zh 1.x (reference section 4.6) printed 5.86 at 120 and 1.82 "
        "at 160. Three implementations agree on 1.73-1.82 and 5.7-6.2 at epoch 120; the book's single MXNet run "
        "descended faster (4.86 at 120), so its 1.44 is outside what this recipe gives elsewhere. The other six "
        "Jay Chou rows reproduce."),
    "tm1x_deep_gru_concise": (
        "measured as the book measures it (the mean of per-batch perplexities over the last half epoch, "
        "`train.log_batch_perplexity`), our three seeds end at 3.664, 3.614 and 3.635: mean 3.638 ± 0.025, 0.8% "
        "above the top of the five JAX builds' range (3.49-3.61), about one seed-to-seed std; validation 6.95 "
        "(7.17, 6.74, 6.95) against 6.61-7.01. The same runs read 3.639 / 6.91 on the pooled measure (exp of the "
        "epoch's token-mean NLL). Experiment: ten seeds (`python -m lstm_jax.report --rows=tm1x_deep_gru_concise "
        "--seeds=10`; seeds 3-9 trained earlier without core pinning, so in other float rounding) end at "
        "3.604 ± 0.070 (median 3.611, 5 of 10 at or below 3.61; 3.48-3.70) with validation 6.93 (8 of 10 at or "
        "below 7.01): the row reproduces over ten seeds and the three-seed miss is seed noise. The training value is "
        "below the PyTorch (4.08-4.29) and TensorFlow (3.75-3.96) ranges of the same row."),
}


# Findings about rows that reproduce, shown under their table whatever the verdict.
NOTES: dict[str, str] = {
    "tm0x_rnn_scratch_random": (
        "the book's \"random sampling\" run calls `train_ch8(net, train_iter, ..., use_random_iter=True)` with the "
        "`train_iter` of the sequential run before it (PyTorch and MXNet 0.17, d2l-zh 2.0): the minibatches are "
        "sequential partitions and only the state is zeroed before every minibatch. The config does the same "
        "(`data.carry_state=False`). With shuffled chunks instead (`sampling=random_iter`, `seq_data_iter_random`) "
        "three seeds ended at 1.594 ± 0.016 (prints 1.6, outside the book's 1.3-1.5), their epochs 451-500 had "
        "median 1.56 and 44% print 1.5 or less; with the book's recipe (the runs in this table), median 1.46 and "
        "89%, and the curve follows the book's PyTorch plot (epoch 200: book 4.31, ours 4.31-4.64 against "
        "4.91-5.18 with shuffled chunks)."),
}


# --- runs -------------------------------------------------------------------------------------------------------

def workdir_of(runs_dir: pathlib.Path, row: Row, seed: int) -> pathlib.Path:
  return runs_dir / row.name / f"seed{seed}"


def read_run(workdir: pathlib.Path) -> dict[str, Any] | None:
  """A finished run's per-epoch records and final summary, or None when it has not finished."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return None
  records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
  final = [r for r in records if r.get("final")]
  if not final:
    return None
  epochs = {int(r["epoch"]): r for r in records if "epoch" in r and not r.get("final")}
  return {"epochs": epochs, "final": final[-1], "wall_time_sec": _wall_time(records)}


def _wall_time(records: list[dict[str, Any]]) -> float:
  """Training time over every session of a finished run: a resumed run's clock restarts (``elapsed_sec`` drops),
  so each earlier session adds its last logged time to the final record's ``wall_time_sec``."""
  earlier, previous = 0.0, 0.0
  for record in records:
    elapsed = record.get("elapsed_sec", previous)
    if not record.get("final") and elapsed < previous:
      earlier += previous
    previous = elapsed
  return earlier + [r for r in records if r.get("final")][-1]["wall_time_sec"]


def check_runs_match(rows: list[Row], seeds: int, runs_dir: pathlib.Path) -> None:
  """Refuses to read or resume a run whose saved config is not its row's config (an edited experiment file, a
  different --runs_dir layout): its numbers would be reported under the wrong recipe."""
  stale = []
  for row in rows:
    for seed in range(seeds):
      saved = workdir_of(runs_dir, row, seed) / "config.json"
      if saved.exists():
        config = load_config(row.experiment)
        config.seed = seed
        found = config_lib.differences(json.loads(saved.read_text())["config"], config,
                                       (*config_lib.RECIPE_SECTIONS, "train.num_epochs"), saved_as="run")
        if found:
          stale.append(f"{saved.parent}: {'; '.join(found)}")
  if stale:
    raise ValueError("These runs were made with another config than their row's now:\n  " + "\n  ".join(stale) +
                     "\nMove them aside (their numbers belong to the old recipe) or pass another --runs_dir.")


def train_row(row: Row, seed: int, workdir: pathlib.Path) -> None:
  from lstm_jax import train  # noqa: PLC0415 (the report's reading half needs no JAX)
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
  gates = {"lstm": 4, "gru": 3, "gru_reset_after": 3}.get(model_config.cell, 1)
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
    for task in tasks:
      _train_task(*task)
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
    for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
      seconds = future.result()  # re-raises a run's error here
      name, seed, _ = futures[future]
      print(f"[{done}/{len(tasks)}] {name} seed {seed} trained in {seconds / 60:.1f} min", flush=True)


def generated_text(workdir: pathlib.Path) -> list[str]:
  """Greedy samples for the config's prefixes from a run's last checkpoint (as the book prints them)."""
  from lstm_jax import checkpoint, generate  # noqa: PLC0415
  model, params, vocab, config = checkpoint.load_params(workdir)
  return [generate.generate_text(model, params, vocab, prefix, config.generate.num_tokens)
          for prefix in config.generate.prefixes]


# --- summary ----------------------------------------------------------------------------------------------------

def _mean_std(values: list[float]) -> tuple[float, float]:
  array = np.asarray(values, np.float64)
  return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def measure_keys(row: Row, runs: list[dict[str, Any]]) -> tuple[str, str]:
  """The (train, val) metric keys that match the book's measure: d2l 1.x's per-batch means where every run logged
  them, else exp of the token-mean NLL."""
  keys = ("train_batch_perplexity_last_half", "val_batch_perplexity_mean")
  if row.batch_means and runs and all(keys[0] in r["final"] and keys[1] in r["final"] for r in runs):
    return keys
  return "train_perplexity", "val_perplexity"


def summarise(row: Row, runs: list[dict[str, Any]]) -> dict[str, Any]:
  """Ours at the book's epochs (mean, std over runs), final validation, time, speed and the verdict."""
  train_key, val_key = measure_keys(row, runs)
  at_epochs = {}
  for epoch in row.book:
    values = [r["epochs"][epoch][train_key] for r in runs if epoch in r["epochs"]]
    at_epochs[epoch] = _mean_std(values) if values else None
  final_epoch = max(row.book)
  val = [r["final"][val_key] for r in runs if val_key in r["final"]]
  speeds = [r["final"]["tokens_per_sec"] for r in runs if "tokens_per_sec" in r["final"]]
  summary = {"seeds": len(runs), "at_epochs": at_epochs, "val": _mean_std(val) if val else None,
             "measure": train_key,
             "wall_time_sec": _mean_std([r["wall_time_sec"] for r in runs]),
             "tokens_per_sec": float(np.mean(speeds)) if speeds else None}
  summary["verdict"] = verdict(row, at_epochs.get(final_epoch), summary["val"])
  return summary


def _within(row: Row, ours: float, book: float, spread: tuple[float, float] | None) -> bool:
  if row.decimals is not None:
    ours = round(ours, row.decimals)
  limit = spread[1] if spread else 1.1 * book
  return ours <= limit + 1e-9


def verdict(row: Row, final: tuple[float, float] | None, val: tuple[float, float] | None) -> str:
  if final is None:
    return "not run"
  ok = _within(row, final[0], row.book[max(row.book)], row.spread)
  if row.book_val is not None:
    ok = ok and val is not None and _within(row, val[0], row.book_val, row.spread_val)
  return "reproduced" if ok else "NOT reproduced"


def _fmt(value: float) -> str:
  return f"{value:.2f}" if value >= 10 else f"{value:.3f}"


def results_table(rows: list[Row], summaries: dict[str, dict[str, Any]]) -> list[str]:
  lines = ["| row | epoch | book | ours (mean ± std) | book val | ours val | seeds | wall time | tokens/s | verdict |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for row in rows:
    s = summaries.get(row.name)
    for i, (epoch, book) in enumerate(sorted(row.book.items())):
      last = epoch == max(row.book)
      ours = s and s["at_epochs"].get(epoch)
      cells = [row.name if i == 0 else "", str(epoch), _fmt(book),
               f"{_fmt(ours[0])} ± {ours[1]:.3f}" if ours else "-",
               _fmt(row.book_val) if last and row.book_val else "",
               f"{_fmt(s['val'][0])} ± {s['val'][1]:.3f}" if last and s and s["val"] else "",
               str(s["seeds"]) if s and i == 0 else "",
               f"{s['wall_time_sec'][0]:.0f} s" if s and i == 0 else "",
               f"{s['tokens_per_sec']:,.0f}" if s and i == 0 and s["tokens_per_sec"] else "",
               s["verdict"] if s and last else ("not run" if last else "")]
      lines.append("| " + " | ".join(cells) + " |")
  return lines


def summary_table(rows: list[Row], summaries: dict[str, dict[str, Any]]) -> list[str]:
  """One line per row: the book's final number, ours (mean ± std), seeds, verdict."""
  lines = ["| row | epochs | book (train / val) | ours (mean ± std) | seeds | verdict |", "|---|---|---|---|---|---|"]
  for row in rows:
    s = summaries.get(row.name)
    final_epoch = max(row.book)
    book = _fmt(row.book[final_epoch]) + (f" / {_fmt(row.book_val)}" if row.book_val else "")
    ours = "-"
    if s and s["at_epochs"].get(final_epoch):
      mean, std = s["at_epochs"][final_epoch]
      ours = f"{_fmt(mean)} ± {std:.3f}" + (f" / {_fmt(s['val'][0])}" if row.book_val and s["val"] else "")
    lines.append(f"| {row.name} | {final_epoch} | {book} | {ours} | {s['seeds'] if s else 0} | "
                 f"{s['verdict'] if s else 'not run'} |")
  return lines


def compute_time_table(rows: list[Row], runs: dict[str, list[dict[str, Any]]]) -> list[str]:
  """Training time of the finished runs summed per table, scratch rows apart from library ("concise") rows, in
  minutes of one worker process (one core): what a rerun from nothing costs, and what dominates it."""
  totals: dict[str, dict[str, float]] = {}
  for row in rows:
    kind = "library" if "concise" in row.name else "scratch"
    minutes = sum(run["wall_time_sec"] for run in runs.get(row.name, [])) / 60
    group = row.name if row.slow else row.table  # a slow row (left out of its table's name) gets its own line
    totals.setdefault(group, {"scratch": 0.0, "library": 0.0})[kind] += minutes
  if len(totals) > 1:
    totals["all"] = {kind: sum(t[kind] for t in totals.values()) for kind in ("scratch", "library")}
  lines = ["| table | scratch rows | library rows | total | on 2 cores, at least |", "|---|---:|---:|---:|---:|"]
  for table, t in totals.items():
    total = t["scratch"] + t["library"]
    lines.append(f"| {table} | {t['scratch']:.1f} | {t['library']:.1f} | {total:.1f} | {total / 2:.1f} min |")
  return lines


def plot_table(table: str, rows: list[Row], runs: dict[str, list[dict[str, Any]]], path: pathlib.Path) -> None:
  """Perplexity against epoch: our seed-mean curves (lines) and the book's points (markers), log scale."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
  for index, row in enumerate(r for r in rows if runs.get(r.name)):  # rows not run yet stay out of the plot
    color = f"C{index % 10}"
    row_runs = runs[row.name]
    if row_runs:
      train_key, val_key = measure_keys(row, row_runs)  # the measure the tables judge the row on
      epochs = sorted(set.intersection(*(set(r["epochs"]) for r in row_runs)))
      for key, style in ((train_key, dict(lw=1.2, label=row.name.split("_", 1)[1])), (val_key, dict(lw=1.0, ls="--"))):
        key_epochs = [e for e in epochs if all(key in r["epochs"][e] for r in row_runs)]
        if key_epochs:
          ax.plot(key_epochs, [np.mean([r["epochs"][e][key] for r in row_runs]) for e in key_epochs], color=color,
                  **style)
    ax.plot(list(row.book), list(row.book.values()), "o", color=color, ms=5, mfc="none")
    if row.book_val is not None:
      ax.plot([max(row.book)], [row.book_val], "s", color=color, ms=5, mfc="none")
  ax.set_yscale("log")
  ax.set_xlabel("epoch")
  ax.set_ylabel("perplexity")
  ax.set_title(f"{TABLES[table]}\nlines: ours (train; dashed: val), markers: book", fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


# --- scratch vs library -----------------------------------------------------------------------------------------

LIBRARY_PAIRS = (("lstm", "flax"), ("lstm", "flax_optimized"), ("gru_reset_after", "flax"), ("rnn", "flax"))


def scratch_vs_library(cell: str, implementation: str, num_steps: int, seed: int = 0) -> dict[str, Any]:
  """Trains the scratch model and the Flax-cell model from the same weights on the same minibatches (the tm2019
  LSTM row's data and optimizer) and returns both loss curves and both speeds."""
  import jax  # noqa: PLC0415
  from lstm_jax import library_model, model as model_lib, train  # noqa: PLC0415
  from lstm_jax.data import corpora  # noqa: PLC0415

  config = load_config("d2l_2019.py:model=lstm,impl=scratch")
  corpus = corpora.load(config.data)
  batch_size = config.data.batch_size
  scratch = model_lib.LanguageModel(vocab_size=len(corpus.vocab), hidden_size=config.model.hidden_size, cell=cell)
  library = library_model.LibraryLanguageModel(vocab_size=len(corpus.vocab), hidden_size=config.model.hidden_size,
                                               cell=cell, optimized=implementation == "flax_optimized")
  optimizer = train.make_optimizer(config.optimizer)
  scratch_state = train.create_train_state(scratch, optimizer, seed, batch_size)
  library_params = library_model.from_scratch_params(cell, scratch_state.params)
  library_state = train.TrainState(library_params, optimizer.init(library_params), scratch_state.step,
                                   scratch_state.rng, library.zero_carry(batch_size))
  library_state = jax.tree.map(lambda x: x.copy(), library_state)  # the train step donates its state
  batches = []
  epoch = 1
  while len(batches) < num_steps:
    batches += train.epoch_batches(config, corpus, epoch)  # the train loop's own epoch order
    epoch += 1
  batches = batches[:num_steps]
  result = {"cell": cell, "implementation": implementation, "steps": num_steps}
  for name, model, state in (("scratch", scratch, scratch_state), ("library", library, library_state)):
    step_fn = train.compile_train_step(model, optimizer, carry_state=True)
    losses, tokens = [], 0
    state, metrics = step_fn(state, *batches[0])  # compile outside the timing
    losses.append(metrics["nll_sum"] / batches[0][1].size)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for inputs, targets in batches[1:]:
      state, metrics = step_fn(state, inputs, targets)
      losses.append(metrics["nll_sum"] / targets.size)
      tokens += targets.size
    jax.block_until_ready(metrics)
    result[name + "_tokens_per_sec"] = tokens / max(time.perf_counter() - start, 1e-9)
    result[name + "_losses"] = [float(x) for x in losses]
  a, b = np.asarray(result["scratch_losses"]), np.asarray(result["library_losses"])
  result["max_rel_diff"] = float(np.max(np.abs(a - b) / np.abs(a)))
  return result


def library_table(results: list[dict[str, Any]]) -> list[str]:
  lines = ["| cell | library | steps | first loss | last loss (scratch / library) | max relative difference "
           "| scratch tokens/s | library tokens/s |", "|---|---|---|---|---|---|---|---|"]
  for r in results:
    lines.append(f"| {r['cell']} | {r['implementation']} | {r['steps']} | {r['scratch_losses'][0]:.6f} | "
                 f"{r['scratch_losses'][-1]:.6f} / {r['library_losses'][-1]:.6f} | {r['max_rel_diff']:.2e} | "
                 f"{r['scratch_tokens_per_sec']:,.0f} | {r['library_tokens_per_sec']:,.0f} |")
  return lines


# --- the command ------------------------------------------------------------------------------------------------

def write_report(rows: list[Row], runs: dict[str, list[dict[str, Any]]], out_dir: pathlib.Path,
                 samples: dict[str, list[str]] | None = None, library: list[dict[str, Any]] | None = None,
                 command: str = "") -> dict[str, dict[str, Any]]:
  """Writes ``RESULTS.md`` and one PNG per table into ``out_dir``; returns the per-row summaries."""
  out_dir.mkdir(parents=True, exist_ok=True)
  summaries = {row.name: summarise(row, runs[row.name]) for row in rows if runs.get(row.name)}
  lines = ["# D2L perplexity tables, reproduced", "",
           f"Generated by `{command or 'python -m lstm_jax.report'}`. Book numbers: "
           "`d2l_tables.md` section 0; spread: section 6. *Reproduced*: our mean final perplexity is at most the "
           "top of the book's spread, or at most 10% above the book where no spread exists (lower is fine). "
           "Perplexity is training perplexity of the epoch (the book's quantity; for d2l 1.x, as its board shows "
           "it, the mean of per-batch perplexities over the last half epoch, and over the validation batches, "
           "where the runs logged them); tokens/s over the last logging "
           "period; wall time of the whole run (compilation included; every session of a resumed run).", ""]
  lines += ["## Summary", "", *summary_table(rows, summaries), ""]
  if runs:
    lines += ["## Compute time", "",
              "Minutes of training summed over the runs of this report (each run's wall time, compilation "
              "included). The report trains `--jobs` runs at a time, each on a core of its own, so rerunning them "
              "from nothing on two cores takes about half the total or more.", "",
              *compute_time_table(rows, runs), ""]
  for table, title in TABLES.items():
    table_rows = [r for r in rows if r.table == table]
    if not table_rows:
      continue
    lines += [f"## {title}", "", *results_table(table_rows, summaries), ""]
    missed = [r for r in table_rows if r.name in summaries and summaries[r.name]["verdict"] == "NOT reproduced"]
    for row in missed:
      lines += [f"- **{row.name}**: " + EXPLANATIONS.get(row.name, "no explanation recorded yet."), ""]
    measures = {summaries[r.name]["measure"] for r in table_rows if r.name in summaries}
    if measures - {"train_perplexity"}:
      lines += [f"- Ours measured as the book: {', '.join(sorted(measures))} (train); the val column likewise.", ""]
    for row in table_rows:
      if row.name in NOTES and row.name in summaries:
        lines += [f"- **{row.name}** (note): " + NOTES[row.name], ""]
    if any(runs.get(r.name) for r in table_rows):
      plot_table(table, table_rows, runs, out_dir / f"{table}.png")
      lines += [f"![{table}]({table}.png)", ""]
  if samples:
    lines += ["## Generated text (greedy, seed 0, the book's prefixes)", ""]
    for name, texts in samples.items():
      lines += [f"- **{name}**"] + [f"  - `{text}`" for text in texts]
    lines.append("")
  if library:
    lines += ["## Scratch vs library cells: same seed, same weights", "",
              "The scratch model's weights are converted into the Flax cell's layout (`library_model."
              "from_scratch_params`), both train on the same minibatches of the tm2019 LSTM row (SGD lr 100, clip "
              "0.01, hidden 256, state carried). The D2L GRU (reset gate before the matmul) has no Flax counterpart; "
              "the pair compares `gru_reset_after` with `nn.GRUCell`. The scratch model runs its default "
              "recurrence (the LSTM: the hand-written fused backward). Speeds: steady-state training tokens/s after "
              "compilation, on this machine, while other jobs may share it.", "",
              *library_table(library), ""]
  (out_dir / "RESULTS.md").write_text("\n".join(lines))
  (out_dir / "summary.json").write_text(json.dumps(
      {name: {**s, "at_epochs": {str(k): v for k, v in s["at_epochs"].items()}} for name, s in summaries.items()},
      indent=1))
  return summaries


_ROWS_FLAG = flags.DEFINE_string("rows", "tm2019", "Rows: names, tables (jaychou, tm2019, tm0x, tm1x, all) or "
                                 "patterns, comma separated.")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per row (0 .. N-1).")
_RUNS_DIR = flags.DEFINE_string("runs_dir", "runs/d2l", "Where the runs live: RUNS_DIR/ROW/seedK.")
_OUT_DIR = flags.DEFINE_string("out_dir", "reports/d2l", "Where RESULTS.md and the plots go.")
_JOBS = flags.DEFINE_integer("jobs", 2, "Runs trained at once, each in its own process (1: one after another).")
_TRAIN = flags.DEFINE_bool("train", True, "Train missing runs; --notrain reports only the finished ones.")
_PIN_CORES = flags.DEFINE_bool("pin_cores", True, "Bind each of the --jobs worker processes to its own CPU core "
                                "(when there are that many cores).")
_LIBRARY_STEPS = flags.DEFINE_integer("library_steps", 40, "Steps of the scratch-vs-library comparison (0: skip).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.ERROR)  # orbax warns about every read-only restore of a sample
  rows = select_rows(_ROWS_FLAG.value)
  runs_dir = pathlib.Path(_RUNS_DIR.value)
  check_runs_match(rows, _SEEDS.value, runs_dir)
  runs: dict[str, list[dict[str, Any]]] = {}
  samples: dict[str, list[str]] = {}
  if _TRAIN.value:
    train_missing(rows, _SEEDS.value, runs_dir, _JOBS.value, _PIN_CORES.value)
  for row in rows:
    for seed in range(_SEEDS.value):
      workdir = workdir_of(runs_dir, row, seed)
      run = read_run(workdir)
      if run is not None:
        runs.setdefault(row.name, []).append(run)
    if read_run(workdir_of(runs_dir, row, 0)) is not None:  # finished runs only: an interrupted one may hold none
      samples[row.name] = generated_text(workdir_of(runs_dir, row, 0))
  library = [scratch_vs_library(cell, impl, _LIBRARY_STEPS.value) for cell, impl in LIBRARY_PAIRS] \
      if _LIBRARY_STEPS.value > 0 else None
  command = (f"python -m lstm_jax.report --rows={_ROWS_FLAG.value} --seeds={_SEEDS.value} "
             f"--runs_dir={_RUNS_DIR.value} --out_dir={_OUT_DIR.value}")
  summaries = write_report(rows, runs, pathlib.Path(_OUT_DIR.value), samples, library, command)
  for name, s in summaries.items():
    final = s["at_epochs"][max(ROWS[name].book)]
    print(f"{name:34s} {final[0]:8.3f} ± {final[1]:.3f}  ({s['seeds']} seeds)  {s['verdict']}")
  print(f"Wrote {pathlib.Path(_OUT_DIR.value) / 'RESULTS.md'}")


if __name__ == "__main__":
  app.run(main)
