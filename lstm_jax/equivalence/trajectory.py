"""How far the project's training trajectories separate from independent references, step by step.

For each optimizer recipe (Adam 2e-3 with clip 1, the char-RNN recipe; SGD 100 with clip 0.01, the book's) the same
initial weights (``create_train_state``'s for seed 0) are trained for ``steps`` minibatches of a real corpus cut into
short epochs (several epoch boundaries, the state zeroed at each and carried in between) by

- the project's loop (``project.train_recorded``), once per recurrence;
- PyTorch ``nn.LSTM`` in float32 and in float64 (``torch_reference``; the float64 run stands for exact arithmetic);
- the plain ``jax.grad`` reference, and the same with its recurrent matmul summed in two halves (``reference``).

Every pair is compared after step ``t`` by the largest relative parameter difference (over parameter arrays:
``max |a - b| / max |b|``) and the largest loss difference over steps ``1..t`` (nats). The two float32 references that
differ only in summation order are the baseline: float32 rounding alone separates trajectories that fast.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import time
from typing import Any, Sequence

import jax
import numpy as np

from lstm_jax import config as config_lib
from lstm_jax.data import pipeline
from lstm_jax.equivalence import project, reference

REPORT_STEPS = (1, 10, 100)
RECIPES = {"adam": ("adam", 0.002, 1.0), "sgd": ("sgd", 100.0, 0.01)}  # name: (optimizer, learning rate, clip)


@dataclasses.dataclass(frozen=True)
class Settings:
  corpus: str = "timemachine"
  max_tokens: int = 20000
  hidden_size: int = 64
  batch_size: int = 16
  num_steps: int = 32
  steps: int = 300
  carry_state: bool = True
  seed: int = 0


def project_config(settings: Settings, optimizer: str, recurrence: str) -> Any:
  c = config_lib.default_config()
  c.seed = settings.seed
  c.data.corpus, c.data.edition, c.data.max_tokens = settings.corpus, "raw", settings.max_tokens
  c.data.batch_size, c.data.num_steps = settings.batch_size, settings.num_steps
  c.data.carry_state = settings.carry_state
  c.model.hidden_size, c.model.init_scheme, c.model.recurrence = settings.hidden_size, "pytorch", recurrence
  c.optimizer.name, c.optimizer.learning_rate, c.optimizer.clip_norm = RECIPES[optimizer]
  c.train.num_epochs = 10 ** 6  # train_recorded stops after settings.steps
  return c


def snapshot_steps(steps: int) -> list[int]:
  """About 8 steps a decade from 1 to ``steps``, with ``REPORT_STEPS`` and ``steps``."""
  grid = {int(round(10 ** (k / 8))) for k in range(int(8 * math.log10(max(steps, 1))) + 1)}
  return sorted(s for s in grid | set(REPORT_STEPS) | {steps} if s <= steps)


def relative_difference(a, b) -> float:
  """Over parameter arrays: ``max |a - b| / max |b|``."""
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))) / np.max(np.abs(y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def divergence(a: reference.Trajectory, b: reference.Trajectory) -> dict[int, tuple[float, float]]:
  """Per snapshot step ``t``: ``(relative parameter difference, max |loss difference| over steps 1..t)``."""
  losses = np.abs(np.subtract(a.losses, b.losses))
  return {t: (relative_difference(a.snapshots[t], b.snapshots[t]), float(np.max(losses[:t])))
          for t in sorted(set(a.snapshots) & set(b.snapshots))}


def runs_for(settings: Settings, optimizer: str, recurrences: Sequence[str]) -> dict[str, reference.Trajectory]:
  """Every run of one recipe, by label."""
  steps, wanted = settings.steps, snapshot_steps(settings.steps)
  runs, initial, corpus = {}, None, None
  for recurrence in recurrences:
    initial, runs[f"project {recurrence}"], run = project.train_recorded(
        project_config(settings, optimizer, recurrence), max_steps=steps, snapshot_steps=wanted)
    corpus = run.corpus
  config = project_config(settings, optimizer, recurrences[0])
  recipe = reference.Recipe(*RECIPES[optimizer], carry_state=pipeline.carries_state(config.data))

  def fresh_epochs():  # the references' own cut of the same tokens, epoch after epoch
    return (reference.sequential_minibatches(corpus.train_ids, settings.batch_size, settings.num_steps,
                                             reference.epoch_offset(settings.seed, epoch, settings.num_steps))
            for epoch in range(1, 10 ** 6))

  runs["JAX reference"] = reference.train(initial, fresh_epochs(), recipe, max_steps=steps, snapshot_steps=wanted)
  runs["JAX reference, split sum"] = reference.train(initial, fresh_epochs(), recipe, max_steps=steps,
                                                     snapshot_steps=wanted, split_contraction=True)
  try:
    import torch  # noqa: PLC0415
    from lstm_jax.equivalence import torch_reference  # noqa: PLC0415
  except ImportError:
    return runs
  for name, dtype in (("PyTorch", torch.float32), ("PyTorch float64", torch.float64)):
    runs[name] = torch_reference.train(initial, fresh_epochs(), recipe, max_steps=steps, snapshot_steps=wanted,
                                       dtype=dtype)
  return runs


def pairs(runs: dict[str, reference.Trajectory]) -> list[tuple[str, str]]:
  """The comparisons: each run against PyTorch float32 (else the JAX reference) and against float64, then the
  summation-order baseline."""
  base = "PyTorch" if "PyTorch" in runs else "JAX reference"
  out = [(name, base) for name in runs if name.startswith("project")]
  if base == "PyTorch":
    out.append(("JAX reference", "PyTorch"))
    out += [(name, "PyTorch float64") for name in runs if name != "PyTorch float64" and "split" not in name]
  out.append(("JAX reference, split sum", "JAX reference"))
  return out


def table(settings: Settings, results: dict[str, dict[tuple[str, str], dict[int, tuple[float, float]]]]) -> str:
  shown = [t for t in (*REPORT_STEPS, settings.steps) if t <= settings.steps]
  shown = list(dict.fromkeys(shown))
  head = ("| recipe | run | against | " + " | ".join(f"param @{t}" for t in shown) + " | "
          + " | ".join(f"loss @{t}" for t in shown) + " |")
  lines = [head, "| " + " | ".join(["---"] * (3 + 2 * len(shown))) + " |"]
  for optimizer, comparisons in results.items():
    for (a, b), by_step in comparisons.items():
      label = f"**{a}** (baseline)" if "split" in a else a
      lines.append(f"| {optimizer} | {label} | {b} | " + " | ".join(f"{by_step[t][0]:.1e}" for t in shown) + " | "
                   + " | ".join(f"{by_step[t][1]:.1e}" for t in shown) + " |")
  return "\n".join(lines)


def plot(results, path: pathlib.Path) -> None:
  from lstm_jax.train import plots  # noqa: PLC0415
  fig, axes = plots.figure(12.0, 6.4, ncols=len(results), squeeze=False)
  for axis, (optimizer, comparisons) in zip(axes[0], results.items()):
    for (a, b), by_step in comparisons.items():
      steps = sorted(by_step)
      values = [max(by_step[t][0], 1e-9) for t in steps]
      baseline = "split" in a
      axis.plot(steps, values, "k--" if baseline else "-", lw=2.2 if baseline else 1.2,
                label=f"{a} vs {b}" + (" (summation-order baseline)" if baseline else ""))
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("training step")
    axis.set_ylabel("max relative parameter difference")
    name, learning_rate, clip_norm = RECIPES[optimizer]
    axis.set_title(f"{name}, learning rate {learning_rate:g}, global-norm clip {clip_norm:g}")
    axis.grid(True, which="both", alpha=0.3)
  fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
  fig.tight_layout(rect=(0, 0.22, 1, 1))
  with open(path, "wb") as f:
    fig.savefig(f, format="png", dpi=100)
  plots.plt.close(fig)


def report(settings: Settings, optimizers: Sequence[str], recurrences: Sequence[str], out_dir: str) -> str:
  """Runs every recipe, writes ``trajectory.md`` and ``trajectory.png`` under ``out_dir``; returns the Markdown."""
  start, results = time.perf_counter(), {}
  for optimizer in optimizers:
    runs = runs_for(settings, optimizer, recurrences)
    results[optimizer] = {(a, b): divergence(runs[a], runs[b]) for a, b in pairs(runs)}
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  plot(results, out / "trajectory.png")
  text = (f"Settings: {dataclasses.asdict(settings)}, jax {jax.__version__}; "
          f"{time.perf_counter() - start:.0f} s.\n\n" + table(settings, results) + "\n")
  (out / "trajectory.md").write_text(text)
  return text
