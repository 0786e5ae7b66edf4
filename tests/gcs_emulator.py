"""In-process Google Cloud Storage emulator for tests: ``gcp-storage-emulator`` plus fixes.

    with GcsEmulator() as gcs:        # http://127.0.0.1:<free port>, served from a daemon thread
      gcs.create_bucket("bucket")
      old = configure_env(gcs.host)   # os.environ of this process, inherited by its children
      epath.Path("gs://bucket/x").write_text("hi")
      restore_env(old)

Clients find it through environment variables (``GcsEmulator.env()``): ``STORAGE_EMULATOR_HOST``
and ``FSSPEC_GCS_TOKEN=anon`` for gcsfs (what etils.epath uses for gs:// without TensorFlow),
``TENSORSTORE_GCS_HTTP_URL`` and ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` for tensorstore (Orbax's array
writer), and ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``, which gcsfs reads only *when imported*
(else it tries TLS gRPC against the emulator and hangs); importing this module sets that one with
``os.environ.setdefault``, so import it before anything imports gcsfs. The store is in memory and
lives in the calling process; children reach it over HTTP; ``stop()`` frees the port.

Gaps of the stock emulator filled here (its handlers are wrapped by our own router; the installed
package is not modified):

1. Listings ignored ``startOffset``/``endOffset``. tensorstore's DeleteRange (``delete_range``,
   opening an array with ``delete_existing=True``) lists the range that way and deletes every
   object listed, so it wiped the whole bucket. Items and prefixes are now filtered to
   ``startOffset <= name < endOffset``.
2. ``POST /storage/v1/b/B/o/SRC/moveTo/o/DST`` (gcsfs ``mv``, hence ``epath.Path.rename``)
   answered 501, and gcsfs retried for ~30 s before falling back to copy + delete. Implemented
   as copy + delete, with ``ifSourceGenerationMatch`` and the destination preconditions.
3. Media downloads lacked ``x-goog-generation`` / ``x-goog-metageneration``, the headers from which
   tensorstore takes an object's generation (Orbax restores failed with "Malformed
   StorageGeneration"). Added.
4. Preconditions were ignored. ``ifGenerationMatch`` / ``ifMetagenerationMatch`` now answer 412 on
   a mismatch (``ifGenerationMatch=0``: only if the object does not exist), and
   ``ifGenerationNotMatch`` / ``ifMetagenerationNotMatch`` answer 304 (reads) or 412 (writes) on a
   match; tensorstore's atomic writes (e.g. OCDBT manifests) rely on them. For resumable uploads
   they are checked when the session starts, not when it completes.

Also: a threaded server (stock: one request at a time), with one lock around the non-thread-safe
store; a failing handler answers 500 rather than dropping the connection; ``create_bucket`` turns
soft delete off, so deleted objects are freed; the per-write JSON dump of all metadata (disk
persistence) is skipped. Still missing: paging (``maxResults`` ignored, one page holds all),
suffix ranges (``Range: bytes=-N``), HEAD, preconditions inside batch requests.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import ThreadingHTTPServer

from gcp_storage_emulator import server as _srv
from gcp_storage_emulator.exceptions import Conflict, NotFound
from gcp_storage_emulator.handlers import buckets, objects
from gcp_storage_emulator.storage import Storage

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
logger = logging.getLogger(__name__)
# The stock store logs every 404 (an object probed before it exists) as an ERROR: noise here.
logging.getLogger("gcp_storage_emulator.storage").setLevel(logging.CRITICAL)

_READS = (objects.get, objects.download)
_WRITES = (objects.insert, objects.xml_upload, objects.copy, objects.rewrite, objects.compose,
           objects.patch, objects.delete)
# (query parameter, object field, answer when the object exists and the test fails).
_CONDITIONS = (("ifGenerationMatch", "generation", False),
               ("ifMetagenerationMatch", "metageneration", False),
               ("ifGenerationNotMatch", "generation", True),
               ("ifMetagenerationNotMatch", "metageneration", True))


def _q(req, key):
  vals = req.query.get(key)
  return vals[0] if vals else None


def _target(fn, req):
  """Name of the object a request reads or writes (the destination for copies and moves)."""
  params = req.params or {}
  if params.get("dest_object_id"):
    return params["dest_object_id"]
  if fn is objects.insert:
    if _q(req, "upload_id"):
      return None  # Resumable chunk: preconditions were checked when the session started.
    data = req.data
    meta = (data.get("meta") or data) if isinstance(data, dict) else {}
    return _q(req, "name") or meta.get("name")
  return params.get("object_id")


def _precondition_status(fn, req, storage, obj_name):
  """HTTP status if a precondition on ``obj_name`` fails, else None."""
  obj = storage.objects.get(req.params.get("bucket_name"), {}).get(obj_name) if obj_name else None
  is_read = fn in _READS
  for param, field, negated in _CONDITIONS:
    want = _q(req, param)
    if want is None:
      continue
    if obj is None:
      if is_read or fn is objects.delete:
        return None  # The stock handler answers 404.
      if want != "0" and not negated:
        return HTTPStatus.PRECONDITION_FAILED
      continue
    if (str(obj.get(field)) == want) == negated:
      return HTTPStatus.NOT_MODIFIED if (negated and is_read) else HTTPStatus.PRECONDITION_FAILED
  return None


def _fail(res, status, message):
  res.status = status
  if status != HTTPStatus.NOT_MODIFIED:
    error = {"domain": "global", "reason": status.phrase, "message": message}
    res.json({"error": {"code": int(status), "message": message, "errors": [error]}})


def _in_range(name, start, end):
  return start <= name and (end is None or name < end)


def _wrap(fn):
  """Stock handler ``fn`` with preconditions, listing offsets and generation headers added."""
  def handler(req, res, storage):
    if fn in _READS or fn in _WRITES:
      status = _precondition_status(fn, req, storage, _target(fn, req))
      if status is not None:
        return _fail(res, status, f"Precondition failed: {req.full_url}")
    fn(req, res, storage)
    if fn is objects.ls and res.status == HTTPStatus.OK:
      start, end = _q(req, "startOffset") or "", _q(req, "endOffset")
      listing = json.loads(res._content)
      listing["items"] = [o for o in listing.get("items", []) if _in_range(o["name"], start, end)]
      listing["prefixes"] = [p for p in listing.get("prefixes", []) if _in_range(p, start, end)]
      res.json(listing)
    media = fn is objects.download or (fn is objects.get and _q(req, "alt") == "media")
    if media and res.status in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
      obj = storage.get_file_obj(req.params["bucket_name"], req.params["object_id"])
      res["x-goog-generation"] = str(obj["generation"])
      res["x-goog-metageneration"] = str(obj["metageneration"])
  return handler


def _move(req, res, storage):
  """objects.move: POST /storage/v1/b/{bucket}/o/{src}/moveTo/o/{dst} (same bucket only)."""
  bucket, src = req.params["bucket_name"], req.params["object_id"]
  try:
    src_obj = storage.get_file_obj(bucket, src)
    want = _q(req, "ifSourceGenerationMatch")
    status = _precondition_status(objects.copy, req, storage, req.params["dest_object_id"])
    if status is None and want is not None and want != str(src_obj["generation"]):
      status = HTTPStatus.PRECONDITION_FAILED
    if status is not None:
      return _fail(res, status, f"Precondition failed: {req.full_url}")
    dest = objects._copy(req.base_url, storage, bucket, src, bucket, req.params["dest_object_id"])
    storage.delete_file(bucket, src)
    res.json(dest)
  except NotFound:
    _fail(res, HTTPStatus.NOT_FOUND, f"No such object: {bucket}/{src}")
  except Conflict as err:
    _fail(res, HTTPStatus.BAD_REQUEST, str(err))


_MOVE_RE = (r"^(?:/storage/v1)?/b/(?P<bucket_name>[-.\w]+)/o/(?P<object_id>[^/]+)"
            r"/moveTo/o/(?P<dest_object_id>[^/]+)$")
_ROUTES = [(re.compile(_MOVE_RE), {"POST": _move})] + [
    (re.compile(rx), {method: _wrap(fn) for method, fn in handlers.items()})
    for rx, handlers in _srv.HANDLERS]


class _RequestHandler(_srv.RequestHandler):
  """The stock request handler, dispatching through ``_ROUTES`` under the server's lock."""

  def _dispatch(self):
    method = self.headers.get("x-http-method-override") or self.command
    req, res = _srv.Request(self, method), _srv.Response(self)
    for pattern, handlers in _ROUTES:
      match = pattern.fullmatch(req.path)
      if match:
        req.set_match(match)
        fn = handlers.get(method)
        if fn is None and method == "POST" and _q(req, "uploadType") and req.path.endswith("/o"):
          fn = _wrap(objects.insert)  # Uploads POSTed without the /upload prefix.
        break
    else:
      fn = None
    if fn is None:
      res.status = HTTPStatus.NOT_IMPLEMENTED
    else:
      try:
        with self.server.lock:
          fn(req, res, self.storage)
      except Exception as err:  # noqa: BLE001  # Answer 500 instead of dropping the connection.
        logger.error("%s %s failed:\n%s", method, req.full_url, traceback.format_exc())
        res._headers.clear()
        _fail(res, HTTPStatus.INTERNAL_SERVER_ERROR, repr(err))
    res.close()

  do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch


