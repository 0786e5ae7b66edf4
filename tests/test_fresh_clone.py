"""A clone without ``../shared``: the tests that read the shared real data skip, and none fails
or reaches the network. Run here with the folder hidden (``SGD_PHASES_SHARED_DATA=none``), as a
clone elsewhere would run them, wherever the folder exists."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sgd_phases import datasets

ROOT = Path(__file__).resolve().parents[1]


def test_shared_data_tests_skip_when_the_folder_is_hidden():
  """Every test marked ``shared_data`` is collected and skipped with the reason (collection
  and skips only: no test body runs)."""
  files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                 if "mark.shared_data" in p.read_text())  # only these modules are imported
  assert "tests/test_experiments_paper.py" in files
  env = {**os.environ, datasets.SHARED_DATA_ENV: "none", "PYTHONPATH": str(ROOT)}
  r = subprocess.run(
      [sys.executable, "-m", "pytest", *files, "-m", "shared_data", "-q", "-rs",
       "-p", "no:xdist", "-p", "no:cacheprovider"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
  out = r.stdout + r.stderr
  assert r.returncode == 0, out[-3000:]
  summary = out.strip().splitlines()[-1]
  skipped = int(re.search(r"(\d+) skipped", summary).group(1))
  assert not re.search(r"passed|failed|error", summary), summary
  reasons = re.findall(r"^SKIPPED \[(\d+)\] .*: needs the shared data folder", out,
                       re.MULTILINE)
  assert sum(map(int, reasons)) == skipped >= 7, out[-3000:]  # tests/test_datasets.py (5),
  #   tests/test_experiments_paper.py (2) at least


def test_no_test_reaches_the_network():
  """The suite's guard (tests/conftest.py): a connection off this machine fails at once."""
  with socket.socket() as s, pytest.raises(ConnectionRefusedError, match="may not use the "
                                                                         "network"):
    s.connect(("192.0.2.1", 80))  # TEST-NET-1: would otherwise hang until a timeout
  with socket.socket() as server, socket.socket() as s:  # this machine stays reachable
    server.bind(("127.0.0.1", 0))                          # (the GCS emulator, test servers)
    server.listen()
    assert s.connect_ex(server.getsockname()) == 0
