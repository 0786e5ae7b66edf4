"""Your data: arrays in memory, a folder of .npz files, any TFDS dataset by name (a builder faked
locally), and CIFAR-10 from the original python tarball (generated here in that format)."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import finished_run
import numpy as np
import pytest

from experiments import linear_phase
from sgd_phases import config_lib, datasets, train_lib
from sgd_phases.datasets import cifar_tarball, tfds_images

ROOT = Path(__file__).resolve().parents[1]


def _blobs(n: int, seed: int, d: int = 6) -> tuple[np.ndarray, np.ndarray]:
  """A task with a linear part and a nonlinear part (labels 0/1)."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, d)).astype(np.float32)
  return x, (x[:, 0] + 0.5 * x[:, 1] ** 2 - 0.5 > 0).astype(np.int64)


def _quick():
  c = linear_phase.get_config("quick")
  c.progress = False
  return c


# ----------------------------------------------------------------------------- arrays in memory
def test_arrays_in_memory_train_and_are_identified_by_content(tmp_path):
  (xtr, ytr), (xte, yte) = _blobs(1500, 0), _blobs(400, 1)
  data = datasets.from_arrays(xtr, ytr, xte, yte)
  assert data.num_classes == 2
  s = linear_phase.run(_quick(), str(tmp_path / "run"), dataset=data)
  assert s["dataset"] == "arrays" and s["test_acc_end"]["mean"] > 0.85  # it learned them
  assert s["identity"]["config"]["dataset"]["fingerprint"] == data.fingerprint
  # the same arrays again: the finished run is returned (same numbers), nothing retrained
  again = linear_phase.run(_quick(), str(tmp_path / "run"), dataset=datasets.from_arrays(
      xtr.copy(), ytr.copy(), xte, yte))
  assert again["test_acc_end"] == s["test_acc_end"]
  # other arrays in the same workdir: refused, naming the content hash
  other = datasets.from_arrays(xtr[::-1].copy(), ytr[::-1].copy(), xte, yte)
  assert other.fingerprint != data.fingerprint
  with pytest.raises(ValueError, match=r"dataset\.fingerprint"):
    linear_phase.run(_quick(), str(tmp_path / "run"), dataset=other)


def test_train_accepts_arrays_and_keeps_the_configs_common_fields(tmp_path):
  (xtr, ytr), (xte, yte) = _blobs(600, 2), _blobs(200, 3)
  c = config_lib.base_config("sinusoid_hd", "mlp", width=16)
  c.num_seeds, c.num_steps, c.batch_size, c.progress = 2, 60, 32, False
  c.eval.num_points, c.checkpoint_every = 4, 0
  c.dataset.label_noise, c.dataset.train_size = 0.2, 400
  c.t0.reference = ""  # no reference: F alone
  data = datasets.from_arrays(xtr, ytr, xte, yte)
  res = train_lib.train(c, str(tmp_path), dataset=data)
  assert float(res.arrays["test_acc"][:, -1].mean()) > 0.75
  import json
  stored = json.loads((tmp_path / "config.json").read_text())["dataset"]
  assert stored == {**stored, "name": "arrays", "fingerprint": data.fingerprint,
                    "label_noise": 0.2, "train_size": 400}
  ds = datasets.get_dataset(stored)  # what the run trained on: 400 examples, ~20% flipped
  assert ds.x_train.shape == (400, 6) and 0.1 < ds.flipped.mean() < 0.3
  assert c.dataset.name == "sinusoid_hd"  # the caller's config is not changed


def test_uint8_arrays_become_unit_floats_and_classes_group():
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (90, 4, 4, 1), dtype=np.uint8)
  y = np.arange(90) % 3
  data = datasets.from_arrays(x, y, x[:30], y[:30])
  ds = datasets.get_dataset(data.config(classes=[[0], [1, 2]]))
  np.testing.assert_allclose(ds.x_train, x.astype(np.float32) / 255)
  np.testing.assert_array_equal(ds.y_train, (y > 0).astype(np.int32))
  assert ds.num_classes == 2


