"""The report command: row selection, summaries and verdicts, RESULTS.md and plots from tiny fake workdirs."""

import concurrent.futures
import datetime
import json
import math
import multiprocessing
import os
import pathlib
import re
import shutil
import types

import numpy as np
import pytest

from lstm_jax.d2l import plots, report, report_data
from lstm_jax.d2l import rows as d2l_rows
from lstm_jax.d2l import runs as d2l_runs
from lstm_jax.d2l import summary as d2l_summary


def _fake_run(workdir, curve, val=None, wall=12.0, speed=1000.0):
  """A finished run's metrics.jsonl as train.train_and_evaluate writes it: epoch records, then a final one."""
  workdir.mkdir(parents=True)
  records = []
  for epoch, ppl in curve.items():
    record = {"step": epoch * 8, "epoch": epoch, "train_loss": math.log(ppl), "train_perplexity": ppl,
              "tokens_per_sec": speed, "elapsed_sec": float(epoch)}
    if val is not None:
      record["val_perplexity"] = val[epoch]
    records.append(record)
  records.append({**records[-1], "final": 1, "wall_time_sec": wall})
  (workdir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_every_row_has_a_loadable_config_with_the_books_epochs():
  for row in d2l_rows.ROWS.values():
    config = d2l_rows.load_config(row.experiment)
    assert config.train.num_epochs == max(row.book), row.name


def test_select_rows_by_table_name_and_pattern():
  assert [r.name for r in d2l_rows.select_rows("tm2019")] == [
      n for n, r in d2l_rows.ROWS.items() if r.table == "tm2019" and not r.slow]
  assert [r.name for r in d2l_rows.select_rows("jaychou_lstm_*,tm2019_deep_lstm_library")] == [
      "jaychou_lstm_scratch", "jaychou_lstm_library", "tm2019_deep_lstm_library"]
  assert len(d2l_rows.select_rows("all")) == sum(not r.slow for r in d2l_rows.ROWS.values())
  with pytest.raises(ValueError, match="No row matches 'tm2020'"):
    d2l_rows.select_rows("tm2020")


def test_unfinished_run_is_not_read(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 8, "epoch": 1, "train_perplexity": 9.0}) + "\n")
  assert d2l_runs.read_run(tmp_path) is None
  assert d2l_runs.read_run(tmp_path / "missing") is None


def test_summary_statistics_and_verdicts(tmp_path):
  row = d2l_rows.ROWS["tm2019_lstm_scratch"]  # book @160 1.322, no spread: reproduced up to 1.1 * 1.322
  for seed, final in enumerate([1.30, 1.40, 1.50]):
    _fake_run(tmp_path / f"seed{seed}", {40: 8.0, 80: 4.0, 120: 2.0, 160: final}, wall=10.0 + seed)
  runs = [d2l_runs.read_run(tmp_path / f"seed{s}") for s in range(3)]
  summary = d2l_summary.summarise(row, runs)
  mean, std = summary["at_epochs"][160]
  assert mean == pytest.approx(1.40) and std == pytest.approx(0.1)
  assert summary["wall_time_sec"][0] == pytest.approx(11.0)
  assert summary["verdict"] == "reproduced"           # 1.40 <= 1.454
  assert d2l_summary.summarise(row, runs[2:])["verdict"] == "NOT reproduced"   # 1.50 > 1.454

  decimals_row = d2l_rows.ROWS["tm0x_lstm_scratch"]      # book 1.1, spread top 1.4, printed to one decimal
  assert d2l_summary.verdict(decimals_row, (1.44, 0.0), None) == "reproduced"  # prints as 1.4
  assert d2l_summary.verdict(decimals_row, (1.46, 0.0), None) == "NOT reproduced"
  batch_row = d2l_rows.ROWS["tm1x_gru_scratch"]         # d2l 1.x: judged on the book's per-batch means when logged
  _fake_run(tmp_path / "b0", {50: 5.6}, val={50: 6.7})
  run = d2l_runs.read_run(tmp_path / "b0")
  assert d2l_summary.summarise(batch_row, [run])["at_epochs"][50][0] == pytest.approx(5.6)   # not logged: pooled
  for record in (run["epochs"][50], run["final"]):
    record.update(train_batch_perplexity_last_half=5.9, val_batch_perplexity_mean=6.9)
  summary = d2l_summary.summarise(batch_row, [run])
  assert summary["at_epochs"][50][0] == pytest.approx(5.9) and summary["val"][0] == pytest.approx(6.9)
  assert summary["verdict"] == "NOT reproduced" and summary["measure"] == "train_batch_perplexity_last_half"
  assert d2l_summary.summarise(d2l_rows.ROWS["tm2019_lstm_scratch"], runs)["measure"] == "train_perplexity"
  val_row = d2l_rows.ROWS["tm1x_lstm_scratch"]           # train spread top 6.90, val spread top 7.51
  assert d2l_summary.verdict(val_row, (6.5, 0.0), (7.4, 0.0)) == "reproduced"
  assert d2l_summary.verdict(val_row, (6.5, 0.0), (7.6, 0.0)) == "NOT reproduced"
  assert d2l_summary.verdict(val_row, (6.5, 0.0), None) == "NOT reproduced"


