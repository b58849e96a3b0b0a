"""The run directory and the one owner of its files.

A workdir holds::

    config.json       the resolved config and vocabulary size (written when a run starts or resumes)
    metrics.jsonl     one JSON record per logging epoch; a run is finished once a record has ``"final": 1``
    checkpoints/      orbax steps (``lstm_jax.train.checkpoint``)
    tensorboard/      event files (``lstm_jax.train.metrics``)
    perplexity.png    the run's curve (``lstm_jax.train.plots``)
    .lock             host and pid of the training that holds the workdir (``lock``)
    previous-*/       what ``train.resume=False`` or a restart from scratch set aside (never deleted)

Paths go through ``etils.epath`` (orbax's own path type), so ``gs://bucket/run`` and other URIs reach orbax and
the writers unchanged while local paths behave as ``pathlib`` ones.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from typing import Any, Iterator

try:
  import fcntl
except ImportError:  # not on Windows: the lock falls back to an exclusive create
  fcntl = None

from etils import epath

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"

PathLike = str | epath.PathLike


class WriteError(OSError):
  """A file of the workdir cannot be written; the message names it, the cause and what to do."""


class MetricsLogError(ValueError):
  """``metrics.jsonl`` holds a line that is not a record; the message names the file and the line."""


def write_failed(file: Any, error: OSError) -> WriteError:
  """``error`` (disk full, no permission) as one line that names ``file`` and how to go on."""
  reason = error.strerror or str(error) or type(error).__name__
  failure = WriteError(f"Cannot write {file} ({reason}); free space or fix the permissions there, then rerun the same "
                       f"command: the run resumes from its last checkpoint.")
  failure.errno = error.errno
  return failure


def write_text(file: epath.Path, text: str, atomic: bool = False) -> None:
  """Writes ``text`` to ``file`` (``atomic``: through a temporary file renamed over it, so a failure leaves the
  old file whole); an ``OSError`` becomes a ``WriteError`` naming the file."""
  target = file.with_name(file.name + ".tmp") if atomic else file
  try:
    target.write_text(text)
    if atomic:
      target.replace(file)
  except OSError as e:
    if atomic:
      with contextlib.suppress(OSError):
        target.unlink()
    raise write_failed(file, e) from e


def path(workdir: PathLike) -> epath.Path:
  return epath.Path(workdir)


def is_uri(workdir: PathLike) -> bool:
  """Whether ``workdir`` names a remote location (``gs://...``, ``s3://...``) rather than a local folder."""
  return "://" in str(workdir)


def checkpoint_dir(workdir: PathLike) -> epath.Path:
  """``<workdir>/checkpoints``, made absolute for a local path (orbax wants one); a URI is left as it is."""
  directory = path(workdir) / CHECKPOINTS_DIR
  return directory if is_uri(workdir) else epath.Path(directory.absolute())


def prepare(workdir: PathLike) -> epath.Path:
  """Creates ``workdir`` and checks it is writable, failing early with a message that names it."""
  root = path(workdir)
  try:
    root.mkdir(parents=True, exist_ok=True)
    probe = root / f".write_test-{socket.gethostname()}-{os.getpid()}"  # one per process of a multi-host job
    probe.write_text("")
    probe.unlink()
  except ImportError as e:  # epath names the missing filesystem package (gcsfs for gs://, s3fs for s3://)
    raise OSError(f"Workdir {workdir} cannot be reached: {e}. Install it (pip install gcsfs for gs://) or pass a "
                  f"local --workdir.") from e
  except OSError as e:
    raise OSError(f"Workdir {workdir} cannot be created or written ({e.strerror or e}); pass a writable "
                  f"--workdir.") from e
  return root


def write_config(workdir: PathLike, config_dict: dict[str, Any], **extra: Any) -> None:
  """Writes ``config.json``: the resolved config and facts of the data (``vocab_size``, ...)."""
  resolved = {"config": config_dict, **extra}
  write_text(path(workdir) / CONFIG_FILE, json.dumps(resolved, indent=2, ensure_ascii=False, default=str),
             atomic=True)


def read_config(workdir: PathLike) -> dict[str, Any] | None:
  """The ``config`` dict of ``config.json``, or None when there is none."""
  file = path(workdir) / CONFIG_FILE
  if not file.exists():
    return None
  try:
    return json.loads(file.read_text())["config"]
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{file} is not a config this project wrote ({type(e).__name__}: {e}).") from e


def metrics_path(workdir: PathLike) -> epath.Path:
  return path(workdir) / METRICS_FILE


def read_metrics(workdir: PathLike) -> list[dict[str, Any]]:
  """Every record of ``metrics.jsonl`` (empty when there is none); a line that is not a JSON object with a
  ``step`` raises ``MetricsLogError`` naming the file and the line."""
  file = metrics_path(workdir)
  if not file.exists():
    return []
  records = []
  for number, line in enumerate(file.read_bytes().decode("utf-8", errors="replace").splitlines(), start=1):
    if line.strip():
      records.append(_parse_record(file, number, line))
  return records


def _parse_record(file: epath.Path, number: int, line: str) -> dict[str, Any]:
  try:
    record = json.loads(line)
  except ValueError as e:
    raise MetricsLogError(f"{file} line {number} is not a JSON record ({e}): it was cut short or damaged.") from e
  if not isinstance(record, dict) or not isinstance(record.get("step"), int):
    raise MetricsLogError(f"{file} line {number} is not a record of this project (no integer \"step\").")
  return record


def write_metrics(workdir: PathLike, records: list[dict[str, Any]]) -> None:
  """Replaces ``metrics.jsonl`` with ``records`` (atomically: a failure leaves the old file whole)."""
  write_text(metrics_path(workdir), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
             atomic=True)


def final_record(workdir: PathLike) -> dict[str, Any] | None:
  """The run's final record (its summary), or None while the run has not finished."""
  finals = [r for r in read_metrics(workdir) if r.get("final")]
  return finals[-1] if finals else None


def training_time(records: list[dict[str, Any]]) -> float | None:
  """Seconds of training over every session of a finished run's ``records``: a resumed run's clock restarts
  (``elapsed_sec`` drops), so each earlier session adds its last logged time to the final record's
  ``wall_time_sec``. None where the final record has no ``wall_time_sec`` (a log written by other code)."""
  earlier, previous = 0.0, 0.0
  for record in records:
    elapsed = record.get("elapsed_sec", previous)
    if not record.get("final") and elapsed < previous:
      earlier += previous
    previous = elapsed
  wall_time = [r for r in records if r.get("final")][-1].get("wall_time_sec")
  return None if wall_time is None else earlier + wall_time


def is_finished(workdir: PathLike) -> bool:
  """The one test of "has this run finished": its metrics end in a ``"final"`` record."""
  return final_record(workdir) is not None


def truncate_metrics(workdir: PathLike, last_step: int) -> None:
  """On resume, drops records logged after the checkpoint, so the log reads as if the run never stopped (for
  checkpoints that hold no copy of the log; others rebuild it with ``write_metrics``). A damaged line raises
  ``MetricsLogError`` naming it."""
  if metrics_path(workdir).exists():
    try:
      kept = [r for r in read_metrics(workdir) if r["step"] <= last_step and "final" not in r]
    except MetricsLogError as e:
      raise MetricsLogError(f"{e} Its checkpoint holds no copy of the log to repair it from: delete that line (and "
                            f"any after it) and rerun.") from e
    write_metrics(workdir, kept)


def clear_metrics(workdir: PathLike) -> None:
  """Removes ``metrics.jsonl`` (a population restarts its members from scratch)."""
  file = metrics_path(workdir)
  if file.exists():
    file.unlink()


SET_ASIDE = (CHECKPOINTS_DIR, METRICS_FILE, TENSORBOARD_DIR, "perplexity.png")


def set_aside(workdir: PathLike, what: tuple[str, ...] = SET_ASIDE) -> epath.Path | None:
  """Moves an earlier run's files (``what`` of: checkpoints, metrics, TensorBoard events, plot) into
  ``previous-<time>/`` (never deletes them); returns that folder, or None when there was nothing to move. Used by
  ``train.resume=False`` and by a run that restarts from scratch (no checkpoint) over an earlier attempt's log."""
  root = path(workdir)
  found = [root / name for name in what if (root / name).exists()]
  found = [p for p in found if not (p.is_dir() and not any(p.iterdir()))]
  if not found:
    return None
  stamp = time.strftime('%Y%m%d-%H%M%S')
  aside = root / f"previous-{stamp}"
  for suffix in range(1, 100):
    if not aside.exists():
      break
    aside = root / f"previous-{stamp}-{suffix}"
  try:
    aside.mkdir()
    for item in found:
      item.rename(aside / item.name)
  except OSError as e:
    raise write_failed(aside, e) from e
  return aside


def set_aside_step(workdir: PathLike, step: int) -> epath.Path:
  """Moves one step directory ``checkpoints/<step>`` into ``previous-<time>/checkpoints/`` (never deletes it);
  returns where it went."""
  source = checkpoint_dir(workdir) / str(step)
  target = path(workdir) / f"previous-{time.strftime('%Y%m%d-%H%M%S')}" / CHECKPOINTS_DIR / str(step)
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    source.rename(target)
  except OSError as e:
    raise write_failed(target, e) from e
  return target


LOCK_FILE = ".lock"


class WorkdirBusy(OSError):
  """Another live training holds the workdir."""


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _holder(text: str) -> dict[str, Any]:
  try:
    holder = json.loads(text or "{}")
  except ValueError:
    holder = {}
  return holder if isinstance(holder, dict) else {}


def _check_holder(workdir: PathLike, file: epath.Path, holder: dict[str, Any], me: dict[str, Any]) -> None:
  """Raises ``WorkdirBusy`` unless the lock file's recorded ``holder`` is gone (none, or a dead process of this
  host: said in one line)."""
  if not holder or holder == me:
    return
  host, pid = holder.get("host", "?"), holder.get("pid", -1)
  if host != me["host"]:
    raise WorkdirBusy(f"Workdir {workdir} is held by process {pid} on host {host} ({file}); wait for that run, "
                      f"pass another --workdir, or delete {file} if that run is dead.")
  if isinstance(pid, int) and pid > 0 and _alive(pid):
    raise WorkdirBusy(f"Workdir {workdir} is in use by process {pid} on this host ({host}), says its lock {file}; "
                      f"wait for it to finish or pass another --workdir. If no training runs there (the process "
                      f"that wrote the lock died and its pid was reused), delete {file}.")
  print(f"Taking over the stale lock of process {pid} on {host} (no longer running) in {workdir}.", flush=True)


def _write_lock(descriptor: int, file: epath.Path, me: dict[str, Any]) -> None:
  try:
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, json.dumps(me).encode(), 0)
  except OSError as e:
    raise write_failed(file, e) from e