@pytest.mark.parametrize("args, field", [
    (lambda x, y: (x, y[:-1], x, y), "y_train"),
    (lambda x, y: (x, y, x[:, :3], y), "x_test"),
    (lambda x, y: (x, y.astype(np.float32), x, y), "y_train"),
    (lambda x, y: (x, y, x, y - 1), "y_test"),
    (lambda x, y: (x[:, 0], y, x, y), "x_train"),
])
def test_bad_arrays_name_the_argument(args, field):
  x, y = _blobs(20, 0)
  with pytest.raises(ValueError, match=rf"^{field}"):
    datasets.from_arrays(*args(x, y))


def test_bad_num_classes_and_unknown_arrays_are_named():
  x, y = _blobs(20, 0)
  with pytest.raises(ValueError, match=r"^num_classes=1 must be an integer >= 2"):
    datasets.from_arrays(x, y, x, y, num_classes=1)
  with pytest.raises(ValueError, match=r"^y_train: label 2 is not below num_classes=2"):
    datasets.from_arrays(x, y + 1, x, y, num_classes=2)
  with pytest.raises(ValueError, match=r"^fingerprint='0123'"):
    datasets.get_dataset({"name": "arrays", "fingerprint": "0123"})
  with pytest.raises(ValueError, match=r"^dataset: expected the result of datasets.from_arrays"):
    datasets.with_data(_quick(), (x, y))


# ----------------------------------------------------------------------------- a folder of .npz
def _write_npz(folder: Path, seed: int = 0) -> tuple[np.ndarray, ...]:
  folder.mkdir(parents=True, exist_ok=True)
  (xtr, ytr), (xte, yte) = _blobs(1500, seed), _blobs(400, seed + 1)
  np.savez(folder / "train.npz", x=xtr, y=ytr)
  np.savez(folder / "test.npz", x=xte, y=yte)
  return xtr, ytr, xte, yte


def test_npz_folder_reads_like_the_same_arrays_and_pins_their_content(tmp_path):
  arrays = _write_npz(tmp_path / "d")
  cfg = {"name": "npz", "data_dir": str(tmp_path / "d"), "train_size": 300}
  pinned = datasets.pin(cfg)
  assert pinned["fingerprint"] == datasets.from_arrays(*arrays).fingerprint  # same content hash
  a = datasets.get_dataset(cfg)
  b = datasets.get_dataset(datasets.from_arrays(*arrays).config(train_size=300))
  np.testing.assert_array_equal(a.x_train, b.x_train)
  np.testing.assert_array_equal(a.y_test, b.y_test)
  _write_npz(tmp_path / "d", seed=5)  # the files change under the same path
  with pytest.raises(ValueError, match=r"^fingerprint=.*they changed"):
    datasets.get_dataset(pinned)
  assert datasets.pin(cfg)["fingerprint"] != pinned["fingerprint"]


def test_npz_bad_folder_names_data_dir(tmp_path):
  with pytest.raises(ValueError, match=r"^data_dir=None"):
    datasets.get_dataset({"name": "npz"})
  (tmp_path / "e").mkdir()
  with pytest.raises(ValueError, match=r"^data_dir=.*lacks \['train.npz', 'test.npz'\]"):
    datasets.get_dataset({"name": "npz", "data_dir": str(tmp_path / "e")})
  np.savez(tmp_path / "e" / "train.npz", inputs=np.zeros((4, 2)), y=np.zeros(4, int))
  np.savez(tmp_path / "e" / "test.npz", x=np.zeros((4, 2)), y=np.zeros(4, int))
  with pytest.raises(ValueError, match=r"^data_dir='.*/e': train.npz holds \['inputs', 'y'\]"):
    datasets.get_dataset({"name": "npz", "data_dir": str(tmp_path / "e")})