def test_report_files_from_fake_workdirs(tmp_path):
  rows = d2l_rows.select_rows("tm2019_lstm_*,tm1x_gru_scratch")
  runs = {}
  for row in rows:
    curve = {e: 10.0 / e ** 0.3 for e in range(1, max(row.book) + 1)}
    val = {e: v + 1.0 for e, v in curve.items()} if row.book_val else None
    workdir = d2l_runs.workdir_of(tmp_path / "runs", row, 0)
    _fake_run(workdir, curve, val)
    runs[row.name] = [d2l_runs.read_run(workdir)]
  library = [{"cell": "lstm", "implementation": "flax", "steps": 3, "scratch_losses": [3.7, 3.6, 3.5],
              "library_losses": [3.7, 3.6, 3.5], "max_rel_diff": 0.0, "scratch_tokens_per_sec": 10.0,
              "library_tokens_per_sec": 5.0}]
  out = tmp_path / "out"
  summaries = report.write_report(rows, runs, out, {"tm2019_lstm_scratch": ["time traveller abc"]}, library)
  text = (out / "RESULTS.md").read_text()
  for row in rows:
    assert row.name in text
  assert f"{d2l_rows.ROWS['tm2019_lstm_scratch'].book[160]:.3f}" in text   # the book's number, 1.322
  assert f"{10.0 / 160 ** 0.3:.3f}" in text                               # ours at the book's epoch
  assert "time traveller abc" in text and "| lstm | flax | 3 |" in text
  assert f"| tm2019_lstm_scratch | 160 | 1.322 | {10.0 / 160 ** 0.3:.3f} ± 0.000 | 1 |" in text  # summary line
  assert summaries["tm1x_gru_scratch"]["val"][0] == pytest.approx(10.0 / 50 ** 0.3 + 1.0, rel=1e-5)  # 6 digits kept
  for table in ("tm2019", "tm1x"):
    png = out / f"{table}.png"
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 150_000
  assert not (out / "jaychou.png").exists()
  assert json.loads((out / "summary.json").read_text())["tm2019_lstm_library"]["seeds"] == 1


def test_compute_time_table_sums_seeds_per_table_and_kind(tmp_path):
  walls = {"tm2019_lstm_scratch": [60.0, 120.0], "tm2019_lstm_library": [300.0], "tm1x_gru_scratch": [30.0],
           "tm2019_deep_lstm_library": [600.0]}
  rows = [d2l_rows.ROWS[name] for name in walls]
  runs = {}
  for name, seconds in walls.items():
    for seed, wall in enumerate(seconds):
      _fake_run(tmp_path / name / f"seed{seed}", {1: 9.0}, wall=wall)
      runs.setdefault(name, []).append(d2l_runs.read_run(tmp_path / name / f"seed{seed}"))
  summaries = {name: d2l_summary.summarise(d2l_rows.ROWS[name], row_runs) for name, row_runs in runs.items()}
  lines = d2l_summary.compute_time_table(rows, summaries)
  assert "| tm2019 | 3.0 | 5.0 | 8.0 | 4.0 min |" in lines   # 60 + 120 s scratch, 300 s library
  assert "| tm1x | 0.5 | 0.0 | 0.5 | 0.2 min |" in lines
  assert "| tm2019_deep_lstm_library | 0.0 | 10.0 | 10.0 | 5.0 min |" in lines  # a slow row: its own line
  assert lines[-1] == "| all | 3.5 | 15.0 | 18.5 | 9.2 min |"
  report.write_report(rows, runs, tmp_path / "out")
  assert "| all | 3.5 | 15.0 | 18.5 | 9.2 min |" in (tmp_path / "out" / "RESULTS.md").read_text()


