"""The front door and the docs: README.md stays short, every relative link and ``#anchor`` in README.md, docs/ and
the reports' READMEs resolves, and the estimate table in docs/accelerators.md is the one ``benchmark --estimates``
prints today."""

import pathlib
import re

import pytest

from lstm_jax.benchmarks import compile_matrix

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED_PAGES = PAGES + sorted((ROOT / "reports").glob("*/README.md"))  # the reports' links are checked too
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: pathlib.Path) -> set[str]:
  """GitHub's anchors of a Markdown page's headings: lowercase, punctuation dropped, spaces to hyphens."""
  headings = re.findall(r"(?m)^#+ (.+)$", page.read_text())
  return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_the_readme_is_a_short_front_door():
  lines = (ROOT / "README.md").read_text().splitlines()
  assert len(lines) <= 150, len(lines)
  headings = [ln for ln in lines if ln.startswith("## ")]
  assert headings[:2] == ["## Two commands", "## Layout"], headings  # the commands and the map come first


@pytest.mark.parametrize("page", LINKED_PAGES, ids=[str(page.relative_to(ROOT)) for page in LINKED_PAGES])
def test_every_relative_link_and_anchor_resolves(page):
  for target in _LINK.findall(page.read_text()):
    if re.match(r"^[a-z]+://", target):
      continue
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve() if path else page
    assert resolved.exists(), (page.name, target)
    if anchor and resolved.suffix == ".md":
      assert anchor in _anchors(resolved), (page.name, target, sorted(_anchors(resolved)))


def test_no_docs_paragraph_runs_longer_than_about_eight_lines():
  for page in PAGES:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for paragraph in text.split("\n\n"):
      lines = [ln for ln in paragraph.splitlines() if ln.strip() and not ln.startswith(("|", "-", "#"))]
      assert len(lines) <= 10, (page.name, lines[:2])


def test_the_accelerators_page_shows_todays_estimates():
  generated = compile_matrix.estimate_table().splitlines()
  shown = [ln for ln in (ROOT / "docs" / "accelerators.md").read_text().splitlines() if re.match(r"^\| W\d ", ln)]
  assert len(shown) == 12 and all(row in generated for row in shown), shown
