"""Data read from files: the text dataset's split, and (below) what every file-backed source
refuses or identifies."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
from pathlib import Path

import finished_run
import numpy as np
import pytest

from sgd_phases import config_lib, datasets
from sgd_phases.datasets import sequences, tfds_images


def _brute_force_text_split(text: str, length: int, test_fraction: float):
  """The text dataset's tokens as first written: per-character dictionary lookups, the test
  text filtered one character at a time."""
  cut = int(len(text) * (1 - test_fraction))
  vocab = "".join(sorted(set(text[:cut])))
  index = {c: i for i, c in enumerate(vocab)}
  test_text = "".join(c for c in text[cut:] if c in set(vocab))

  def windows(s):
    m = len(s) // length
    return np.array([index[c] for c in s[:m * length]], dtype=np.int32).reshape(m, length)

  return windows(text[:cut]), windows(test_text), vocab


def test_text_split_matches_a_per_character_implementation(tmp_path):
  rng = np.random.default_rng(0)
  # Astral and non-Latin characters, and test-only characters ("XYZ") that must be dropped.
  train_chars = list("abc de\u00e9\u4e2d\U0001F600\n")
  text = "".join(rng.choice(train_chars, 3000)) + "".join(rng.choice(train_chars + list("XYZ"),
                                                                     1000))
  (tmp_path / "t.txt").write_text(text, encoding="utf-8")
  train, test, vocab = _brute_force_text_split(text, 16, 0.25)
  ds = datasets.get_dataset({"name": "text", "path": str(tmp_path / "t.txt"), "length": 16,
                             "test_fraction": 0.25, "train_size": 10_000, "test_size": 10_000})
  assert ds.meta["vocab"] == vocab and ds.num_classes == len(vocab) == 10
  np.testing.assert_array_equal(ds.x_train, train[:, :-1])
  np.testing.assert_array_equal(ds.y_train, train[:, 1:])
  np.testing.assert_array_equal(ds.x_test, test[:, :-1])
  np.testing.assert_array_equal(ds.y_test, test[:, 1:])
  assert len(test) == (1000 - sum(c in "XYZ" for c in text[3000:])) // 16


def test_in_vocab_equals_per_character_filter():
  rng = np.random.default_rng(1)
  text = "".join(rng.choice(list("ab\u00e9\u4e2d\U0001F600\x00z "), 5000))
  for vocab in ("ab", "\U0001F600\x00", "z \u4e2d", "q"):
    assert sequences.in_vocab(text, vocab) == "".join(c for c in text if c in set(vocab))
  assert sequences.in_vocab("", "ab") == ""


# ----------------------------------------------------------------------------- text files
def _text_run_config(path: Path):
  c = config_lib.base_config("text", "transformer", num_layers=1, num_heads=1, d_model=8,
                             mlp=False)
  c.t0.reference = ""
  c.dataset.update(path=str(path), length=8, train_size=64, test_size=8)
  c.num_seeds, c.num_steps, c.batch_size, c.progress = 1, 4, 16, False
  c.eval.num_points = 2
  c.null.num_permutations = 0  # the run's identity is under test, not its statistics
  return c


def test_a_rewritten_text_file_is_another_run(tmp_path):
  path = tmp_path / "t.txt"
  path.write_text("the cat sat on the mat. " * 60)
  c = _text_run_config(path)
  pinned = datasets.pin(c.dataset)["fingerprint"]
  assert pinned == hashlib.sha256(path.read_bytes()).hexdigest()[:16]  # the file's bytes
  finished_run.refused_after_change(c, tmp_path / "run",
                        lambda: path.write_text("a dog ate the hat! " * 75))


@pytest.mark.parametrize("content, match", [
    (None, r"^path='.*': is a folder"),
    (b"caf\xe9 au lait, " * 20, r"^path='.*': not UTF-8 text \(byte 3"),
])
def test_text_path_that_is_no_utf8_file_names_path(tmp_path, content, match):
  path = tmp_path / "t.txt"
  if content is None:
    path.mkdir()
  else:
    path.write_bytes(content)
  for call in (datasets.get_dataset, datasets.pin):
    with pytest.raises(ValueError, match=match):
      call({"name": "text", "path": str(path)})


# ----------------------------------------------------------------------------- MNIST-format files
def write_idx(folder: Path, n_train: int = 60, n_test: int = 20, seed: int = 0
              ) -> tuple[np.ndarray, ...]:
  """The four IDX ``.gz`` files of a small MNIST-like dataset, written from the format's
  description (big-endian magic 2051/2049, counts and sizes, then the bytes)."""
  rng = np.random.default_rng(seed)
  folder.mkdir(parents=True, exist_ok=True)
  out = []
  for split, n in (("train", n_train), ("t10k", n_test)):
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(
        struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes(), mtime=0))
    (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(
        struct.pack(">II", 2049, n) + labels.tobytes(), mtime=0))
    out += [images[..., None], labels]
  return tuple(out)


def test_idx_files_are_pinned_by_their_bytes(tmp_path):
  write_idx(tmp_path / "idx")
  cfg = {"name": "mnist", "data_dir": str(tmp_path / "idx"), "tfds_dir": str(tmp_path / "c"),
         "classes": "all"}
  pinned = datasets.pin(cfg)["fingerprint"]
  files = sorted(("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                  "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"))
  h = hashlib.sha256()  # the names and bytes of the four files, in the order of IDX_FILES' keys
  for f in files:
    h.update(f.encode())
    h.update((tmp_path / "idx" / f).read_bytes())
  assert pinned == h.hexdigest()[:16]
  x_tr, y_tr, *_ = write_idx(tmp_path / "idx", seed=1)  # same path, new images
  with pytest.raises(ValueError, match=rf"^fingerprint='{pinned}': the data read from "
                                       r"data_dir="):
    datasets.get_dataset({**cfg, "fingerprint": pinned})
  ds = datasets.get_dataset(cfg)  # unpinned: the new files, not the build of the old ones
  np.testing.assert_array_equal(ds.x_train, x_tr / np.float32(255))
  np.testing.assert_array_equal(ds.y_train, y_tr)


# ------------------------------------------------------------------- the default path: download
class _Server:
  """An HTTP server on 127.0.0.1 serving ``folder`` (started and stopped by the test); counts
  the files it sent."""

  def __init__(self, folder: Path):
    import functools
    import http.server
    import threading
    sent = self.sent = []

    class Handler(http.server.SimpleHTTPRequestHandler):
      def do_GET(self):
        sent.append(self.path)
        super().do_GET()

      def log_message(self, *args):
        del args

    self.httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()
    self.thread.join()


def serve_tfds_files(monkeypatch, name: str, folder: Path) -> _Server:
  """``folder`` served on 127.0.0.1, and TFDS's builder ``name`` pointed at it: its registered
  URLs (read through TFDS, as the library reads them) are redirected to the server, with the
  sizes and sha256 sums of the files served."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download import checksums

  builder_cls = tfds.builder_cls(name)
  redirected = {}
  server = _Server(folder)
  for info in builder_cls.url_infos.values():  # TFDS's registry: needs importlib_resources
    raw = (folder / info.filename).read_bytes()
    redirected[f"{server.url}/{info.filename}"] = checksums.UrlInfo(
        size=len(raw), checksum=hashlib.sha256(raw).hexdigest(), filename=info.filename)
  monkeypatch.setattr(builder_cls, "url_infos", redirected)
  tfds_images.clear_cache()
  return server


