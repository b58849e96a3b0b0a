"""A sweep's aggregation over seeds: mean and spread per configuration in bits per character for character runs,
the best validation of each run from its epoch records, and the validation curves plot."""

import json
import statistics

import pytest

from lstm_jax.sweeps import aggregate
from lstm_jax.train import workdir as workdir_lib


def _run(root, name, seed, weight_drop, val_bpc, wall=100.0):
  """A finished run's workdir: config.json and metrics.jsonl with one record per epoch and the final one."""
  workdir = root / name
  workdir.mkdir(parents=True)
  config = {"seed": seed, "model": {"cell": "lstm", "weight_drop": weight_drop}, "data": {"corpus": "ts"}}
  workdir_lib.write_config(workdir, config)
  records = [{"step": 10 * (e + 1), "epoch": e + 1, "train_bpc": v - 0.2, "val_bpc": v, "tokens_per_sec": 5000.0,
              "train_perplexity": 2 ** (v - 0.2), "val_perplexity": 2 ** v}
             for e, v in enumerate(val_bpc)]
  final = {**records[-1], "final": True, "wall_time_sec": wall}
  (workdir / workdir_lib.METRICS_FILE).write_text("\n".join(json.dumps(r) for r in records + [final]) + "\n")


@pytest.fixture()
def sweep(tmp_path):
  curves = {("plain", 0): [2.4, 2.2, 2.3], ("plain", 1): [2.5, 2.25, 2.35], ("reg", 0): [2.6, 2.2, 2.1],
            ("reg", 1): [2.6, 2.25, 2.15]}
  for (variant, seed), values in curves.items():
    _run(tmp_path, f"{variant}_s{seed}", seed, 0.0 if variant == "plain" else 0.3, values, wall=100.0 + seed)
  return tmp_path


def test_the_seed_table_gives_mean_and_spread_per_configuration_in_bits_per_character(sweep):
  rows, varying = aggregate.collect(sweep)
  assert set(varying) == {"seed", "model.weight_drop"}
  lines = aggregate.seed_table(rows, varying).splitlines()
  assert "val bpc" in lines[0] and "best val bpc" in lines[0] and "seeds" in lines[0]
  plain = next(line for line in lines if line.startswith("| 0.0 |"))
  want_val = f"{statistics.mean([2.3, 2.35]):.3f} +- {statistics.stdev([2.3, 2.35]):.3f}"
  want_best = f"{statistics.mean([2.2, 2.25]):.3f} +- {statistics.stdev([2.2, 2.25]):.3f}"
  assert f"| 2 | {2.1 + 0.025:.3f} +- " in plain and want_val in plain and want_best in plain
  assert "| 100 +- 1 | 5,000 +- 0 |" in plain  # wall time (s) and tokens/s in whole units


def test_aggregate_writes_both_tables_and_the_curves_when_seeds_vary(sweep):
  text = aggregate.aggregate(sweep)
  assert (sweep / "curves.png").stat().st_size > 0 and (sweep / "plot.png").exists()  # one value swept
  assert sum(line.startswith("|---") for line in text.splitlines()) == 2 and (sweep / "RESULTS.md").read_text() == text


def test_one_seed_per_configuration_gives_the_run_table_and_the_curves(sweep):
  for name in ("plain_s1", "reg_s1"):
    for file in (sweep / name).iterdir():
      file.unlink()
    (sweep / name).rmdir()
  text = aggregate.aggregate(sweep)
  assert "seeds" not in text and (sweep / "curves.png").stat().st_size > 0


def test_the_curve_reads_the_epoch_records_only(sweep):
  assert aggregate.curve(sweep / "reg_s0", "val_bpc") == ([1, 2, 3], [2.6, 2.2, 2.1])


def test_the_wall_time_of_a_resumed_run_counts_every_session(tmp_path):
  _run(tmp_path, "plain_s0", 0, 0.0, [2.4, 2.3, 2.2], wall=16.0)
  metrics = tmp_path / "plain_s0" / workdir_lib.METRICS_FILE
  records = [json.loads(line) for line in metrics.read_text().splitlines()]
  for record, elapsed in zip(records, (10.0, 20.0, 5.0)):  # killed after epoch 2, resumed from it
    record["elapsed_sec"] = elapsed
  metrics.write_text("\n".join(json.dumps(r) for r in records) + "\n")
  rows, _ = aggregate.collect(tmp_path)
  assert rows[0]["final.wall_time_sec"] == pytest.approx(20.0 + 16.0)
