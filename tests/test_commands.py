"""Every absl entry point answers a bad flag, a bad ``--config.x=y`` and a missing required flag alike: one line on
stderr naming the flag (and the fix), exit status 2. The entry points are found as tests/test_layout.py finds them
(lstm_jax.main and every command module that runs an app), their required flags and ``--config`` file flag read
from their source with ``ast``, so a new command is covered without editing this file. Each case runs the command
as a subprocess; the commands parse their flags before importing JAX where they can, so most cases take well
under a second."""

import ast
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lstm_jax"
CONFIG = str(REPO / "experiments" / "timemachine_lstm.py")
# The absl entry points: lstm_jax.main and every command module that runs an app (not the helpers beside them).
ENTRY_POINTS = {"lstm_jax.main"} | {f"lstm_jax.commands.{p.stem}" for p in (PACKAGE / "commands").glob("*.py")
                                    if "app.run(" in p.read_text()}


def _tree(module: str) -> ast.Module:
  return ast.parse((REPO / (module.replace(".", "/") + ".py")).read_text())


def _calls(module: str, name: str) -> list[ast.Call]:
  """The calls of ``flags.NAME`` / ``config_flags.NAME`` / ``NAME`` in the module."""
  return [node for node in ast.walk(_tree(module)) if isinstance(node, ast.Call)
          and getattr(node.func, "attr", getattr(node.func, "id", None)) == name]


def _strings(node: ast.AST) -> list[str]:
  return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def required_flags(module: str) -> list[str]:
  """The flags the module marks as required (``required=True``, ``mark_flag(s)_as_required``)."""
  names = []
  for node in ast.walk(_tree(module)):
    if not isinstance(node, ast.Call):
      continue
    attr = getattr(node.func, "attr", "")
    if attr.startswith("DEFINE") and any(k.arg == "required" and getattr(k.value, "value", False)
                                         for k in node.keywords):
      names.append(node.args[0].value)
    elif attr in ("mark_flag_as_required", "mark_flags_as_required"):
      names += _strings(node.args[0])
  return sorted(set(names))


def has_config_file(module: str) -> bool:
  """Whether the module's ``--config`` is an ml_collections config file (which takes ``--config.x=y``)."""
  return any(_strings(call.args[0])[:1] == ["config"] for call in _calls(module, "DEFINE_config_file"))


def _given(module: str, leave_out: str = "") -> list[str]:
  """Values for the module's required flags (never used: parsing stops at the flag under test)."""
  return [f"--{name}={CONFIG if name == 'config' and has_config_file(module) else 'x'}"
          for name in required_flags(module) if name != leave_out]


def _cases():
  for module in sorted(ENTRY_POINTS):
    yield pytest.param(module, [*_given(module), "--nosuchflag"], "nosuchflag", id=f"{module}-unknown-flag")
    if has_config_file(module):
      yield pytest.param(module, [*_given(module), "--config.model.hiden=3"], "model.hiden",
                         id=f"{module}-unknown-field")
      yield pytest.param(module, [*_given(module), "--config.model.hidden_size=abc"], "hidden_size=abc",
                         id=f"{module}-bad-value")
      yield pytest.param(module, [*_given(module, "config"), "--config=no_such_config.py"], "no_such_config.py",
                         id=f"{module}-missing-config-file")
    for name in required_flags(module):
      yield pytest.param(module, _given(module, name), f"--{name}", id=f"{module}-missing-{name}")


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": str(REPO), "LSTM_JAX_OFFLINE": "1"}
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=REPO,
                        timeout=120)


@pytest.mark.parametrize("module,args,named", list(_cases()))
def test_a_bad_flag_is_one_line_naming_it_and_exit_2(module, args, named):
  result = _run(module, *args)
  lines = result.stderr.splitlines()
  assert result.returncode == 2, result.stderr[-2000:]
  assert len(lines) == 1 and lines[0].strip(), lines
  assert lines[0].startswith("error: ") and named in lines[0], lines[0]
  assert result.stdout == ""


def test_the_cases_cover_the_known_commands():
  assert {"lstm_jax.main", "lstm_jax.commands.compile", "lstm_jax.commands.evaluate"} <= ENTRY_POINTS
  assert required_flags("lstm_jax.main") == ["config", "workdir"] and has_config_file("lstm_jax.main")
  assert required_flags("lstm_jax.commands.evaluate") == ["workdir"]
  assert not has_config_file("lstm_jax.commands.sweep")  # its --config is a plain string: no overrides


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_every_entry_point_parses_with_the_one_parser(module):
  parsers = [ast.unparse(k.value) for call in _calls(module, "run") for k in call.keywords if k.arg == "flags_parser"]
  assert parsers == ["common.parse_flags"], (module, parsers)


def test_there_is_one_flag_parser():
  defined = [p for p in PACKAGE.rglob("*.py") if "def parse_flags(" in p.read_text()]
  assert defined == [PACKAGE / "commands" / "common.py"]