@pytest.fixture
def idx_server(tmp_path, monkeypatch):
  """TFDS's mnist files (small ones of the same format) served on 127.0.0.1."""
  arrays = write_idx(tmp_path / "served")
  server = serve_tfds_files(monkeypatch, "mnist", tmp_path / "served")
  assert len(server.sent) == 0 and len(list((tmp_path / "served").iterdir())) == 4
  yield server, arrays
  server.close()
  tfds_images.clear_cache()


def test_default_mnist_path_downloads_with_tfds_and_builds_without_tensorflow(idx_server,
                                                                             tmp_path):
  """``name=mnist`` without ``data_dir``, as a user with internet runs it: TFDS's download
  manager fetches TFDS's files (from 127.0.0.1 here), checks their sums, and they are read
  without TensorFlow; a second read does not download again; the content is pinned like the
  same files given as ``data_dir``."""
  server, (x_tr, _, _, y_te) = idx_server
  cfg = {"name": "mnist", "tfds_dir": str(tmp_path / "tfds"), "classes": "all"}
  ds = datasets.get_dataset(cfg)
  assert sorted(server.sent) == sorted(f"/{f.name}" for f in (tmp_path / "served").iterdir())
  assert ds.num_classes == 10
  np.testing.assert_array_equal(ds.x_train, x_tr / np.float32(255))
  np.testing.assert_array_equal(ds.y_test, y_te)
  assert list((tmp_path / "tfds" / "downloads" / "mnist").glob("127.0.0.1_*train-images-idx3*"))
  tfds_images.clear_cache()
  server.sent.clear()
  pinned = datasets.pin(cfg)["fingerprint"]
  assert not server.sent  # downloaded once
  assert pinned == datasets.pin({"name": "mnist", "data_dir": str(tmp_path / "served"),
                                 "tfds_dir": str(tmp_path / "tfds")})["fingerprint"]


