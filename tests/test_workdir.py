"""The run directory's owner: URIs stay URIs (a gs:// workdir never becomes a local folder), "finished" is one
test, resumption truncates the log to the checkpoint, and resume=False sets old files aside without deleting."""

import json
import os

import pytest

from lstm_jax import workdir


def test_a_uri_workdir_is_never_turned_into_a_local_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  uri = "gs://bucket/run1"
  assert str(workdir.checkpoint_dir(uri)) == "gs://bucket/run1/checkpoints"
  assert str(workdir.metrics_path(uri)) == "gs://bucket/run1/metrics.jsonl"
  assert workdir.is_uri(uri) and not workdir.is_uri(str(tmp_path / "run"))
  try:
    workdir.prepare(uri)  # no network here: either the filesystem package is missing or the bucket is unreachable
  except OSError as e:
    assert uri in str(e)
  assert os.listdir(tmp_path) == []  # no ./gs:/bucket/run1 folder


def test_local_checkpoint_dir_is_absolute(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(workdir.checkpoint_dir("runs/x")) == str(tmp_path / "runs" / "x" / "checkpoints")


def _write_records(root, records):
  (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_finished_means_a_final_record_and_truncation_keeps_the_checkpointed_steps(tmp_path):
  records = [{"step": 8, "epoch": 1}, {"step": 16, "epoch": 2}, {"step": 24, "epoch": 3}]
  _write_records(tmp_path, records)
  assert not workdir.is_finished(tmp_path) and workdir.final_record(tmp_path) is None
  workdir.truncate_metrics(tmp_path, last_step=16)
  assert workdir.read_metrics(tmp_path) == records[:2]
  _write_records(tmp_path, records + [{"step": 24, "final": 1, "train_perplexity": 1.3}])
  assert workdir.is_finished(tmp_path) and workdir.final_record(tmp_path)["train_perplexity"] == 1.3
  workdir.truncate_metrics(tmp_path, last_step=24)
  assert not workdir.is_finished(tmp_path)  # a resumed run writes its final record again


def test_set_aside_moves_checkpoints_and_metrics_and_deletes_nothing(tmp_path):
  assert workdir.set_aside(tmp_path) is None  # nothing to move
  (tmp_path / "checkpoints" / "8").mkdir(parents=True)
  (tmp_path / "checkpoints" / "8" / "state").write_text("x")
  _write_records(tmp_path, [{"step": 8}])
  aside = workdir.set_aside(tmp_path)
  assert (aside / "checkpoints" / "8" / "state").read_text() == "x"
  assert workdir.read_metrics(aside) == [{"step": 8}]
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_an_unwritable_workdir_is_one_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(OSError, match="cannot be created or written"):
    workdir.prepare(blocker / "run")
