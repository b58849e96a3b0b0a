"""Train-step speed against Flax and PyTorch: ``python -m lstm_jax.commands.benchmark [--quick] [--workloads=W1,W2]
[--markdown=FILE]`` (method: ``lstm_jax.benchmarks.train_step``); ``--lower_only`` lowers the accelerator steps
(``benchmarks.lowering``); ``--compile_only --targets=h100,v5e:1x1`` compiles them (``benchmarks.compile_matrix``)."""

import os

from absl import app, flags

from lstm_jax.commands import common

_QUICK = flags.DEFINE_bool("quick", False, "3 short rounds instead of 7 (about a minute of timing on 2 cores).")
_WORKLOADS = flags.DEFINE_list("workloads", ["W1", "W2", "W3"], "Workloads to run: W1, W2, W3, W4 (2x1024, batch "
                               "128: accelerators), tiny (checks the command); --compile_only: W1,W2,W4,W5.")
_IMPLEMENTATIONS = flags.DEFINE_list("implementations", [], "Train-step implementations (default: this backend's; "
                                     "names in lstm_jax.benchmarks.train_step.IMPLEMENTATIONS).")
_ROUNDS = flags.DEFINE_integer("rounds", 0, "Interleaved timing rounds (0: 7, or 3 with --quick).")
_MARKDOWN = flags.DEFINE_string("markdown", "", "Also write the Markdown table to this file.")
_THREADS = flags.DEFINE_integer("threads", 0, "PyTorch threads (0: the cores this process may use).")
_PROFILE = flags.DEFINE_bool("profile", False, "Also print HLO op counts per scan step of the W1 scratch steps.")
_LOWER_ONLY = flags.DEFINE_bool("lower_only", False, "Only lower the accelerator steps (jax.export); 1 if one fails.")
_PLATFORMS = flags.DEFINE_list("platforms", ["cuda", "tpu"], "Platforms for --lower_only.")
_COMPILE_ONLY = flags.DEFINE_bool("compile_only", False, "Only compile the train steps for --targets (aot extra).")
_TARGETS = flags.DEFINE_list("targets", ["h100", "v5e:1x1", "v6e:1x1"], "Targets for --compile_only.")
_ESTIMATES = flags.DEFINE_bool("estimates", False, "Only print the estimates table (lstm_jax.estimates; no compile).")
_CASE_TIMEOUT = flags.DEFINE_float("case_timeout", 120.0, "--compile_only: seconds before a case times out.")


def _write(report: str) -> None:
  print(report)
  if _MARKDOWN.value:
    with open(_MARKDOWN.value, "w") as f:
      f.write(report + "\n")


def main(argv):
  del argv
  if _LOWER_ONLY.value:
    from lstm_jax.benchmarks import lowering  # noqa: PLC0415
    lines, ok = lowering.lowering_report(_PLATFORMS.value)
    raise SystemExit(print("\n".join(lines)) or (0 if ok else 1))
  from lstm_jax.benchmarks import compile_matrix, profile, train_step  # noqa: PLC0415  after flag parsing
  if _ESTIMATES.value:
    return _write(compile_matrix.estimate_table())
  if _COMPILE_ONLY.value:
    workloads = _WORKLOADS.value if flags.FLAGS["workloads"].present else list(compile_matrix.DEFAULT_WORKLOADS)
    try:
      table, ok = compile_matrix.run_matrix(_TARGETS.value, workloads, _CASE_TIMEOUT.value)
    except (ValueError, RuntimeError) as e:
      raise app.UsageError(str(e)) from e
    _write(table)
    raise SystemExit(0 if ok else 1)
  if unknown := sorted(set(_WORKLOADS.value) - set(train_step.WORKLOADS)):
    raise app.UsageError(f"Unknown workloads {unknown}; choose from {sorted(train_step.WORKLOADS)} (--workloads=W1).")
  if (torch := train_step.torch_module()) is not None:
    torch.set_num_threads(_THREADS.value or len(os.sched_getaffinity(0)))
  else:
    print("torch is not installed: PyTorch rows skipped (pip install lstm_jax[torch]).")
  rounds, seconds, rows = _ROUNDS.value or (3 if _QUICK.value else 7), 0.2 if _QUICK.value else 0.5, []
  peak = train_step.matmul_peak_flops()
  for name in _WORKLOADS.value:
    workload = train_step.WORKLOADS[name]
    print(f"{name} ({workload.description}): compiling and timing {rounds} rounds ...", flush=True)
    try:
      runners = train_step.build_runners(workload, tuple(_IMPLEMENTATIONS.value) or None)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
    train_step.measure(runners, rounds, seconds)
    rows += train_step.summarise(workload, runners, peak)
  warnings = train_step.noisy_lines(rows)
  report = train_step.markdown_table(rows, peak) + ("\n\n" + "\n".join(warnings) if warnings else "")
  _write(report + ("\n\n" + profile.profile_w1(rows, peak) if _PROFILE.value else ""))


def run():
  app.run(main, flags_parser=common.parse_flags)


if __name__ == "__main__":
  run()
