"""Faults around a run's files (issue 29): "best" is the lowest perplexity and survives resumes and pruning; a
restart from scratch, a damaged or missing log and a misnumbered or damaged step directory are repaired or named
in one line; a no-op rerun keeps the final wall time."""

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest

from test_checkpoint import _tiny_config

from lstm_jax.d2l import runs as d2l_runs
from lstm_jax.sweeps import aggregate
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import loop as train
from lstm_jax.train import workdir as workdir_lib


def _epochs(workdir):
  return [r["epoch"] for r in workdir_lib.read_metrics(workdir) if "epoch" in r and not r.get("final")]


def _val_by_step(workdir):
  return {r["step"]: r["val_perplexity"] for r in workdir_lib.read_metrics(workdir) if "val_perplexity" in r
          and not r.get("final")}


def _same_params(workdir, step_a, step_b):
  a, b = (checkpoint_lib.load_params(workdir, step)[1] for step in (step_a, step_b))
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_best_is_the_lowest_validation_perplexity_and_survives_resume_and_pruning(tmp_path):
  """lr 30 on the tiny corpus: validation perplexity is lowest at epoch 2 (step 48) of 6; one checkpoint kept."""
  config = _tiny_config(tmp_path, num_epochs=4, keep_checkpoints=1, eval_every_epochs=1, quiet=True)
  config.optimizer.learning_rate = 30.0
  work = tmp_path / "work"
  train.train_and_evaluate(config, str(work))
  val = _val_by_step(work)
  best = min(val, key=val.get)
  assert best < max(val)  # an early best, else the test proves nothing
  config.train.num_epochs = 6
  train.train_and_evaluate(config, str(work))  # a resume: a new manager reads "best" back from disk
  val = _val_by_step(work)
  assert min(val, key=val.get) == best
  saved = checkpoint_lib.Checkpointer(work, read_only=True)
  assert saved.all_steps() == [best, max(val)] and saved.best_step() == best
  saved.close()
  assert _same_params(work, "best", best)


def test_best_ranks_validation_then_training_perplexity_and_leaves_out_non_finite_ones():
  assert checkpoint_lib.rank({"train_perplexity": 3.0}) > checkpoint_lib.rank({"train_perplexity": 4.0})
  assert checkpoint_lib.rank({"val_perplexity": 9.0}) > checkpoint_lib.rank({"train_perplexity": 1.0})
  assert checkpoint_lib.rank({}) < checkpoint_lib.rank({"train_perplexity": 1e9})
  assert checkpoint_lib.metrics_of({"train_perplexity": 5.0, "val_perplexity": float("nan")}) == {
      "train_perplexity": 5.0}


def test_a_restart_from_scratch_sets_the_earlier_attempts_log_aside(tmp_path, capsys):
  work = tmp_path / "work"
  work.mkdir()
  (work / "metrics.jsonl").write_text("".join(json.dumps({"step": 24 * e, "epoch": e}) + "\n" for e in (1, 2, 3)))
  train.train_and_evaluate(_tiny_config(tmp_path, quiet=True), str(work))
  assert _epochs(work) == [1, 2]
  assert "the earlier attempt's log moved to" in capsys.readouterr().out
  assert [r["epoch"] for r in workdir_lib.read_metrics(next(work.glob("previous-*")))] == [1, 2, 3]


@pytest.mark.parametrize("damage", ["garbled", "no_step", "cut", "deleted"])
def test_a_damaged_log_is_rebuilt_from_the_checkpoint(tmp_path, capsys, damage):
  config = _tiny_config(tmp_path, num_epochs=2, quiet=True)
  work = tmp_path / "work"
  train.train_and_evaluate(config, str(work))
  log = work / "metrics.jsonl"
  lines = log.read_text().splitlines(keepends=True)
  if damage == "garbled":
    log.write_text(lines[0] + '{"step": 48, "epo\x00\n' + "".join(lines[2:]))
  elif damage == "no_step":
    log.write_text(lines[0] + '{"epoch": 2}\n' + "".join(lines[2:]))
  elif damage == "cut":
    log.write_text(lines[0] + lines[1][:20])
  else:
    log.unlink()
  config.train.num_epochs = 3
  train.train_and_evaluate(config, str(work))
  out = capsys.readouterr().out
  assert "Repaired the log:" in out and "rebuilt it from checkpoint step 48" in out
  assert _epochs(work) == [1, 2, 3]


def test_a_damaged_log_without_a_copy_is_refused_naming_file_and_line(tmp_path):
  (tmp_path / "metrics.jsonl").write_text('{"step": 8, "epoch": 1}\n{"step": 16, "epo\n')
  with pytest.raises(workdir_lib.MetricsLogError, match=r"metrics.jsonl line 2 is not a JSON record"):
    workdir_lib.truncate_metrics(tmp_path, 16)
  (tmp_path / "metrics.jsonl").write_text('{"step": 8, "epoch": 1}\n{"epoch": 2}\n')
  with pytest.raises(workdir_lib.MetricsLogError, match=r"metrics.jsonl line 2 .*no integer \"step\""):
    workdir_lib.read_metrics(tmp_path)


