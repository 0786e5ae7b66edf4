"""The library's modules stay small enough to read in one sitting (the project's rule: at most
420 lines each; split a module along a seam a reader would look for when it grows past it)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 420


def test_every_library_and_experiment_module_is_at_most_420_lines():
  sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
           for folder in ("sgd_phases", "experiments") for p in (ROOT / folder).rglob("*.py")}
  assert len(sizes) > 20, sorted(sizes)  # the folders were found
  assert {p: n for p, n in sizes.items() if n > MAX_LINES} == {}