def test_only_missing_runs_are_trained(tmp_path, monkeypatch):
  rows = d2l_rows.select_rows("tm2019_gru_*")
  _fake_run(d2l_runs.workdir_of(tmp_path, rows[0], 0), {160: 1.2})
  trained = []
  monkeypatch.setattr(d2l_runs, "train_row", lambda row, seed, workdir: trained.append((row.name, seed, workdir)))
  d2l_runs.train_missing(rows, seeds=2, runs_dir=tmp_path, jobs=1)
  assert [(name, seed) for name, seed, _ in trained] == [
      (rows[0].name, 1), (rows[1].name, 0), (rows[1].name, 1)]
  assert trained[0][2] == tmp_path / rows[0].name / "seed1"


def test_parallel_runs_start_longest_first(tmp_path, monkeypatch):
  from lstm_jax.data import corpora
  monkeypatch.setattr(corpora, "load", lambda data_config: types.SimpleNamespace(train_ids=np.zeros(1000, np.int32)))
  rows = d2l_rows.select_rows("tm0x")
  in_row_order = d2l_runs.pending_tasks(rows, 2, tmp_path)
  assert [(name, seed) for name, seed, _ in in_row_order[:2]] == [(rows[0].name, 0), (rows[0].name, 1)]
  longest_first = d2l_runs.pending_tasks(rows, 2, tmp_path, longest_first=True)
  assert sorted(longest_first) == sorted(in_row_order)
  names = [name for name, _, _ in longest_first]
  assert names[:2] == ["tm0x_deep_lstm_library"] * 2 and names[-2:] == ["tm0x_rnn_library"] * 2
  config = {name: d2l_rows.load_config(d2l_rows.ROWS[name].experiment) for name in ("tm0x_deep_lstm_library",
                                                                                "tm0x_lstm_scratch")}
  deep, single = (d2l_runs.run_cost(c.model, 1000, c.train.num_epochs) for c in config.values())
  assert deep == pytest.approx(3 * single)  # layer 2 adds an input matmul as large as the recurrent ones


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_worker_initializer_binds_the_worker_to_one_core():
  core = sorted(os.sched_getaffinity(0))[-1]
  context = multiprocessing.get_context("spawn")
  cores = context.Queue()
  cores.put(core)
  with concurrent.futures.ProcessPoolExecutor(1, mp_context=context, initializer=d2l_runs._pin_to_core,
                                              initargs=(cores,)) as pool:
    assert pool.submit(os.sched_getaffinity, 0).result() == {core}


def test_plots_draw_the_measure_the_table_judges(tmp_path, monkeypatch):
  import matplotlib.axes
  drawn = []
  original = matplotlib.axes.Axes.plot
  monkeypatch.setattr(matplotlib.axes.Axes, "plot", lambda ax, x, y, *a, **k: (drawn.append(list(y)),
                                                                                original(ax, x, y, *a, **k))[1])
  row = d2l_rows.ROWS["tm1x_gru_scratch"]   # d2l 1.x: judged on means of per-batch perplexities
  records = {e: {"train_perplexity": 5.0, "val_perplexity": 7.0, "train_batch_perplexity_last_half": 5.5,
                 "val_batch_perplexity_mean": 7.5} for e in (25, 50)}
  run = {"epochs": records, "final": records[50]}
  assert d2l_summary.measure_keys(row, [run]) == ("train_batch_perplexity_last_half", "val_batch_perplexity_mean")
  plots.plot_table("tm1x", [row], {row.name: [run]}, tmp_path / "tm1x.png")
  assert drawn[:2] == [[5.5, 5.5], [7.5, 7.5]]


