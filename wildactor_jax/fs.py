"""Every user path, local or remote (gs://...), goes through here: read, glob, exists, atomic write.

Built on `etils.epath`, the path layer Orbax itself uses, so a bucket URI given by the user is
never turned into a local folder named `gs:` (`os.path.abspath("gs://b/x")` would do that).

Atomic writes: the content goes to a temporary name beside the target, which is then renamed
into place, so a crash never leaves a half-written file under the final name. Local files get the
user's normal permissions (0666 & ~umask), not the 0600 of a temp-file default, because results
are shared on clusters. On object stores a rename is a copy + delete of one object; the final
object still appears whole or not at all.

A bucket that cannot be reached (no network, no credentials, no permission) is a one-line
FsError naming the bucket and the storage client's own reason, never a traceback, and never a
silent "no such folder": the storage clients answer `is_dir` with False on any error, so for a
remote path a False is confirmed by `exists`, which raises.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
import uuid
from typing import Any, Callable

from etils import epath

REMOTE_SCHEMES = ("gs://", "s3://")
_CHUNK = 16 << 20  # bytes per read/write when streaming a file to or from an object store


class FsError(ValueError):
  """A one-line, user-facing problem with a path."""


def is_remote(path) -> bool:
  return str(path).startswith(REMOTE_SCHEMES)


def bucket_of(p) -> str:
  """gs://bucket/a/b -> gs://bucket"""
  scheme, _, rest = os.fspath(p).partition("://")
  return f"{scheme}://{rest.split('/', 1)[0]}"


def _storage_errors(fn):
  """For a remote path (the first argument), an error of the storage client becomes a one-line
  FsError naming the bucket and the client's reason; a missing object stays FileNotFoundError."""

  @functools.wraps(fn)
  def guarded(p, *args, **kwargs):
    try:
      return fn(p, *args, **kwargs)
    except (FsError, FileNotFoundError, IsADirectoryError, NotADirectoryError):
      raise
    except Exception as e:  # TensorFlow's and gcsfs' GCS clients raise assorted types
      if not is_remote(p):
        raise
      if type(e).__name__ == "NotFoundError":  # TensorFlow's, not an OSError
        raise FileNotFoundError(f"{p}: no such file") from None
      lines = [l.strip() for l in str(e).strip().splitlines() if l.strip()]
      raise FsError(f"{bucket_of(p)}: cannot reach the bucket for {p} ({type(e).__name__}: "
                    f"{lines[0][:300] if lines else ''}); check the network, the credentials "
                    "and the bucket's name") from None

  return guarded


def path(p) -> epath.Path:
  """A user path as an epath.Path; local paths are made absolute, remote ones kept verbatim."""
  if isinstance(p, epath.Path):
    return p
  s = os.fspath(p)
  if not s:
    raise FsError("empty path")
  return epath.Path(s if is_remote(s) else os.path.abspath(os.path.expanduser(s)))


def join(base, *parts) -> str:
  """base/part/... as a string that keeps a gs:// scheme intact."""
  return os.fspath(path(base).joinpath(*parts))


@_storage_errors
def exists(p) -> bool:
  return path(p).exists()


def _is_dir(q: epath.Path) -> bool:
  if q.is_dir():
    return True
  if is_remote(q):
    q.exists()  # the storage client's is_dir says False for "unreachable" too; exists raises
  return False


@_storage_errors
def isdir(p) -> bool:
  return _is_dir(path(p))


@_storage_errors
def isfile(p) -> bool:
  q = path(p)
  return q.exists() and not q.is_dir()


@_storage_errors
def makedirs(p) -> epath.Path:
  q = path(p)
  q.mkdir(parents=True, exist_ok=True)
  return q


@_storage_errors
def listdir(p) -> list[str]:
  """Names (not paths) in a folder, sorted; [] for a missing folder."""
  q = path(p)
  if not _is_dir(q):
    return []
  return sorted(c.name for c in q.iterdir())


@_storage_errors
def glob(pattern) -> list[str]:
  """Sorted paths matching a glob whose wildcards are in the last parts (`gs://b/x/*.json`); a
  local pattern's matches are absolute (a bare `*.json` matches in the current folder)."""
  s = os.fspath(pattern)
  head, tail = s, ""
  while any(ch in head for ch in "*?["):
    if "/" not in head:  # a bare name pattern ("*.json"): the current folder
      head, tail = ".", head if not tail else f"{head}/{tail}"
      break
    head, part = head.rsplit("/", 1)
    head = head or "/"  # "/*.json": the root folder
    tail = part if not tail else f"{part}/{tail}"
  if not tail:
    return [s] if exists(s) else []
  base = path(head)
  if not _is_dir(base):
    return []
  return sorted(os.fspath(m) for m in base.glob(tail))


@_storage_errors
def read_bytes(p) -> bytes:
  return path(p).read_bytes()


def sha256(p, length: int = 16) -> str:
  """The first `length` hex digits of a file's SHA-256 (local or gs://)."""
  import hashlib
  return hashlib.sha256(read_bytes(p)).hexdigest()[:length]


@_storage_errors
def read_text(p) -> str:
  return path(p).read_text()


