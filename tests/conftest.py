"""Fixtures and rules shared by every test module.

* ``@pytest.mark.shared_data("mnist", ...)``: the test reads the shared real-data folder
  (``datasets.shared_data_dir()``, with those subfolders); it is skipped, with the reason, when
  the folder is absent or hidden (``SGD_PHASES_SHARED_DATA=none``, as in a fresh clone).
* No test reaches the network: a connection to anything but this machine fails at once, naming
  the address (a test that would download fails instead of hanging or downloading).
* One JAX persistent compilation cache per test session (a temporary folder, removed at the
  end; ``JAX_COMPILATION_CACHE_DIR`` set before JAX loads, so that the xdist workers and every
  subprocess a test starts share it): a program compiled again -- the same run resumed, rerun
  or started in another process -- is read back instead of recompiled (the same executable:
  results are unchanged). A cache folder already set in the environment is used as it is.
"""

import ipaddress
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ  # (inherited by xdist workers)
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="sgd_phases_jax_cache_")
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

sys.path.insert(0, str(Path(__file__).parent))
import gcs_emulator  # noqa: E402  (sets GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT before gcsfs loads)

from sgd_phases import datasets
from sgd_phases.datasets import tfds_images


def pytest_unconfigure(config):
  if _OWN_CACHE:  # the process that created the session's compilation cache removes it
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_configure(config):
  config.addinivalue_line("markers", "shared_data(*subfolders): reads the shared real-data "
                          "folder (datasets.shared_data_dir()); skipped when it is absent or "
                          "hidden (SGD_PHASES_SHARED_DATA=none)")


def pytest_runtest_setup(item):
  marker = item.get_closest_marker("shared_data")
  if marker is None:
    return
  root = datasets.shared_data_dir()
  missing = [s for s in marker.args if root is None or not (root / s).is_dir()]
  if root is None or missing:
    pytest.skip(f"needs the shared data folder{' with ' + str(missing) if root else ''} "
                f"(../shared/data or ${datasets.SHARED_DATA_ENV}; absent or hidden)")


def _local(host) -> bool:
  if host in ("localhost", ""):
    return True
  try:
    return ipaddress.ip_address(host.split("%")[0]).is_loopback
  except ValueError:
    return False


@pytest.fixture(autouse=True, scope="session")
def _no_network():
  """Refuses connections from this process to any host but this machine (module doc)."""
  real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

  def check(sock, address):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
      raise ConnectionRefusedError(f"tests may not use the network (connection to {address!r})")

  def connect(self, address):
    check(self, address)
    return real_connect(self, address)

  def connect_ex(self, address):
    check(self, address)
    return real_connect_ex(self, address)

  socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
  yield
  socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex


@pytest.fixture
def mock_tfds(monkeypatch):
  """``tfds.testing.mock_data`` with its batched read fixed, every dataset counting as prepared.

  In tfds 4.9.10 mock_data installs ``__getitems__`` on a MagicMock as a plain attribute, so it
  is called without ``self`` and fails; single-item reads work. We swap in a version that does not
  need ``self`` (only the unserialised path is used by data sources). A built-in dataset
  without ``data_dir`` reads a prepared TFDS copy and otherwise downloads the original files:
  here the mocked copy is the prepared one.
  """
  import tensorflow_datasets as tfds
  from tensorflow_datasets.testing import mocking

  def getitems(*args, generator, serialized=False):
    assert not serialized
    return [generator[k] for k in args[-1]]

  monkeypatch.setattr(mocking, "_getitems", getitems)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
  tfds_images.clear_cache()
  yield tfds
  tfds_images.clear_cache()


@pytest.fixture(scope="session")
def gcs_bucket():
  """``gs://sgd-phases-test``: a bucket on a local GCS emulator (127.0.0.1, tests/gcs_emulator.py)
  that this process and its children reach through the environment; stopped at session end."""
  with gcs_emulator.GcsEmulator() as emulator:
    emulator.create_bucket("sgd-phases-test")
    old = gcs_emulator.configure_env(emulator.host)
    try:
      yield "gs://sgd-phases-test"
    finally:
      gcs_emulator.restore_env(old)

