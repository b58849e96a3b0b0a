"""The run directory and the one owner of its files.

A workdir holds::

    config.json       the resolved config and vocabulary size (written when a run starts or resumes)
    metrics.jsonl     one JSON record per logging epoch; a run is finished once a record has ``"final": 1``
    checkpoints/      orbax steps (``lstm_jax.checkpoint``)
    tensorboard/      event files (``lstm_jax.metrics``)
    perplexity.png    the run's curve (``lstm_jax.plots``)
    .lock             host and pid of the training that holds the workdir (``lock``)
    previous-*/       what ``train.resume=False`` set aside (never deleted)

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

from etils import epath

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"

PathLike = str | epath.PathLike


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
  (path(workdir) / CONFIG_FILE).write_text(json.dumps(resolved, indent=2, ensure_ascii=False, default=str))


def read_config(workdir: PathLike) -> dict[str, Any] | None:
  """The ``config`` dict of ``config.json``, or None when there is none."""
  file = path(workdir) / CONFIG_FILE
  return json.loads(file.read_text())["config"] if file.exists() else None


def metrics_path(workdir: PathLike) -> epath.Path:
  return path(workdir) / METRICS_FILE


def read_metrics(workdir: PathLike) -> list[dict[str, Any]]:
  """Every record of ``metrics.jsonl`` (empty when there is none)."""
  file = metrics_path(workdir)
  if not file.exists():
    return []
  return [json.loads(line) for line in file.read_text().splitlines() if line.strip()]


def final_record(workdir: PathLike) -> dict[str, Any] | None:
  """The run's final record (its summary), or None while the run has not finished."""
  finals = [r for r in read_metrics(workdir) if r.get("final")]
  return finals[-1] if finals else None


def is_finished(workdir: PathLike) -> bool:
  """The one test of "has this run finished": its metrics end in a ``"final"`` record."""
  return final_record(workdir) is not None


def truncate_metrics(workdir: PathLike, last_step: int) -> None:
  """On resume, drops records logged after the checkpoint, so the log reads as if the run never stopped."""
  file = metrics_path(workdir)
  if file.exists():
    kept = [r for r in read_metrics(workdir) if r["step"] <= last_step and "final" not in r]
    file.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


def clear_metrics(workdir: PathLike) -> None:
  """Removes ``metrics.jsonl`` (a population restarts its members from scratch)."""
  file = metrics_path(workdir)
  if file.exists():
    file.unlink()


def set_aside(workdir: PathLike) -> epath.Path | None:
  """``train.resume=False``: moves earlier checkpoints and metrics into ``previous-<time>/`` (never deletes them);
  returns that folder, or None when there was nothing to move."""
  root, old = path(workdir), path(workdir) / CHECKPOINTS_DIR
  if not (old.exists() and any(old.iterdir())):
    return None
  aside = root / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
  aside.mkdir()
  old.rename(aside / old.name)
  if metrics_path(workdir).exists():
    metrics_path(workdir).rename(aside / METRICS_FILE)
  return aside


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


def _try_create(file: epath.Path, content: str) -> bool:
  """Creates ``file`` only if it does not exist (atomically for local paths); returns whether it did."""
  if is_uri(file):
    if file.exists():
      return False
    file.write_text(content)
    return True
  try:
    descriptor = os.open(str(file), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
  except FileExistsError:
    return False
  with os.fdopen(descriptor, "w") as f:
    f.write(content)
  return True


@contextlib.contextmanager
def lock(workdir: PathLike) -> Iterator[None]:
  """Holds ``<workdir>/.lock`` (this host and pid) while a training writes the workdir; released on exit. A lock
  left by a dead process of this host is taken over with a message; a live holder raises ``WorkdirBusy``."""
  file = path(workdir) / LOCK_FILE
  me = {"host": socket.gethostname(), "pid": os.getpid()}
  for _ in range(2):
    if _try_create(file, json.dumps(me)):
      break
    try:
      holder = json.loads(file.read_text() or "{}")
    except (OSError, ValueError):
      holder = {}
    host, pid = holder.get("host", "?"), holder.get("pid", -1)
    if host != me["host"]:
      raise WorkdirBusy(f"Workdir {workdir} is held by process {pid} on host {host} ({file}); wait for that run, "
                        f"pass another --workdir, or delete {file} if that run is dead.")
    if isinstance(pid, int) and pid > 0 and _alive(pid):
      raise WorkdirBusy(f"Workdir {workdir} is in use by process {pid} on this host ({host}); wait for it to "
                        f"finish or pass another --workdir.")
    print(f"Taking over the stale lock of process {pid} on {host} (no longer running) in {workdir}.", flush=True)
    file.unlink()
  else:
    raise WorkdirBusy(f"Workdir {workdir} lock {file} could not be taken; pass another --workdir.")
  try:
    yield
  finally:
    with contextlib.suppress(OSError, ValueError):
      if json.loads(file.read_text()) == me:
        file.unlink()
