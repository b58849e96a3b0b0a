"""The package's layout rules, read from its source with ``ast``: no import cycle between lstm_jax modules, absl
flags defined only in the entry points, the cell registry consistent with the cells' parameters, and the files a
newcomer is pointed at actually exist."""

import ast
import pathlib

import jax
import pytest

from lstm_jax import cells

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "lstm_jax"
# The absl entry points: lstm_jax.main and every command module that runs an app (not the helpers beside them).
ENTRY_POINTS = {"lstm_jax.main"} | {f"lstm_jax.commands.{p.stem}" for p in (PACKAGE / "commands").glob("*.py")
                                    if "app.run(" in p.read_text()}


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, ast.Module]:
  return {_module_name(p): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}


def import_graph(modules: dict[str, ast.Module]) -> dict[str, set[str]]:
  """Module -> the lstm_jax modules it imports (at any depth of its code, lazy imports included)."""
  graph = {}
  for name, tree in modules.items():
    targets = set()
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets |= {alias.name for alias in node.names}
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets.add(node.module)
        targets |= {f"{node.module}.{alias.name}" for alias in node.names}
    graph[name] = {t for t in targets if t in modules and t != name}
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import cycle as a list of modules (first == last), or None."""
  state: dict[str, int] = {}
  stack: list[str] = []

  def visit(node):
    state[node] = 1
    stack.append(node)
    for target in sorted(graph[node]):
      if state.get(target) == 1:
        return stack[stack.index(target):] + [target]
      if target not in state and (cycle := visit(target)):
        return cycle
    stack.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_the_cycle_finder_finds_a_planted_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
  graph = import_graph(_modules())
  # A package's __init__ importing its own submodules is not a cycle of the code's floors.
  graph = {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}
  assert find_cycle(graph) is None


# The package's floors, lowest first: a module imports only from its own folder's floor and those below it (the
# top-level modules sit on floor 0, the entry points on the last).
FLOORS = (("lstm_jax", "config", "_moved"), ("cells", "data"), ("kernels", "interop"), ("estimates",), ("models",),
          ("train",), ("sweeps",), ("aot", "d2l", "equivalence"), ("benchmarks",), ("commands", "main"))


def floor(module: str) -> int:
  """The floor of ``lstm_jax.<folder>...`` (or of a top-level module)."""
  parts = module.split(".")
  folder = parts[1] if len(parts) > 1 else parts[0]
  return next(index for index, names in enumerate(FLOORS) if folder in names)


def test_every_folder_has_a_floor():
  folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
  modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
  assert folders | modules == {name for names in FLOORS for name in names} - {"lstm_jax"}


def test_no_module_imports_from_a_floor_above_its_own():
  graph = import_graph(_modules())
  upward = sorted((name, target) for name, targets in graph.items() for target in targets
                  if floor(target) > floor(name))
  assert not upward


def test_the_floor_rule_catches_an_upward_import():
  assert floor("lstm_jax.cells.lstm") < floor("lstm_jax.train.loop") < floor("lstm_jax.commands.evaluate")
  assert floor("lstm_jax.config") == 0 and floor("lstm_jax.main") == len(FLOORS) - 1


def test_checkpoints_do_not_import_the_loop():
  assert "lstm_jax.train.loop" not in import_graph(_modules())["lstm_jax.train.checkpoint"]


def test_flags_are_defined_only_in_entry_points():
  for name, tree in _modules().items():
    defines = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
               and node.func.attr.startswith("DEFINE")]
    assert not defines or name in ENTRY_POINTS, name


def test_entry_points_are_thin():
  for name in ENTRY_POINTS:
    path = PACKAGE.parent / (name.replace(".", "/") + ".py")
    assert len(path.read_text().splitlines()) <= 80, name


@pytest.mark.parametrize("name", sorted(cells.FAMILIES))
def test_registry_gate_counts_match_the_cells_parameters(name):
  params = cells.get_family(name).init_params(jax.random.key(0), 3, 5)
  assert params["W_h"].shape == (5, cells.get(name).num_gates * 5)
  assert params["W_x"].shape == (3, cells.get(name).num_gates * 5)


def test_the_installed_version_is_the_package_version():
  import importlib.metadata

  import lstm_jax
  assert importlib.metadata.version("lstm_jax") == lstm_jax.__version__
  assert all(hasattr(lstm_jax, name) for name in lstm_jax.__all__)