def test_wall_time_of_a_resumed_run_counts_every_session(tmp_path):
  records = [{"step": 8 * e, "epoch": e, "train_perplexity": 2.0, "elapsed_sec": t}
             for e, t in ((1, 10.0), (2, 20.0), (3, 5.0), (4, 15.0))]  # killed after epoch 2, resumed from it
  records.append({**records[-1], "final": 1, "wall_time_sec": 16.0})
  tmp_path.joinpath("metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
  run = d2l_runs.read_run(tmp_path)
  assert run["wall_time_sec"] == pytest.approx(20.0 + 16.0)
  assert d2l_summary.summarise(d2l_rows.ROWS["tm2019_lstm_scratch"], [run])["wall_time_sec"][0] == pytest.approx(36.0)


def test_explained_misses_are_read_from_findings_and_written_under_their_table(tmp_path):
  row = d2l_rows.ROWS["tm2019_lstm_scratch"]
  _fake_run(tmp_path / "seed0", {40: 8.0, 80: 4.0, 120: 2.0, 160: 3.0})
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "findings.md").write_text(
      "# Findings\n\n## miss: tm2019_lstm_scratch\n\nbecause of the\nexperiment in X.\n\n## note: tm0x_gru_scratch\n\nnoted.\n")
  assert report.read_findings(tmp_path / "out" / "findings.md") == (
      {"tm2019_lstm_scratch": "because of the experiment in X."}, {"tm0x_gru_scratch": "noted."})
  report.write_report([row], {row.name: [d2l_runs.read_run(tmp_path / "seed0")]}, tmp_path / "out")
  assert "- **tm2019_lstm_scratch**: because of the experiment in X." in (tmp_path / "out" / "RESULTS.md").read_text()


def test_runs_made_with_another_config_are_refused(tmp_path):
  row = d2l_rows.ROWS["tm0x_rnn_scratch_random"]
  workdir = d2l_runs.workdir_of(tmp_path, row, 1)
  _fake_run(workdir, {500: 1.5})
  config = d2l_rows.load_config(row.experiment)
  config.seed = 1
  (workdir / "config.json").write_text(json.dumps({"config": config.to_dict()}))
  d2l_runs.check_runs_match([row], seeds=2, runs_dir=tmp_path)   # same recipe (seed 0 has no run yet): accepted
  older = config.to_dict()
  del older["data"]["val_fraction"]  # written before the field existed: reads as its default, 0.0
  (workdir / "config.json").write_text(json.dumps({"config": older}))
  d2l_runs.check_runs_match([row], seeds=2, runs_dir=tmp_path)
  del older["data"]["carry_state"]  # default None: the state was carried, not this row's recipe
  (workdir / "config.json").write_text(json.dumps({"config": older}))
  with pytest.raises(ValueError, match="seed1: data.carry_state: run None, now False"):
    d2l_runs.check_runs_match([row], seeds=2, runs_dir=tmp_path)
  config.data.sampling = "random"
  (workdir / "config.json").write_text(json.dumps({"config": config.to_dict()}))
  with pytest.raises(ValueError, match="seed1: data.sampling: run 'random', now 'sequential'") as error:
    d2l_runs.check_runs_match([row], seeds=2, runs_dir=tmp_path)
  assert "Move them aside" in str(error.value)


COMMITTED = pathlib.Path(__file__).resolve().parents[1] / "reports" / "d2l"


def test_committed_report_redraws_from_its_data_alone(tmp_path):
  """``report --notrain`` with no run directory: RESULTS.md, summary.json and the data come out byte for byte as
  committed, and every plot RESULTS.md shows is drawn again."""
  for name in (report_data.DATA_FILE, report.FINDINGS_FILE):
    shutil.copy(COMMITTED / name, tmp_path / name)
  report.write_report(d2l_rows.select_rows("tm2019"), {}, tmp_path, library=[{"ignored": "in a redraw"}],
                      command="ignored")
  for name in ("RESULTS.md", "summary.json", report_data.DATA_FILE):
    assert (tmp_path / name).read_bytes() == (COMMITTED / name).read_bytes(), name
  shown = re.findall(r"^!\[\w+\]\((\w+\.png)\)$", (COMMITTED / "RESULTS.md").read_text(), re.M)
  assert shown and sorted(shown) == sorted(p.name for p in tmp_path.glob("*.png"))
  for name in shown:
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG" and (COMMITTED / name).exists()


