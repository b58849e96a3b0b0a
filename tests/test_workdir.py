"""The run directory's owner: URIs stay URIs (a gs:// workdir never becomes a local folder), "finished" is one
test, resumption truncates the log to the checkpoint, and resume=False sets old files aside without deleting."""

import json
import os

import pytest

from lstm_jax.train import workdir


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


def test_a_lock_that_cannot_be_written_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
  import errno

  def full(*args):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(workdir.os, "pwrite", full)
  with pytest.raises(workdir.WriteError, match=r"Cannot write .*\.lock \(No space left on device\)"):
    with workdir.lock(tmp_path):
      pass
  assert not (tmp_path / ".lock").exists()


def test_a_lock_whose_pid_was_reused_names_the_file_to_delete(tmp_path):
  import socket
  lock_file = tmp_path / ".lock"
  lock_file.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid()}))  # alive, not a training
  with pytest.raises(workdir.WorkdirBusy, match=rf"pid was reused\), delete {lock_file}"):
    with workdir.lock(tmp_path):
      pass
  assert lock_file.exists()


def test_a_dead_holders_lock_is_taken_over_and_removed_on_release(tmp_path, capsys):
  import socket
  import subprocess
  import sys
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                        text=True).stdout.strip()
  (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead)}))
  with workdir.lock(tmp_path):
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
  assert "Taking over the stale lock" in capsys.readouterr().out and not (tmp_path / ".lock").exists()


def _take(directory, barrier, held):
  barrier.wait()
  try:
    with workdir.lock(directory):
      held.append(os.getpid())
      import time
      time.sleep(0.5)
  except workdir.WorkdirBusy:
    pass


def test_processes_taking_over_one_stale_lock_at_once_never_both_hold_it(tmp_path):
  import multiprocessing
  import socket
  context = multiprocessing.get_context("spawn")
  for _ in range(3):
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": 2 ** 22 + 7}))  # no such pid
    with context.Manager() as manager:
      barrier, held = manager.Barrier(6), manager.list()
      takers = [context.Process(target=_take, args=(str(tmp_path), barrier, held)) for _ in range(6)]
      for taker in takers:
        taker.start()
      for taker in takers:
        taker.join(60)
      assert len(held) == 1


def test_a_live_holder_is_named_with_its_lock_file(tmp_path):
  with workdir.lock(tmp_path):
    with pytest.raises(workdir.WorkdirBusy, match=rf"process {os.getpid()} .*holds its lock {tmp_path / '.lock'}"):
      with workdir.lock(tmp_path):
        pass