@pytest.mark.parametrize("content", [
    b"garbage, not a zip file" * 10,                 # numpy: "...pickled data..." before
    b"PK\x03\x04" + b"\x00" * 60,                   # a truncated zip
    None,                                             # an object array (pickled inside the npz)
])
def test_unreadable_npz_names_data_dir_and_the_file(tmp_path, content):
  _write_npz(tmp_path / "d")
  if content is None:
    np.savez(tmp_path / "d" / "train.npz", x=np.array([[None]] * 4), y=np.zeros(4, int))
  else:
    (tmp_path / "d" / "train.npz").write_bytes(content)
  for call in (datasets.get_dataset, datasets.pin):
    with pytest.raises(ValueError, match=r"^data_dir='.*/d': train.npz is not a readable .npz"):
      call({"name": "npz", "data_dir": str(tmp_path / "d")})


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_refused_up_front_naming_the_array(tmp_path, bad):
  (xtr, ytr), (xte, yte) = _blobs(50, 0), _blobs(20, 1)
  x = xtr.copy()
  x[7, 2] = bad
  with pytest.raises(ValueError, match=r"^x_train: 1 values are NaN or infinite \(the first "
                                       r"in example 7\)"):
    datasets.from_arrays(x, ytr, xte, yte)
  x = xte.astype(np.float64)
  x[3:5] = bad
  with pytest.raises(ValueError, match=r"^x_test: 12 values are NaN or infinite \(the first "
                                       r"in example 3\)"):
    datasets.from_arrays(xtr, ytr, x, yte)
  (tmp_path / "d").mkdir()
  np.savez(tmp_path / "d" / "train.npz", x=xtr, y=ytr)
  np.savez(tmp_path / "d" / "test.npz", x=x, y=yte)
  with pytest.raises(ValueError, match=r"^x_test: 12 values are NaN"):
    datasets.get_dataset({"name": "npz", "data_dir": str(tmp_path / "d")})


def test_with_data_keeps_the_configs_classes():
  """10-class arrays on an MNIST task (``classes=first5_vs_last5``): K = 2, labels grouped as
  label > 4 (``classes`` used to be dropped: K = 10)."""
  rng = np.random.default_rng(0)
  x, y = rng.random((300, 4)).astype(np.float32), np.arange(300) % 10
  data = datasets.from_arrays(x[:200], y[:200], x[200:], y[200:])
  c = config_lib.base_config("mnist", "mlp")
  assert c.dataset.classes == "first5_vs_last5"
  c.dataset.label_noise = 0.1
  pinned = datasets.with_data(c, data)
  assert pinned.dataset.classes == "first5_vs_last5" and pinned.dataset.label_noise == 0.1
  ds = datasets.get_dataset(pinned.dataset)
  assert ds.num_classes == 2
  np.testing.assert_array_equal(ds.y_train_clean, y[:200] > 4)
  np.testing.assert_array_equal(ds.y_test, y[200:] > 4)
  c.dataset.classes = "[[0], [1, 2]]"  # explicit groups: other classes dropped
  ds = datasets.get_dataset(datasets.with_data(c, data).dataset)
  assert ds.num_classes == 2 and len(ds.y_test) == 30
  c.dataset.classes = "first5_vs_last5"
  two = datasets.from_arrays(*_blobs(20, 0), *_blobs(20, 1))
  with pytest.raises(ValueError, match=r"^classes='first5_vs_last5' needs 10 classes"):
    datasets.get_dataset(datasets.with_data(c, two).dataset)