def test_rows_without_runs_come_from_the_committed_data(tmp_path):
  rows = d2l_rows.select_rows("tm2019_gru_*")
  first = {row.name: 2.0 + i for i, row in enumerate(rows)}
  runs = {}
  for row in rows:
    _fake_run(tmp_path / "a" / row.name, {40: 9.0, 80: 4.0, 120: 3.0, 160: first[row.name]}, wall=30.0)
    runs[row.name] = [d2l_runs.read_run(tmp_path / "a" / row.name)]
  out = tmp_path / "out"
  report.write_report(rows, runs, out, {rows[1].name: ["sample b"]}, command="first", date="2026-01-01")
  _fake_run(tmp_path / "b", {40: 8.0, 160: 1.1})
  rerun = {rows[0].name: [d2l_runs.read_run(tmp_path / "b")]}
  summaries = report.write_report(rows, rerun, out, command="second", date="2026-02-02")
  assert summaries[rows[0].name]["at_epochs"][160][0] == pytest.approx(1.1)       # rerun
  assert summaries[rows[1].name]["at_epochs"][160][0] == pytest.approx(first[rows[1].name])   # committed
  text = (out / "RESULTS.md").read_text()
  assert "Generated by `second`" in text and "sample b" in text
  assert "Runs of 2026-01-01 to 2026-02-02 (each row's day in the summary)." in text
  summary_lines = {}  # the Summary table comes first
  for line in text.splitlines():
    if line.startswith("| tm2019_gru"):
      summary_lines.setdefault(line.split(" | ")[0][2:], line)
  assert summary_lines[rows[1].name].endswith("| 2026-01-01 |") and summary_lines[rows[0].name].endswith("| 2026-02-02 |")
  data = report_data.read(out)
  assert data["rows"][rows[1].name]["date"] == "2026-01-01" and data["rows"][rows[0].name]["date"] == "2026-02-02"
  assert json.loads((out / "summary.json").read_text())[rows[1].name]["runs_date"] == "2026-01-01"


def test_a_row_is_dated_by_the_day_its_last_run_finished(tmp_path):
  row = d2l_rows.ROWS["tm2019_gru_scratch"]
  finished = []
  for seed, day in ((0, "2026-03-04T23:59:00"), (1, "2026-03-05T00:01:00")):
    _fake_run(tmp_path / f"seed{seed}", {40: 9.0, 160: 1.2})
    stamp = datetime.datetime.fromisoformat(day).replace(tzinfo=datetime.timezone.utc).timestamp()
    os.utime(tmp_path / f"seed{seed}" / "metrics.jsonl", (stamp, stamp))
    finished.append(d2l_runs.read_run(tmp_path / f"seed{seed}"))
  assert [run["date"] for run in finished] == ["2026-03-04", "2026-03-05"]
  report.write_report([row], {row.name: finished}, tmp_path / "out")
  assert report_data.read(tmp_path / "out")["rows"][row.name]["date"] == "2026-03-05"
  text = (tmp_path / "out" / "RESULTS.md").read_text()
  assert "Runs of 2026-03-05 (each row's day in the summary)." in text and "| 2026-03-05 |" in text


def _committed_kept_row(out, kept, mean, verdict):
  """``out`` holding committed data with ``kept`` as a numbers-only row of 2026-01-01 (3 seeds of 3600 s, ``mean``
  at every book epoch)."""
  summary = {"seeds": 3, "at_epochs": {str(e): [mean, 0.01] for e in kept.book}, "val": None,
             "measure": "train_perplexity", "wall_time_sec": [3600.0, 60.0], "tokens_per_sec": 9000.0,
             "verdict": verdict}
  out.mkdir()
  report_data.write(out, {"command": "c", "library": None, "rows": {
      kept.name: {"date": "2026-01-01", "summary": summary, "samples": ["text"], "kept": "too slow."}}})
  return out


