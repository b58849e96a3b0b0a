"""Progress lines with elapsed time and an ETA, for training epochs and for lists of runs (sweeps, the report).

The ETA is the mean time per unit of work done in this session times the units left; a resumed run counts from
where it resumed. ``quiet`` silences everything but the final line the caller prints itself.
"""

from __future__ import annotations

import time


def duration(seconds: float) -> str:
  """``75 -> "1m15s"``, ``3725 -> "1h02m"``, ``9 -> "9s"``."""
  seconds = max(0, int(round(seconds)))
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
  """Counts units of work (``done`` of ``total``) since ``start`` and says elapsed time and the ETA."""

  def __init__(self, total: int, done: int = 0, quiet: bool = False, clock=time.perf_counter):
    self.total, self.first, self.done, self.quiet, self.clock = total, done, done, quiet, clock
    self.start = clock()

  def advance(self, units: int = 1) -> None:
    self.done += units

  def resumed_within(self, fraction: float) -> None:
    """This session starts ``fraction`` of the way into the next unit (a run resumed mid-epoch): that part was done
    before, so the ETA's rate does not count it."""
    self.first = self.done + fraction

  def elapsed(self) -> float:
    return self.clock() - self.start

  def eta(self, fraction_of_next: float = 0.0) -> float | None:
    """Seconds left, or None before any unit of this session has finished."""
    done_here = self.done - self.first + fraction_of_next
    if done_here <= 0:
      return None
    return self.elapsed() / done_here * (self.total - self.done - fraction_of_next)

  def timing(self, fraction_of_next: float = 0.0) -> str:
    eta = self.eta(fraction_of_next)
    return f"elapsed {duration(self.elapsed())}  ETA {'?' if eta is None else duration(eta)}"

  def say(self, line: str) -> None:
    if not self.quiet:
      print(line, flush=True)


class BatchTicker:
  """Inside a long epoch: a line at most every ``every_sec`` seconds (none for epochs shorter than that;
  ``every_sec <= 0``: never)."""

  def __init__(self, progress: Progress, every_sec: float = 10.0):
    self.progress, self.every_sec = progress, every_sec
    self.last = progress.clock()

  def due(self) -> bool:
    return self.every_sec > 0 and not self.progress.quiet and self.progress.clock() - self.last >= self.every_sec

  def say(self, epoch: int, batch: int, num_batches: int, step: int, loss: float) -> None:
    self.last = self.progress.clock()
    self.progress.say(f"epoch {epoch}/{self.progress.total}  batch {batch}/{num_batches}  step {step}  "
                      f"loss {loss:.4f}  " + self.progress.timing(batch / num_batches))


class Throughput:
  """Tokens per second between two logging points."""

  def __init__(self, clock=time.perf_counter):
    self.clock, self.tokens, self.since = clock, 0, clock()

  def add(self, tokens: int) -> None:
    self.tokens += tokens

  def take(self) -> float:
    """The rate since the last ``take`` (or the start), then starts counting again."""
    now = self.clock()
    rate = self.tokens / max(now - self.since, 1e-9)
    self.tokens, self.since = 0, now
    return rate