@contextlib.contextmanager
def _flock(workdir: PathLike, file: epath.Path, me: dict[str, Any]) -> Iterator[None]:
  """The lock of a local workdir: ``fcntl.flock`` on ``file``, which holds the holder's host and pid for the
  messages. The kernel drops a dead process's flock, so taking over a stale lock is free of races; the file is
  removed on release while still locked, and a taker that locked a removed file retries."""
  for _ in range(10):
    try:
      descriptor = os.open(str(file), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise write_failed(file, e) from e
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _holder(os.pread(descriptor, 4096, 0).decode(errors="replace"))
      os.close(descriptor)
      pid = holder.get("pid", "?")
      raise WorkdirBusy(f"Workdir {workdir} is in use by process {pid} on this host ({holder.get('host', '?')}), "
                        f"which holds its lock {file}; wait for it to finish or pass another --workdir.") from None
    try:
      same = os.fstat(descriptor).st_ino == os.stat(str(file)).st_ino
    except FileNotFoundError:
      same = False
    if same:
      break
    os.close(descriptor)  # the holder removed that file between our open and lock: take the new one
  else:
    raise WorkdirBusy(f"Workdir {workdir} lock {file} could not be taken; pass another --workdir.")
  try:
    _check_holder(workdir, file, _holder(os.pread(descriptor, 4096, 0).decode(errors="replace")), me)
    _write_lock(descriptor, file, me)
  except BaseException:
    with contextlib.suppress(OSError):
      if os.fstat(descriptor).st_size == 0 or _holder(os.pread(descriptor, 4096, 0).decode()) == me:
        os.unlink(str(file))  # no empty lock left behind
    os.close(descriptor)
    raise
  try:
    yield
  finally:
    with contextlib.suppress(OSError):
      os.unlink(str(file))
    os.close(descriptor)


@contextlib.contextmanager
def _exclusive_create(workdir: PathLike, file: epath.Path, me: dict[str, Any]) -> Iterator[None]:
  """The lock of a remote workdir (``gs://``): a lock file created if absent (best effort: not atomic there)."""
  for _ in range(2):
    if not file.exists():
      file.write_text(json.dumps(me))
      break
    _check_holder(workdir, file, _holder(file.read_text()), me)
    file.unlink()
  else:
    raise WorkdirBusy(f"Workdir {workdir} lock {file} could not be taken; pass another --workdir.")
  try:
    yield
  finally:
    with contextlib.suppress(OSError, ValueError):
      if json.loads(file.read_text()) == me:
        file.unlink()


def lock(workdir: PathLike):
  """Holds ``<workdir>/.lock`` (this host and pid) while a training writes the workdir; released on exit. A live
  holder raises ``WorkdirBusy`` naming it; a lock left by a dead process of this host is taken over with a
  message; a lock that cannot be written (disk full) is one ``WriteError`` naming it and leaves no file."""
  file = path(workdir) / LOCK_FILE
  me = {"host": socket.gethostname(), "pid": os.getpid()}
  if is_uri(workdir) or fcntl is None:
    return _exclusive_create(workdir, file, me)
  return _flock(workdir, file, me)
