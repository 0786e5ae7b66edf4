"""The local GCS emulator (tests/gcs_emulator.py) works for epath, raw JSON API, Orbax, children."""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from gcs_emulator import GcsEmulator, configure_env, restore_env

BUCKET = "emu-bucket"


@pytest.fixture(scope="module")
def gcs():
  with GcsEmulator() as emulator:
    emulator.create_bucket(BUCKET)
    old = configure_env(emulator.host)
    try:
      yield emulator
    finally:
      restore_env(old)


def _api(gcs, method, path, query=None, data=None, headers=None):
  """(status, headers, body) of a raw request to the emulator."""
  url = gcs.host + path + ("?" + urllib.parse.urlencode(query) if query else "")
  req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
  try:
    with urllib.request.urlopen(req, timeout=10) as resp:
      return resp.status, resp.headers, resp.read()
  except urllib.error.HTTPError as err:
    return err.code, err.headers, err.read()


def _upload(gcs, name, data, **query):
  return _api(gcs, "POST", f"/upload/storage/v1/b/{BUCKET}/o",
              {"uploadType": "media", "name": name, **query}, data,
              {"Content-Type": "application/octet-stream"})


def _quote(name):
  return urllib.parse.quote(name, safe="")


def test_epath_roundtrip(gcs):
  from etils import epath

  root = epath.Path(f"gs://{BUCKET}/epath")
  path = root / "a" / "b.json"
  path.write_text(json.dumps({"x": 1}))
  (root / "a" / "c.txt").write_text("c")
  assert path.exists() and not (root / "a" / "missing.json").exists()
  assert json.loads(path.read_text()) == {"x": 1}
  assert sorted(p.name for p in (root / "a").iterdir()) == ["b.json", "c.txt"]
  assert [p.name for p in (root / "a").glob("*.json")] == ["b.json"]
  assert (root / "a").is_dir()

  renamed = root / "a" / "renamed.json"
  path.rename(renamed)  # gcsfs mv -> moveTo
  assert not path.exists() and json.loads(renamed.read_text()) == {"x": 1}

  root.rmtree()
  assert not root.exists() and not renamed.exists()


def test_gcsfs_basics(gcs):
  import gcsfs

  fs = gcsfs.GCSFileSystem()
  fs.pipe(f"{BUCKET}/fs/one.bin", b"1")
  fs.pipe(f"{BUCKET}/fs/sub/two.bin", b"22")
  assert fs.cat(f"{BUCKET}/fs/sub/two.bin") == b"22"
  assert fs.cat_file(f"{BUCKET}/fs/sub/two.bin", start=1, end=2) == b"2"
  assert sorted(fs.ls(f"{BUCKET}/fs")) == [f"{BUCKET}/fs/one.bin", f"{BUCKET}/fs/sub"]
  assert fs.glob(f"{BUCKET}/fs/*.bin") == [f"{BUCKET}/fs/one.bin"]
  assert fs.exists(f"{BUCKET}/fs/sub") and fs.info(f"{BUCKET}/fs/one.bin")["size"] == 1
  fs.mv(f"{BUCKET}/fs/one.bin", f"{BUCKET}/fs/uno.bin")
  assert fs.cat(f"{BUCKET}/fs/uno.bin") == b"1"
  fs.rm(f"{BUCKET}/fs", recursive=True)
  assert not fs.exists(f"{BUCKET}/fs/uno.bin") and not fs.exists(f"{BUCKET}/fs")
  with pytest.raises(FileNotFoundError):
    fs.ls(f"{BUCKET}/fs", refresh=True)


def test_list_offsets(gcs):
  for name in ["r/a", "r/b", "r/c", "r/d"]:
    assert _upload(gcs, name, b"x")[0] == 200
  status, _, body = _api(gcs, "GET", f"/storage/v1/b/{BUCKET}/o",
                         {"prefix": "r/", "startOffset": "r/b", "endOffset": "r/d"})
  assert status == 200
  assert [o["name"] for o in json.loads(body)["items"]] == ["r/b", "r/c"]
  status, _, body = _api(gcs, "GET", f"/storage/v1/b/{BUCKET}/o", {"startOffset": "r/c"})
  assert [o["name"] for o in json.loads(body)["items"] if o["name"].startswith("r/")] == ["r/c", "r/d"]


def test_tensorstore_delete_range_keeps_other_keys(gcs):
  """tensorstore's DeleteRange lists [start, end) by offsets; ignoring them wiped the bucket."""
  import tensorstore as ts

  kv = ts.KvStore.open({"driver": "gcs", "bucket": BUCKET, "path": "ts/"}).result()
  for key in ["a/1", "b/1", "b/2", "c/1"]:
    kv.write(key, b"x").result()
  kv.delete_range(ts.KvStore.KeyRange("b/", "b0")).result()
  assert sorted(kv.list().result()) == [b"a/1", b"c/1"]
  arr = ts.open({"driver": "zarr", "kvstore": {"driver": "gcs", "bucket": BUCKET, "path": "ts/z/"}},
                create=True, delete_existing=True, dtype=ts.float32, shape=[3]).result()
  arr.write(np.arange(3, dtype=np.float32)).result()
  np.testing.assert_array_equal(arr.read().result(), np.arange(3))
  assert sorted(kv.list().result()) == [b"a/1", b"c/1", b"z/.zarray", b"z/0"]