class _Server(ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 64

  def handle_error(self, request, client_address):
    # gcsfs races a listing against a metadata GET and drops the loser's connection: not an error.
    if not isinstance(sys.exc_info()[1], ConnectionError):
      super().handle_error(request, client_address)


class GcsEmulator:
  """In-memory GCS server on 127.0.0.1 (free port), served from a daemon thread."""

  def __init__(self):
    self.storage = Storage(use_memory_fs=True)
    self.storage._write_config_to_file = lambda: None  # Metadata persistence: useless in memory.
    self._httpd = self._thread = None

  @property
  def host(self) -> str:
    """``http://127.0.0.1:PORT``; only valid while started."""
    if self._httpd is None:
      raise RuntimeError("GcsEmulator is not started")
    return f"http://127.0.0.1:{self._httpd.server_address[1]}"

  def start(self) -> GcsEmulator:
    if self._httpd is None:
      httpd = _Server(("127.0.0.1", 0), lambda *a: _RequestHandler(self.storage, *a))
      httpd.lock = threading.Lock()
      self._httpd = httpd
      self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                      name="gcs-emulator", daemon=True)
      self._thread.start()
    return self

  def stop(self) -> None:
    if self._httpd is not None:
      self._httpd.shutdown()
      self._httpd.server_close()
      self._thread.join(timeout=5)
      self._httpd = self._thread = None

  def __enter__(self):
    return self.start()

  def __exit__(self, *exc) -> None:
    self.stop()

  def env(self) -> dict[str, str]:
    """Environment variables that point gcsfs/epath and tensorstore/Orbax at this emulator."""
    return env_for(self.host)

  def create_bucket(self, name: str) -> None:
    """Creates bucket ``name`` (no-op if it exists), with soft delete disabled."""
    with (self._httpd.lock if self._httpd else threading.Lock()):
      bucket = buckets.create_bucket(name, self.storage)
      if bucket:
        bucket["softDeletePolicy"] = {"retentionDurationSeconds": "0"}


