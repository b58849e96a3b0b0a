"""What the entry points share: the one flag parser of every command (a bad or missing flag, an unloadable
``--config`` file and a bad ``--config.x=y`` are each one ``error:`` line and exit status 2) and the exit that
prints one line even while a failed background write would hold the process."""

import os
import re
import sys
import threading
import time

from absl import flags

EXIT_USAGE = 2
FLAGS_FIX = "Pass --helpfull to list the flags."
OVERRIDE_FIX = "Override fields as --config.section.field=value."


def exit_with(status: int, message: str) -> None:
  """Prints ``message`` (one line) and exits; when a background thread of a failed checkpoint write would hold
  the exit (orbax waits up to its timeout for signals that never come), it exits without waiting for it."""
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
  deadline = time.monotonic() + 5.0
  for thread in others:
    thread.join(max(0.0, deadline - time.monotonic()))
  if any(thread.is_alive() for thread in others):
    os._exit(status)
  sys.exit(status)


def one_line(error: BaseException) -> str:
  """The error's message on one line: the last "SomeError: ..." line of an embedded traceback, the ``[Errno ...]``
  part of a file error; at most 300 characters, ending in a full stop."""
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
  errors = [ln for ln in lines if re.match(r"^\w+(Error|Exception): ", ln)]
  errno = [ln for ln in lines if ln.startswith("[Errno")]
  text = errno[-1] if errno else errors[-1] if errors and "Traceback" in text else " ".join(lines)
  text = text.rstrip(". ")
  return (text[:300] + "...") if len(text) > 300 else text if text.endswith("?") else text + "."


def _has_config_file_flag() -> bool:
  """Whether this command's ``--config`` is an ml_collections config file (not a plain string)."""
  return "config" in flags.FLAGS and hasattr(type(flags.FLAGS["config"]), "config_filename")


def _unknown_override(argv: list[str]) -> str | None:
  """The first ``--config.PATH=...`` whose PATH names no config field, as a one-line hint (None: all known)."""
  from lstm_jax import config as config_lib  # noqa: PLC0415 (only when an override went wrong)
  fields = set(config_lib.field_paths())
  for arg in argv[1:]:
    if arg.startswith("--config.") and "=" in arg:
      path = arg[len("--config."):].split("=", 1)[0]
      if path not in fields and not any(f.startswith(path + ".") for f in fields):
        return config_lib.suggest_field(path)
  return None


def _message(error: Exception, argv: list[str]) -> str:
  """The one ``error:`` line for a failed parse: what is wrong and how to fix it."""
  config_file = _has_config_file_flag()
  unknown = _unknown_override(argv) if config_file else None
  if unknown:
    return f"error: bad config override: {unknown} {OVERRIDE_FIX}"
  if isinstance(error, OSError) or "Error whilst parsing config file" in str(error):
    return f"error: cannot load --config: {one_line(error)}"
  if required := re.search(r"Flag (--\w+) must have a value other than None", str(error)):
    return f"error: the flag {required.group(1)} is required. {FLAGS_FIX}"
  if isinstance(error, flags.Error) and "--config." not in str(error):
    return f"error: {one_line(error)} {FLAGS_FIX}"
  return f"error: bad config override: {one_line(error)} {OVERRIDE_FIX}"


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser for every entry point (the ``flags_parser`` each gives absl's ``app.run``); returns the
  arguments left over. A problem is one ``error:`` line on stderr naming the flag and the fix, and exit status 2.
  ml_collections loads a ``--config`` file while parsing but defers a load failure to the first read: read here."""
  try:
    rest = flags.FLAGS(argv)
    if _has_config_file_flag() and flags.FLAGS["config"].value is not None:
      list(flags.FLAGS["config"].value.keys())
    return rest
  except Exception as e:  # noqa: BLE001 (absl's flags.Error, config_flags' KeyError/AttributeError, get_config's)
    print(_message(e, argv), file=sys.stderr, flush=True)
    sys.exit(EXIT_USAGE)