def test_default_mnist_path_refuses_files_that_fail_tfds_checksums(idx_server, tmp_path):
  del idx_server
  write_idx(tmp_path / "served", seed=3)  # the server now sends other bytes
  with pytest.raises(ValueError, match=r"^name='mnist': cannot download TFDS's original files "
                                       r".*NonMatchingChecksumError"):
    datasets.get_dataset({"name": "mnist", "tfds_dir": str(tmp_path / "tfds")})


def test_default_cifar10_path_downloads_tfds_tarball(tmp_path, monkeypatch):
  """``name=cifar10`` without ``data_dir``: TFDS's ``cifar-10-binary.tar.gz`` (a tarball of
  that name served here) is fetched once and read directly."""
  from sgd_phases.datasets import cifar_tarball
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
  y = np.arange(30) % 10
  (tmp_path / "served").mkdir()
  cifar_tarball.write(tmp_path / "served" / "cifar-10-binary.tar.gz", x[:20], y[:20], x[20:],
                      y[20:])
  server = serve_tfds_files(monkeypatch, "cifar10", tmp_path / "served")
  try:
    ds = datasets.get_dataset({"name": "cifar10", "tfds_dir": str(tmp_path / "tfds"),
                               "classes": "all"})
  finally:
    server.close()
    tfds_images.clear_cache()
  assert server.sent == ["/cifar-10-binary.tar.gz"]
  np.testing.assert_array_equal(ds.x_train, x[:20] / np.float32(255))
  np.testing.assert_array_equal(ds.y_test, y[20:])


def test_npz_in_a_bucket_rewritten_is_read_again(gcs_bucket):
  """Bucket objects are cached by their generation: a rewrite under the same name (same size)
  is read again and pinned anew, never answered from memory."""
  from etils import epath
  folder = epath.Path(f"{gcs_bucket}/npz-rewrite")
  rng = np.random.default_rng(0)

  def write(seed):
    for f, n in (("train.npz", 40), ("test.npz", 20)):
      buf = io.BytesIO()
      np.savez(buf, x=np.random.default_rng(seed).random((n, 3)), y=rng.integers(0, 2, n))
      (folder / f).write_bytes(buf.getvalue())

  write(1)
  cfg = {"name": "npz", "data_dir": str(folder)}
  first = datasets.pin(cfg)["fingerprint"]
  assert datasets.pin(cfg)["fingerprint"] == first
  write(2)
  assert datasets.pin(cfg)["fingerprint"] != first