def env_for(host: str) -> dict[str, str]:
  """The environment variables for an emulator at ``host`` (``http://127.0.0.1:PORT``)."""
  return {"STORAGE_EMULATOR_HOST": host, "FSSPEC_GCS_TOKEN": "anon",
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "TENSORSTORE_GCS_HTTP_URL": host,
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator"}


def configure_env(host: str) -> dict[str, str]:
  """Points this process (and children it starts later) at ``host``; returns the old values.

  Also drops cached gcsfs/fsspec/epath filesystem objects so the next gs:// access uses ``host``.
  tensorstore reads its variables whenever it opens a gcs kvstore (checked: a second emulator on
  another port in the same process is picked up).
  Undo with ``restore_env(old)``.
  """
  new = env_for(host)
  old = {k: os.environ.get(k) for k in new}
  os.environ.update(new)
  _clear_caches()
  return old


def restore_env(old: dict[str, str | None]) -> None:
  """Restores variables saved by ``configure_env``."""
  for key, value in old.items():
    if value is None:
      os.environ.pop(key, None)
    else:
      os.environ[key] = value
  _clear_caches()


def _clear_caches() -> None:
  if "fsspec" in sys.modules:  # fsspec reads FSSPEC_* variables only when it is imported.
    import fsspec.config
    gcs_conf = fsspec.config.conf.setdefault("gcs", {})
    if os.environ.get("FSSPEC_GCS_TOKEN") is None:
      gcs_conf.pop("token", None)
    else:
      gcs_conf["token"] = os.environ["FSSPEC_GCS_TOKEN"]
  if "gcsfs" in sys.modules:
    import gcsfs
    if gcsfs.GCSFileSystem is not gcsfs.core.GCSFileSystem:
      logger.warning("gcsfs was imported before GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false was set; "
                     "its experimental filesystem may hang against the emulator.")
    gcsfs.core.GCSFileSystem.clear_instance_cache()
    gcsfs.GCSFileSystem.clear_instance_cache()
  if "etils.epath.backend" in sys.modules:
    from etils.epath import backend
    backend.fsspec_backend._get_filesystem.cache_clear()


def list_objects(root: str) -> list[str]:
  """Every object under a ``gs://`` folder, relative to it, listed afresh (gcsfs caches
  listings per process, so objects written by children or tensorstore may be missing)."""
  import fsspec
  fs = fsspec.filesystem("gs")
  fs.invalidate_cache()
  base = str(root).removeprefix("gs://").rstrip("/")
  return sorted(p[len(base) + 1:] for p in fs.find(base))


def main(argv: list[str]) -> None:
  """``python tests/gcs_emulator.py [BUCKET ...]``: serves an in-memory emulator on 127.0.0.1
  until Ctrl-C and prints the variables to export in the shell that runs the job."""
  import time
  buckets_ = argv or ["sgd-phases"]
  with GcsEmulator() as emulator:
    for b in buckets_:
      emulator.create_bucket(b)
    for k, v in emulator.env().items():
      print(f"export {k}={v}")
    print(f"# buckets: {', '.join('gs://' + b for b in buckets_)} (in memory; Ctrl-C stops)",
          flush=True)
    try:
      while True:
        time.sleep(3600)
    except KeyboardInterrupt:
      pass


if __name__ == "__main__":
  import sys
  main(sys.argv[1:])