def test_generation_header_and_preconditions(gcs):
  status, _, body = _upload(gcs, "g/obj", b"v1")
  gen = json.loads(body)["generation"]
  for path in [f"/download/storage/v1/b/{BUCKET}/o/{_quote('g/obj')}",
               f"/storage/v1/b/{BUCKET}/o/{_quote('g/obj')}"]:
    status, headers, body = _api(gcs, "GET", path, {"alt": "media"})
    assert (status, body, headers["x-goog-generation"]) == (200, b"v1", gen)

  assert _upload(gcs, "g/obj", b"v2", ifGenerationMatch="0")[0] == 412  # exists
  assert _upload(gcs, "g/obj", b"v2", ifGenerationMatch="123")[0] == 412
  assert _upload(gcs, "g/new", b"n", ifGenerationMatch="7")[0] == 412  # does not exist
  assert _upload(gcs, "g/new", b"n", ifGenerationMatch="0")[0] == 200
  status, _, body = _upload(gcs, "g/obj", b"v2", ifGenerationMatch=gen)
  assert status == 200 and json.loads(body)["generation"] != gen
  obj_path = f"/storage/v1/b/{BUCKET}/o/{_quote('g/obj')}"
  assert _api(gcs, "GET", obj_path, {"alt": "media"})[2] == b"v2"
  assert _api(gcs, "GET", obj_path, {"alt": "media", "ifGenerationMatch": gen})[0] == 412
  new_gen = json.loads(_api(gcs, "GET", obj_path)[2])["generation"]
  assert _api(gcs, "GET", obj_path, {"alt": "media", "ifGenerationNotMatch": new_gen})[0] == 304
  assert _api(gcs, "DELETE", obj_path, {"ifGenerationMatch": gen})[0] == 412
  assert _api(gcs, "DELETE", obj_path, {"ifGenerationMatch": new_gen})[0] in (200, 204)
  assert _api(gcs, "GET", obj_path)[0] == 404


def test_move_to(gcs):
  """objects.move, which gcsfs mv (epath rename) tries first; a 501 costs ~30 s of retries."""
  gen = json.loads(_upload(gcs, "m/src", b"payload")[2])["generation"]
  move = f"/storage/v1/b/{BUCKET}/o/{_quote('m/src')}/moveTo/o/{_quote('m/dst')}"
  assert _api(gcs, "POST", move, {"ifSourceGenerationMatch": "1"})[0] == 412
  status, _, body = _api(gcs, "POST", move, {"ifSourceGenerationMatch": gen})
  assert status == 200 and json.loads(body)["name"] == "m/dst"
  assert _api(gcs, "GET", f"/storage/v1/b/{BUCKET}/o/{_quote('m/src')}")[0] == 404
  assert _api(gcs, "GET", f"/storage/v1/b/{BUCKET}/o/{_quote('m/dst')}", {"alt": "media"})[2] == b"payload"
  assert _api(gcs, "POST", move)[0] == 404  # source is gone


def test_orbax_checkpoint_manager(gcs):
  import jax.numpy as jnp
  import orbax.checkpoint as ocp
  from etils import epath

  survivor = epath.Path(f"gs://{BUCKET}/zzz_other.txt")
  survivor.write_text("keep me")
  before = epath.Path(f"gs://{BUCKET}/aaa_other.txt")
  before.write_text("keep me too")
  directory = epath.Path(f"gs://{BUCKET}/ckpt")
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
  with ocp.CheckpointManager(directory, options=options) as mngr:
    for step in range(3):
      tree = {"w": jnp.arange(6.0).reshape(2, 3) + step, "b": {"c": np.int32(step)}}
      mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                              meta=ocp.args.JsonSave({"step": step})))
    mngr.wait_until_finished()
    assert mngr.latest_step() == 2 and mngr.all_steps() == [2]
  with ocp.CheckpointManager(directory, options=options) as mngr:
    assert mngr.all_steps() == [2]
    abstract = {"w": jax_struct((2, 3), jnp.float32), "b": {"c": jax_struct((), np.int32)}}
    restored = mngr.restore(mngr.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
  np.testing.assert_array_equal(restored["state"]["w"], np.arange(6.0).reshape(2, 3) + 2)
  assert int(restored["state"]["b"]["c"]) == 2 and restored["meta"] == {"step": 2}
  assert sorted(p.name for p in directory.iterdir()) == ["2"]
  assert survivor.read_text() == "keep me" and before.read_text() == "keep me too"


def jax_struct(shape, dtype):
  import jax
  return jax.ShapeDtypeStruct(shape, dtype)


def test_stop_releases_port():
  import socket

  with GcsEmulator() as other:
    port = int(other.host.rsplit(":", 1)[1])
    other.create_bucket("x-bucket")
    assert _api(other, "GET", "/storage/v1/b/x-bucket")[0] == 200
  with socket.socket() as sock:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))


def test_child_process_reads_parent_object(gcs):
  from etils import epath

  epath.Path(f"gs://{BUCKET}/child/msg.txt").write_text("from parent")
  code = ("from etils import epath; import sys; "
          f"p = epath.Path('gs://{BUCKET}/child/msg.txt'); sys.stdout.write(p.read_text()); "
          f"epath.Path('gs://{BUCKET}/child/reply.txt').write_text('from child')")
  out = subprocess.run([sys.executable, "-c", code], env={**os.environ, **gcs.env()},
                       capture_output=True, text=True, timeout=60, check=True)
  assert out.stdout == "from parent"
  assert epath.Path(f"gs://{BUCKET}/child/reply.txt").read_text() == "from child"