@pytest.mark.parametrize("log", ["deleted", "emptied"])
def test_a_finished_run_missing_its_log_reruns_as_a_no_op(tmp_path, capsys, log):
  config = _tiny_config(tmp_path, num_epochs=1, quiet=True)
  work = tmp_path / "work"
  first = train.train_and_evaluate(config, str(work))
  if log == "deleted":
    (work / "metrics.jsonl").unlink()
  else:
    (work / "metrics.jsonl").write_text("")
  summary = train.train_and_evaluate(config, str(work))
  assert "nothing to do" in capsys.readouterr().out
  assert summary["train_perplexity"] == first["train_perplexity"]
  assert workdir_lib.is_finished(work) and _epochs(work) == [1]


def test_a_no_op_rerun_keeps_the_final_wall_time(tmp_path):
  config = _tiny_config(tmp_path, num_epochs=1, quiet=True)
  work = tmp_path / "work"
  train.train_and_evaluate(config, str(work))
  final = workdir_lib.final_record(work)
  assert final["wall_time_sec"] > 0
  summary = train.train_and_evaluate(config, str(work))
  assert summary["wall_time_sec"] == final["wall_time_sec"]
  assert workdir_lib.read_metrics(work)[-1] == final
  assert sum(1 for r in workdir_lib.read_metrics(work) if r.get("final")) == 1


def test_a_misnumbered_step_directory_is_set_aside_with_one_line(tmp_path, capsys):
  config = _tiny_config(tmp_path, num_epochs=1, quiet=True)
  work = tmp_path / "work"
  train.train_and_evaluate(config, str(work))
  shutil.copytree(work / "checkpoints" / "24", work / "checkpoints" / "100")
  config.train.num_epochs = 2
  train.train_and_evaluate(config, str(work))
  out = capsys.readouterr().out
  assert "checkpoints/100 holds step 24 (a copied or renamed step directory)" in out
  assert "Resumed from checkpoint step 24" in out and _epochs(work) == [1, 2]
  assert list(work.glob("previous-*/checkpoints/100"))


def _flipped(work, step, fraction):
  """A copy of ``work`` with one bit flipped at ``fraction`` of each data file of the step's ``state``: the array
  chunks (OCDBT's per-process data files, some of which may no longer be referenced), not the database's own
  metadata, which a flip makes unreadable."""
  copy = work.parent / f"flipped-{fraction}"
  shutil.copytree(work, copy)
  state = copy / "checkpoints" / str(step) / "state"
  files = [p for p in state.glob("ocdbt.process_*/d/*") if p.is_file()] or \
      [max((p for p in state.rglob("d/*") if p.is_file()), key=lambda p: p.stat().st_size)]
  for data in files:
    raw = bytearray(data.read_bytes())
    raw[int(len(raw) * fraction)] ^= 0x01
    data.write_bytes(bytes(raw))
  return copy


def test_a_flipped_byte_never_loads_other_values_and_names_the_step_and_step_n(tmp_path):
  """Bits flipped in the checkpoint's data: a load either gives exactly the saved values (an unused byte) or is
  refused naming the step, by the checksum at least once (tensorstore's reader alone let these through)."""
  config = _tiny_config(tmp_path, num_epochs=1, quiet=True)
  work = tmp_path / "work"
  train.train_and_evaluate(config, str(work))
  saved = jax.tree.leaves(checkpoint_lib.load_params(work)[1])
  refusals = []
  for fraction in (0.1, 0.2, 0.3, 0.5):
    try:
      params = jax.tree.leaves(checkpoint_lib.load_params(_flipped(work, 24, fraction))[1])
    except checkpoint_lib.CheckpointError as e:
      refusals.append(str(e))
      continue
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(saved, params))
  assert any("fails its checksum" in line for line in refusals)
  assert all(line.startswith("Checkpoint step 24 ") and "--step N" in line for line in refusals)


def test_aggregate_and_the_report_skip_a_damaged_run_in_one_line(tmp_path, capsys):
  good, bad = tmp_path / "a", tmp_path / "b"
  for run in (good, bad):
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"seed": 0 if run == good else 1}}))
  (good / "metrics.jsonl").write_text(json.dumps({"step": 8, "final": 1, "train_perplexity": 2.0}) + "\n")
  (bad / "metrics.jsonl").write_text('{"step": 8, "final": 1, "train_perp\n')
  rows, _ = aggregate.collect(tmp_path)
  assert [r["run"] for r in rows] == ["a"]
  out = capsys.readouterr().out
  assert out.count("\n") == 1 and "skipping b:" in out and "metrics.jsonl line 1" in out
  assert d2l_runs.read_run(bad) is None
  assert "metrics.jsonl line 1" in capsys.readouterr().out
