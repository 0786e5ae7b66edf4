"""Copies the repository URL of pyproject.toml ``[project.urls] Repository`` into every notebook's
"Open in Colab" badge and install cell: ``python colab/set_repo_url.py`` after changing it."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
_BADGE = re.compile(r"https://colab\.research\.google\.com/github/[^)\s]+/blob/main/colab/")
_REPO = re.compile(r'^REPO_URL = ".*"$', re.M)


def repository_url() -> str:
  """``[project.urls] Repository`` of pyproject.toml (https://github.com/<owner>/<name>)."""
  url = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
  if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
    raise ValueError(f"[project.urls] Repository={url!r}: expected https://github.com/OWNER/NAME")
  return url


def rewrite(nb: nbformat.NotebookNode, url: str) -> nbformat.NotebookNode:
  """The notebook with its badge and REPO_URL pointing at ``url``."""
  slug = url.removeprefix("https://github.com/")
  first = nb.cells[0]
  first.source = _BADGE.sub(f"https://colab.research.google.com/github/{slug}/blob/main/colab/",
                            first.source)
  for cell in nb.cells:
    if cell.cell_type == "code" and _REPO.search(cell.source):
      cell.source = _REPO.sub(f'REPO_URL = "{url}"', cell.source)
  return nb


def main() -> None:
  url = repository_url()
  for path in sorted((ROOT / "colab").glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    nbformat.write(rewrite(nb, url), path)
    print(f"{path.name}: {url}")


if __name__ == "__main__":
  sys.exit(main())
