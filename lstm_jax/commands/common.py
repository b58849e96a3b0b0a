"""What the entry points share: the flag parser that turns a bad ``--config.x=y`` into one line (exit 2) and the exit
that prints one line even while a failed background write would hold the process."""

import os
import sys
import threading
import time

from absl import flags


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


def _unknown_override(argv) -> str | None:
  """The first ``--config.PATH=...`` whose PATH names no config field, as a one-line hint (None: all known)."""
  from lstm_jax import config as config_lib  # noqa: PLC0415
  fields = set(config_lib.field_paths())
  for arg in argv[1:]:
    if arg.startswith("--config.") and "=" in arg:
      path = arg[len("--config."):].split("=", 1)[0]
      if path not in fields and not any(f.startswith(path + ".") for f in fields):
        return config_lib.suggest_field(path)
  return None


def parse_flags(argv):
  """absl's parser, with a wrong ``--config.x=y`` reported as one clear line (exit status 2) instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    print(f"{e}\nPass --helpfull to list the flags.", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    message = _unknown_override(argv) or str(e).strip("'\"").replace("\\n", " ").replace("\n", " ")
    end = "" if message.endswith((".", "?")) else "."
    print(f"Bad config override: {message}{end} Override fields as --config.section.field=value.", file=sys.stderr)
    sys.exit(2)