def read_json(p) -> Any:
  return json.loads(read_text(p))


def read_json_lines(p, error: type[Exception] = ValueError) -> list[tuple[str, Any]]:
  """(where, value) for every non-blank line of a JSON-lines file, `where` being "path:line"
  (1-based) for the caller's own one-line errors; a line that is not JSON raises `error`."""
  out = []
  for n, line in enumerate(read_text(p).splitlines(), 1):
    if not line.strip():
      continue
    try:
      out.append((f"{p}:{n}", json.loads(line)))
    except json.JSONDecodeError as e:
      raise error(f"{p}:{n}: not valid JSON ({e.msg})") from None
  return out


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _staging_name(target: epath.Path) -> epath.Path:
  return target.parent / f".{target.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def atomic_write(p, write: Callable[[str], None]) -> str:
  """Runs write(local_filename) and moves the result to `p` atomically; returns str(p).

  `write` gets a real local file name (what PIL, imageio and ffmpeg need) ending in the target's
  suffix. Locally that file sits beside the target and is renamed; for a remote target it is a
  local temp file, copied to a staging object beside the target, then renamed.
  """
  target = path(p)
  makedirs(target.parent)
  suffix = target.suffix
  if not is_remote(target):
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.partial-", suffix=suffix,
                               dir=os.fspath(target.parent))
    os.close(fd)
    try:
      write(tmp)
      os.chmod(tmp, 0o666 & ~_umask())
      os.replace(tmp, os.fspath(target))
    finally:
      if os.path.exists(tmp):
        os.remove(tmp)
    return os.fspath(target)
  with tempfile.TemporaryDirectory() as local:
    tmp = os.path.join(local, "payload" + suffix)
    write(tmp)
    _upload(target, tmp)
  return os.fspath(target)


@_storage_errors
def _upload(target: epath.Path, local: str) -> None:
  """Streams a local file to a staging object beside the remote `target`, then renames it."""
  staging = _staging_name(target)
  try:
    with open(local, "rb") as src, staging.open("wb") as dst:
      shutil.copyfileobj(src, dst, _CHUNK)
    staging.replace(target)  # rename() refuses an existing target on every epath backend
  finally:
    if staging.exists():
      staging.unlink()


def atomic_write_bytes(p, data: bytes) -> str:
  def write(tmp):
    with open(tmp, "wb") as fh:
      fh.write(data)
  return atomic_write(p, write)


def atomic_write_text(p, text: str) -> str:
  return atomic_write_bytes(p, text.encode("utf-8"))


def atomic_write_json(p, obj: Any, **kwargs) -> str:
  kwargs.setdefault("indent", 2)
  return atomic_write_text(p, json.dumps(obj, **kwargs) + "\n")


def local_path(p, what: str) -> str:
  """The local file name for a path that a library can only open locally (ArrayRecord readers,
  mmap'd safetensors). A gs:// path here is a one-line error saying to mount the bucket."""
  if is_remote(p):
    raise FsError(f"{what} {p}: this reader needs a local path; mount the bucket with gcsfuse "
                  f"and pass the mounted path (launch/tpu_vm.sh and launch/xpk.sh mount the bucket "
                  f"of a gs:// --config.data.records themselves, others with --mount-bucket)")
  return os.fspath(path(p))


@_storage_errors
def walk_files(p) -> list[str]:
  """Every file below folder `p` (recursively), as '/'-separated paths relative to `p`, folder by
  folder (folders sorted by path, files sorted within: the order of `sorted(os.walk(p))`);
  [] for a missing folder. One listing per folder. (Not epath's Path.walk: its fsspec backend
  yields bucket paths without the gs:// scheme, i.e. local relative paths.)"""
  found = []

  def visit(folder: epath.Path, rel: str) -> None:
    for child in folder.iterdir():
      name = f"{rel}/{child.name}" if rel else child.name
      if child.is_dir():
        visit(child, name)
      else:
        found.append((rel, child.name))

  base = path(p)
  if _is_dir(base):
    visit(base, "")
  return [f"{rel}/{name}" if rel else name for rel, name in sorted(found)]


@_storage_errors
def copy_to_local(p, local: str) -> str:
  """Streams file `p` (local or remote) to the local file name `local`; returns `local`."""
  with path(p).open("rb") as src, open(local, "wb") as dst:
    shutil.copyfileobj(src, dst, _CHUNK)
  return local


@contextlib.contextmanager
def local_copy(p, what: str):
  """A local file name holding `p`'s bytes, for a reader that opens files itself (ArrayRecord):
  `p` itself when local; for a remote `p`, a copy in a temporary folder, removed on exit (so
  only one such file at a time needs local disk)."""
  if not is_remote(p):
    if not isfile(p):
      raise FsError(f"{what} {p}: no such file")
    yield os.fspath(path(p))
    return
  with tempfile.TemporaryDirectory(prefix="wildactor-cache-") as tmp:
    yield copy_to_local(p, os.path.join(tmp, path(p).name))


def put_file(local: str, p) -> str:
  """Copies the local file `local` to `p` (local or remote) atomically; returns str(p)."""
  return atomic_write(p, lambda tmp: shutil.copyfile(local, tmp))