def test_dataset_name_flag_switches_the_dataset_section(tmp_path):
  """``--config.dataset.name=npz`` gives the config npz's fields (common ones kept), so that
  ``--config.dataset.data_dir`` can follow; the README runs that command end to end
  (tests/test_readme.py) and a run on changed files is refused like changed arrays above."""
  from sgd_phases import cli
  argv = ["--config=experiments/linear_phase.py:quick", "--config.dataset.name=npz",
          "--config.dataset.data_dir=/d", "--workdir=w"]
  c, spec, rest = cli.prepare_config(argv, str(ROOT / "experiments/linear_phase.py"))
  assert spec == "experiments/linear_phase.py:quick"
  assert rest == argv[2:]  # the file and the switch are consumed, the overrides stay
  assert c.dataset.name == "npz" and "data_dir" in c.dataset and "fingerprint" in c.dataset
  assert c.num_steps == linear_phase.get_config("quick").num_steps  # ":quick" was applied
  _write_npz(tmp_path / "d")
  c.dataset.data_dir = str(tmp_path / "d")
  pinned = datasets.with_data(c, None).dataset.fingerprint
  _write_npz(tmp_path / "d", seed=7)
  assert datasets.with_data(c, None).dataset.fingerprint != pinned  # identity follows content


# ----------------------------------------------------------------------------- tfds:<name>
def _fake_builder_class():
  """A TFDS builder with two configs whose images are PNG-encoded (as real TFDS image datasets
  are), prepared locally: nothing is downloaded."""
  import tensorflow_datasets as tfds
  from PIL import Image

  class FakeShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="small"),
                       tfds.core.BuilderConfig(name="other")]

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(8, 8, 3)),
          "label": tfds.features.ClassLabel(num_classes=4),
          "coarse": tfds.features.ClassLabel(num_classes=2)}),
          disable_shuffling=True)  # keep the generated order (TFDS shuffles by key)

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples(240, 0), "test": self._generate_examples(80, 1)}

    def _generate_examples(self, n, seed):
      for i, (img, label) in enumerate(zip(*fake_images(n, seed))):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        yield i, {"image": buf.getvalue(), "label": int(label), "coarse": int(label) // 2}

  return FakeShapes


def fake_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """uint8 [n, 8, 8, 3] images whose mean brightness encodes the label (0..3)."""
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 4
  base = (labels * 50 + 30)[:, None, None, None]
  return np.clip(base + rng.integers(-25, 26, (n, 8, 8, 3)), 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def fake_tfds(tmp_path_factory):
  root = tmp_path_factory.mktemp("tfds")
  builder = _fake_builder_class()(config="small", data_dir=str(root),
                                  file_format="array_record")
  builder.download_and_prepare()
  yield str(root)
  tfds_images.clear_cache()


def test_any_tfds_dataset_by_name(fake_tfds):
  x_tr, y_tr = fake_images(240, 0)
  ds = datasets.get_dataset({"name": "tfds:fake_shapes/small", "tfds_dir": fake_tfds})
  assert ds.num_classes == 4 and ds.input_shape == (8, 8, 3)
  np.testing.assert_allclose(ds.x_train, x_tr / np.float32(255), atol=1e-7)  # PNG is lossless
  np.testing.assert_array_equal(ds.y_train, y_tr)
  grouped = datasets.get_dataset({"name": "tfds:fake_shapes/small", "tfds_dir": fake_tfds,
                                  "classes": [[0, 1], [2, 3]], "train_size": 100,
                                  "label_noise": 0.1})
  assert grouped.num_classes == 2 and grouped.x_train.shape[0] == 100
  np.testing.assert_array_equal(np.bincount(grouped.y_train_clean), [50, 50])
  coarse = datasets.get_dataset({"name": "tfds:fake_shapes/small", "tfds_dir": fake_tfds,
                                 "label_key": "coarse"})
  np.testing.assert_array_equal(coarse.y_train, y_tr // 2)


def test_tfds_dataset_feeds_a_quick_run(fake_tfds, tmp_path):
  c = _quick()
  c.dataset = datasets.default_config("tfds:fake_shapes/small")
  c.dataset.tfds_dir = fake_tfds
  s = linear_phase.run(c, str(tmp_path))
  assert s["dataset"] == "tfds:fake_shapes/small" and s["test_acc_end"]["mean"] > 0.6  # K=4


@pytest.mark.parametrize("fields, pattern", [
    ({"image_key": "img"}, r"^image_key='img': TFDS dataset 'fake_shapes/small' has the "
                           r"features \['coarse', 'image', 'label'\]"),
    ({"test_split": "validation"}, r"^test_split='validation'"),
    ({"classes": [[0, 7]]}, r"^classes="),
    ({"name": "tfds:fake_shapes/no_such_config"}, r"^name='tfds:fake_shapes/no_such_config'"),
    ({"label_key": "image"}, (r"^label_key='image': Image is not a ClassLabel of TFDS dataset "
                              r"'fake_shapes/small'$")),  # the name, not a literal {name!r}
])
def test_tfds_bad_fields_are_named(fake_tfds, fields, pattern):
  with pytest.raises(ValueError, match=pattern):
    datasets.get_dataset({"name": "tfds:fake_shapes/small", "tfds_dir": fake_tfds, **fields})


def test_tfds_dataset_is_pinned_by_name_version_and_splits(fake_tfds):
  """A ``tfds:`` dataset's fingerprint names what TFDS provides: its full name (config and
  version), the splits and features read, and the prepared copy's dataset_info.json."""
  cfg = {"name": "tfds:fake_shapes/small", "tfds_dir": fake_tfds}
  pinned = datasets.pin(cfg)["fingerprint"]
  assert len(pinned) == 16 and datasets.pin(cfg)["fingerprint"] == pinned  # stable
  others = {datasets.pin({**cfg, **f})["fingerprint"] for f in (
      {"train_split": "train[:50%]"}, {"test_split": "train"}, {"label_key": "coarse"})}
  assert pinned not in others and len(others) == 3
  with pytest.raises(ValueError, match=r"^fingerprint='0000000000000000': the data read from "
                                       r"tfds_dir="):
    datasets.get_dataset({**cfg, "fingerprint": "0" * 16})


# ----------------------------------------------------------------------------- CIFAR-10 tarball
def _planar_batch(images: np.ndarray, labels: np.ndarray) -> bytes:
  """One batch as the CIFAR-10 page describes it, built here independently of the library:
  row i = 1024 red values, then 1024 green, then 1024 blue, each image row by row."""
  n = images.shape[0]
  data = np.empty((n, 3072), np.uint8)
  for i in range(n):
    for ch in range(3):
      for r in range(32):
        data[i, ch * 1024 + r * 32: ch * 1024 + (r + 1) * 32] = images[i, r, :, ch]
  return pickle.dumps({b"batch_label": b"x", b"labels": [int(v) for v in labels], b"data": data,
                       b"filenames": [b"f.png"] * n}, protocol=2)


def _cifar_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 10
  x = rng.integers(0, 40, (n, 32, 32, 3)) + (labels * 20)[:, None, None, None]
  x[:, :, :, 0] += np.arange(32)[None, :, None]  # rows differ from columns: a swap shows
  return x.astype(np.uint8), labels


def _tarball(path: Path, n_train: int = 500, n_test: int = 200) -> tuple[np.ndarray, ...]:
  (xtr, ytr), (xte, yte) = _cifar_like(n_train, 0), _cifar_like(n_test, 1)
  parts = np.array_split(np.arange(n_train), 5)
  with tarfile.open(path, "w:gz") as tar:
    for name, data in [*[(f"data_batch_{k + 1}", _planar_batch(xtr[p], ytr[p]))
                         for k, p in enumerate(parts)],
                       ("test_batch", _planar_batch(xte, yte))]:
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return xtr, ytr, xte, yte


def test_cifar10_tarball_is_read_in_the_original_layout(tmp_path):
  expected = _tarball(tmp_path / cifar_tarball.TARBALL)
  for location in (tmp_path, tmp_path / cifar_tarball.TARBALL):  # the folder or the file
    for got, want in zip(cifar_tarball.read(location), expected):
      np.testing.assert_array_equal(got, want)
  with tarfile.open(tmp_path / cifar_tarball.TARBALL) as tar:  # the extracted folder
    tar.extractall(tmp_path / "x", filter="data")
  np.testing.assert_array_equal(cifar_tarball.read(tmp_path / "x")[0], expected[0])
  cifar_tarball.write(tmp_path / "w" / "c.tar.gz", *expected)  # the writer round-trips
  for got, want in zip(cifar_tarball.read(tmp_path / "w" / "c.tar.gz"), expected):
    np.testing.assert_array_equal(got, want)


def test_cifar10_tarball_feeds_a_quick_run(tmp_path):
  _tarball(tmp_path / cifar_tarball.TARBALL, n_train=1000, n_test=300)
  c = _quick()
  c.dataset = datasets.default_config("cifar10")
  c.dataset.data_dir = str(tmp_path)
  c.optimizer.learning_rate = 0.01  # 3072 uncentred inputs in [0, 1]
  tfds_images.clear_cache()
  s = linear_phase.run(c, str(tmp_path / "run"))
  assert s["dataset"] == "cifar10" and s["test_acc_end"]["mean"] > 0.9  # brightness ~ label
  tfds_images.clear_cache()


def test_cifar10_tarball_refuses_code_and_bad_files(tmp_path):
  class Evil:
    def __reduce__(self):
      return (os.system, ("echo pwned",))

  bad = tmp_path / "evil"
  bad.mkdir()
  for name in (*cifar_tarball.TRAIN_BATCHES, cifar_tarball.TEST_BATCH):
    (bad / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
  with pytest.raises(ValueError, match=r"^data_dir: data_batch_1 is not a CIFAR-10 python batch"):
    cifar_tarball.read(bad)
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match=r"^data_dir=.*holds neither cifar-10-python.tar.gz"):
    cifar_tarball.read(tmp_path / "empty")
  (tmp_path / "t.tar.gz").write_bytes(b"not a tarball")
  with pytest.raises(ValueError, match=r"^data_dir: .*is not a readable cifar-10-python.tar.gz"):
    cifar_tarball.read(tmp_path / "t.tar.gz")
  with pytest.raises(ValueError, match=r"^data_dir=.*does not exist"):
    cifar_tarball.read(tmp_path / "nowhere")


def _binary_tarball(path: Path, x_train, y_train, x_test, y_test) -> None:
  """The binary version's layout (cifar-10-binary.tar.gz, what TFDS downloads), built here
  from the page's description: records of a label byte and the 3072 planar image bytes."""
  def batch(x, y):
    planes = x.transpose(0, 3, 1, 2).reshape(len(y), 3072)
    return np.concatenate([y[:, None].astype(np.uint8), planes], axis=1).tobytes()

  parts = np.array_split(np.arange(len(y_train)), 5)
  with tarfile.open(path, "w:gz") as tar:
    for name, data in [*[(f"data_batch_{k + 1}.bin", batch(x_train[p], y_train[p]))
                         for k, p in enumerate(parts)], ("test_batch.bin", batch(x_test, y_test))]:
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_cifar10_binary_tarball_reads_like_the_python_one(tmp_path):
  expected = _tarball(tmp_path / cifar_tarball.TARBALL)
  (tmp_path / "bin").mkdir()
  _binary_tarball(tmp_path / "bin" / cifar_tarball.BINARY_TARBALL, *expected)
  for location in (tmp_path / "bin", tmp_path / "bin" / cifar_tarball.BINARY_TARBALL):
    for got, want in zip(cifar_tarball.read(location), expected):
      np.testing.assert_array_equal(got, want)
  with tarfile.open(tmp_path / "bin" / cifar_tarball.BINARY_TARBALL) as tar:
    tar.extractall(tmp_path / "x", filter="data")
  np.testing.assert_array_equal(cifar_tarball.read(tmp_path / "x")[0], expected[0])
  with tarfile.open(tmp_path / "cut.tar.gz", "w:gz") as tar:  # records cut short
    info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
    info.size = 3073 * 2 + 5
    tar.addfile(info, io.BytesIO(bytes(info.size)))
    for k in range(1, 6):
      info = tarfile.TarInfo(f"cifar-10-batches-bin/data_batch_{k}.bin")
      info.size = 3073
      tar.addfile(info, io.BytesIO(bytes(3073)))
  with pytest.raises(ValueError, match=r"^data_dir: test_batch holds 6151 bytes, not a whole"):
    cifar_tarball.read(tmp_path / "cut.tar.gz")


class _Declared:
  """Pickles as numpy's ``_reconstruct(ndarray, shape, dtype)``, with the state ``state``
  (None: none, as a tampered file may leave it) -- an array the file declares."""

  def __init__(self, shape, state=None):
    self.shape, self.state = shape, state

  def __reduce__(self):
    rebuild = (np._core.multiarray._reconstruct, (np.ndarray, self.shape, np.dtype("u1")))
    return rebuild if self.state is None else (*rebuild, self.state)


def _declared_tarball(path: Path, data) -> None:
  batch = pickle.dumps({b"data": data, b"labels": [0] * 20_000}, protocol=2)
  with tarfile.open(path, "w:gz") as tar:
    for name in (*cifar_tarball.TRAIN_BATCHES, cifar_tarball.TEST_BATCH):
      info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
      info.size = len(batch)
      tar.addfile(info, io.BytesIO(batch))


@pytest.mark.parametrize("data, pattern", [
    (_Declared((20_000, 3072)), "declares an array without its data"),
    (_Declared((0,), (1, (20_000, 3072), np.dtype("u1"), False, bytes(3072))),
     r"declares an array of shape \(20000, 3072\) \(uint8\) but holds 3072 bytes"),
])
def test_cifar10_tarball_declaring_120k_images_is_refused_with_small_memory(tmp_path, data,
                                                                              pattern):
  """A 2 kB tarball whose batches declare 20,000 images each and hold none (or one): refused
  before anything of that size is allocated (it used to return 120,000 images of
  uninitialised memory, and larger declarations ended in an out-of-memory kill)."""
  import tracemalloc
  _declared_tarball(tmp_path / "t.tar.gz", data)
  assert (tmp_path / "t.tar.gz").stat().st_size < 4000
  tracemalloc.start()
  try:
    with pytest.raises(ValueError, match=rf"^data_dir: data_batch_1 {pattern}"):
      cifar_tarball.read(tmp_path / "t.tar.gz")
    peak = tracemalloc.get_traced_memory()[1]
  finally:
    tracemalloc.stop()
  assert peak < 8 << 20  # bytes; one declared batch alone would be 61 MB


def test_cifar10_is_pinned_by_the_batches_bytes(tmp_path):
  """The tarball and its extracted folder are the same content; a changed tarball under the
  same path is another run, refused naming ``dataset.fingerprint``."""
  _tarball(tmp_path / cifar_tarball.TARBALL, n_train=50, n_test=20)
  with tarfile.open(tmp_path / cifar_tarball.TARBALL) as tar:
    tar.extractall(tmp_path / "x", filter="data")
  c = _quick()
  c.dataset = datasets.default_config("cifar10")
  c.dataset.data_dir = str(tmp_path)
  pinned = datasets.pin(c.dataset)["fingerprint"]
  assert datasets.pin({**c.dataset.to_dict(), "data_dir": str(tmp_path / "x")})[
      "fingerprint"] == pinned
  finished_run.refused_after_change(
      c, tmp_path / "run", lambda: _tarball(tmp_path / cifar_tarball.TARBALL, n_train=60,
                                            n_test=20))