def test_a_row_kept_as_numbers_only_is_reported_without_a_curve(tmp_path, monkeypatch):
  kept, drawn = d2l_rows.ROWS["tm2019_deep_lstm_library"], d2l_rows.ROWS["tm2019_lstm_scratch"]
  _fake_run(tmp_path / "run", {40: 8.0, 80: 4.0, 120: 2.0, 160: 1.3})
  out = _committed_kept_row(tmp_path / "out", kept, 1.5, "NOT reproduced")
  plotted = []
  monkeypatch.setattr(report, "plot_table", lambda table, rows, runs, path, labels: plotted.append(sorted(runs)))
  summaries = report.write_report([drawn, kept], {drawn.name: [d2l_runs.read_run(tmp_path / "run")]}, out)
  assert summaries[kept.name]["at_epochs"][3000] == [1.5, 0.01] and summaries[kept.name]["verdict"] == "NOT reproduced"
  assert plotted == [[drawn.name]]
  text = (out / "RESULTS.md").read_text()
  assert f"- **{kept.name}** (kept): the numbers of the runs of 2026-01-01, not rerun for this report: too slow." in text
  assert "Its curve is not drawn" in text
  assert f"| {kept.name} | 0.0 | 180.0 | 180.0 | 90.0 min |" in text   # 3 seeds x 3600 s, with its old times


def test_a_kept_row_rerun_with_fewer_seeds_keeps_its_numbers_and_draws_their_curve(tmp_path, monkeypatch):
  """The 3000-epoch row kept from three seeds, one seed rerun: the tables keep the three seeds' numbers, the plot
  draws the rerun (legend says how many seeds), the note gives both finals; a redraw gives the same bytes."""
  kept = d2l_rows.ROWS["tm2019_deep_lstm_library"]
  _fake_run(tmp_path / "run", {1000: 3.0, 2000: 1.2, 3000: 1.07}, wall=2400.0)
  out = _committed_kept_row(tmp_path / "out", kept, 1.045, "reproduced")
  plotted = []
  monkeypatch.setattr(report, "plot_table",
                      lambda table, rows, runs, path, labels: plotted.append((runs[kept.name], labels)))
  summaries = report.write_report([kept], {kept.name: [d2l_runs.read_run(tmp_path / "run")]}, out, date="2026-02-02")
  assert summaries[kept.name]["at_epochs"][3000] == [1.045, 0.01] and summaries[kept.name]["seeds"] == 3
  [(curve, labels)] = plotted
  assert sorted(curve[0]["epochs"]) == [1000, 2000, 3000] and labels == {kept.name: f"{kept.name} (1 seed)"}
  entry = report_data.read(out)["rows"][kept.name]
  assert entry["date"] == "2026-01-01" and entry["curve"]["date"] == "2026-02-02" and entry["samples"] == ["text"]
  text = (out / "RESULTS.md").read_text()
  assert ("Its curve is a rerun of 1 seed on 2026-02-02 with this report's code: final perplexity 1.070 at epoch "
          "3000 (the kept numbers: 1.045).") in text
  assert f"| {kept.name} | 3000 | 1.293 | 1.045 ± 0.010 | 3 | reproduced | 2026-01-01 |" in text
  before = {name: (out / name).read_bytes() for name in ("RESULTS.md", "summary.json", report_data.DATA_FILE)}
  plotted.clear()
  report.write_report([kept], {}, out)
  assert {name: (out / name).read_bytes() for name in before} == before and len(plotted) == 1


def test_compact_runs_keep_what_the_summary_and_plots_read(tmp_path):
  row = d2l_rows.ROWS["tm1x_gru_scratch"]
  runs = []
  for seed in range(2):
    _fake_run(tmp_path / f"s{seed}", {25: 7.123456789 + seed, 50: 5.987654321 + seed}, val={25: 8.5, 50: 6.5 + seed},
              wall=12.345, speed=1234.567)
    runs.append(d2l_runs.read_run(tmp_path / f"s{seed}"))
  measure, compact = report_data.compact_runs(row, runs)
  expanded = report_data.expand_runs({"measure": measure, "runs": json.loads(json.dumps(compact))})
  original, again = d2l_summary.summarise(row, runs), d2l_summary.summarise(row, expanded)
  assert again["at_epochs"][50] == pytest.approx(original["at_epochs"][50], rel=1e-5)   # 6 significant digits
  assert again["val"] == pytest.approx(original["val"], rel=1e-5) and again["verdict"] == original["verdict"]
  assert again["wall_time_sec"][0] == pytest.approx(12.3) and again["tokens_per_sec"] == 1235.0
  assert sorted(expanded[0]["epochs"]) == [25, 50] and set(expanded[0]["epochs"][25]) == set(measure)
