"""The README's Python-API example runs as written (so it cannot rot), and its layout table names only paths that
exist."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_the_python_api_example_runs():
  text = README.read_text()
  block = text.split("## From Python", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
  output = io.StringIO()
  with contextlib.redirect_stdout(output):
    exec(compile(block, "README.md", "exec"), {})
  loss, shape = output.getvalue().split(" ", 1)
  assert 0.0 < float(loss) < 10.0 and shape.strip() == "(4, 9, 28)"


def test_the_layout_table_names_existing_paths():
  table = README.read_text().split("## Layout", 1)[1].split("\n\n", 2)[2]
  root = README.parent
  for cell in re.findall(r"^\| `([^`]+)`", table, re.M):
    first = cell.split(",")[0].strip()
    assert (root / first).exists(), first
