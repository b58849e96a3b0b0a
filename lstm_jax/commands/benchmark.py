"""Train-step and generation speed, ours against Flax's cells and PyTorch:
``python -m lstm_jax.commands.benchmark [--quick] [--workloads=W1,W2,W3,W4] [--implementations=...] [--markdown=FILE]
[--profile]``
(the method and workloads: ``lstm_jax.benchmarks.train_step``)."""

import os

from absl import app, flags

from lstm_jax.benchmarks import profile, train_step

_QUICK = flags.DEFINE_bool("quick", False, "3 short rounds instead of 7 (about a minute of timing on 2 cores).")
_WORKLOADS = flags.DEFINE_list("workloads", ["W1", "W2", "W3"], "Workloads to run: W1, W2, W3, W4 (2x1024, batch "
                               "128: accelerators), tiny (checks the command).")
_IMPLEMENTATIONS = flags.DEFINE_list("implementations", [], "Train-step implementations (default: this backend's; "
                                     "names in lstm_jax.benchmarks.train_step.IMPLEMENTATIONS).")
_ROUNDS = flags.DEFINE_integer("rounds", 0, "Interleaved timing rounds (0: 7, or 3 with --quick).")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Also write the Markdown table to this file.")
_THREADS = flags.DEFINE_integer("threads", 0, "PyTorch threads (0: the cores this process may use).")
_PROFILE = flags.DEFINE_bool("profile", False, "Also print HLO op counts per scan step of the W1 scratch steps.")


_LOWER_ONLY = flags.DEFINE_bool("lower_only", False, "Only lower the accelerator train steps (jax.export) and report "
                                 "their custom calls; exits non-zero if one fails.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cuda", "tpu"], "Platforms for --lower_only.")


def main(argv):
  del argv
  if _LOWER_ONLY.value:
    from lstm_jax.benchmarks import lowering  # noqa: PLC0415
    lines, ok = lowering.lowering_report(_PLATFORMS.value)
    print("\n".join(lines))
    raise SystemExit(0 if ok else 1)
  unknown = sorted(set(_WORKLOADS.value) - set(train_step.WORKLOADS))
  if unknown:
    raise app.UsageError(f"Unknown workloads {unknown}; choose from {sorted(train_step.WORKLOADS)} "
                         f"(--workloads=W1,W3).")
  threads = _THREADS.value or len(os.sched_getaffinity(0))
  torch = train_step.torch_module()
  if torch is not None:
    torch.set_num_threads(threads)
  else:
    print("torch is not installed: PyTorch rows skipped (pip install lstm_jax[torch]).")
  rounds = _ROUNDS.value or (3 if _QUICK.value else 7)
  seconds = 0.2 if _QUICK.value else 0.5
  peak = train_step.matmul_peak_flops()
  rows = []
  for name in _WORKLOADS.value:
    workload = train_step.WORKLOADS[name]
    print(f"{name} ({workload.description}): compiling and timing {rounds} rounds ...", flush=True)
    try:
      runners = train_step.build_runners(workload, tuple(_IMPLEMENTATIONS.value) or None)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
    train_step.measure(runners, rounds, seconds)
    rows += train_step.summarise(workload, runners, peak)
  table = train_step.markdown_table(rows, peak)
  warnings = train_step.noisy_lines(rows)
  report = table + ("\n\n" + "\n".join(warnings) if warnings else "")
  if _PROFILE.value:
    report += "\n\n" + profile.profile_w1(rows, peak)
  print(report)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w") as f:
      f.write(report + "\n")


def run():
  app.run(main)


if __name__ == "__main__":
  run()
