"""Where a run's files live: a local path (relative or absolute) or a URL.

Every file of a workdir, of the classifier cache and of a report that is not
an orbax checkpoint is read and written through this module, so that
`workdirs/x`, `/abs/x` and `gs://bucket/x` all work. A local path is used
with `os` (an atomic `os.replace` per write); a URL goes through fsspec
(`gs://` needs gcsfs: `pip install gcsfs`; `memory://` is in-process, for
tests). Orbax reads and writes its checkpoints itself, through etils.epath.

Orbax refuses relative checkpoint paths, and `os.path.abspath` would turn a
bucket URL (`gs://b/x`) into a local directory named `gs:`; every place that
makes a workdir path absolute goes through `absolute`.
"""

import builtins
import json
import os
import posixpath
import re
from typing import IO, Any, Union

_URL = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*://')


def is_url(path: str) -> bool:
  """Whether `path` names a remote filesystem (`gs://...`, `memory://...`)."""
  return bool(_URL.match(os.fspath(path)))


def absolute(path: str) -> str:
  """`path` made absolute against the working directory; a URL unchanged."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(path)


# The URL schemes under which orbax, through etils.epath, writes checkpoints.
CHECKPOINT_SCHEMES = ('gs', 's3', 'az')


def check_checkpoint_dir(path: str) -> None:
  """Raises ValueError if orbax cannot keep checkpoints under `path`: a URL
  of a scheme etils.epath does not know (a local path always can)."""
  path = os.fspath(path)
  scheme = path.split('://', 1)[0]
  if is_url(path) and scheme not in CHECKPOINT_SCHEMES:
    raise ValueError(
        f'{path}: orbax cannot keep checkpoints under {scheme}:// URLs; use a '
        'local path or a ' + ', '.join(f'{s}://' for s in CHECKPOINT_SCHEMES)
        + ' URL')


def join(base: str, *parts: str) -> str:
  """`base/part/...`: '/'-separated under a URL, `os.path.join` otherwise."""
  base = os.fspath(base)
  return (posixpath.join(base, *parts) if is_url(base)
          else os.path.join(base, *parts))


def basename(path: str) -> str:
  """The last component of `path` (`x` for `gs://b/x/` or `workdirs/x/`)."""
  path = os.fspath(path)
  if is_url(path):
    return posixpath.basename(path.rstrip('/'))
  return os.path.basename(os.path.normpath(path))


def _filesystem(url: str):
  import fsspec  # pylint: disable=g-import-not-at-top
  try:
    return fsspec.core.url_to_fs(url)
  except ImportError as e:
    raise OSError(f'cannot open {url}: {e}') from e
  except ValueError as e:  # An unknown protocol.
    raise OSError(f'cannot open {url}: {e}') from e


def exists(path: str) -> bool:
  if not is_url(path):
    return os.path.exists(path)
  fs, p = _filesystem(path)
  return fs.exists(p)


def isdir(path: str) -> bool:
  if not is_url(path):
    return os.path.isdir(path)
  fs, p = _filesystem(path)
  return fs.isdir(p)


def listdir(path: str) -> list[str]:
  """The names (not paths) in directory `path`, sorted; OSError if it is not
  a directory."""
  if not is_url(path):
    return sorted(os.listdir(path))
  fs, p = _filesystem(path)
  if not fs.isdir(p):
    raise FileNotFoundError(f'no directory {path}')
  return sorted(posixpath.basename(e.rstrip('/'))
                for e in fs.ls(p, detail=False) if e.rstrip('/') != p)


# Object stores whose first path component is a bucket, which their
# filesystems' makedirs would create: a mistyped bucket name must be an
# error, not a new bucket.
_BUCKET_PROTOCOLS = ('gs', 'gcs', 's3', 's3a')


def makedirs(path: str) -> None:
  """Creates directory `path` and its parents if missing (on object stores,
  where directories are prefixes, a marker is harmless).

  Raises:
    FileNotFoundError: `path` is in a bucket that does not exist (never
      created here).
  """
  if not is_url(path):
    os.makedirs(path, exist_ok=True)
    return
  fs, p = _filesystem(path)
  protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
  if set(protocols) & set(_BUCKET_PROTOCOLS):
    bucket = p.strip('/').split('/')[0]
    if not fs.exists(bucket):
      scheme = path.split('://')[0]
      raise FileNotFoundError(f'the bucket {scheme}://{bucket} does not exist '
                              f'(or this account cannot see it); create it, '
                              f'or check the name in {path}')
  fs.makedirs(p, exist_ok=True)


def read_every_file(directory: str) -> int:
  """Reads every byte of every file under `directory`; returns how many
  files. Any I/O failure (a missing directory, a permission, a transient
  object-store error of any exception type) propagates."""
  count = 0
  if not is_url(directory):
    if not os.path.isdir(directory):
      raise FileNotFoundError(f'no directory {directory}')
    for parent, _, names in os.walk(directory):
      for name in names:
        with open(os.path.join(parent, name), 'rb') as f:
          while f.read(1 << 24):
            pass
        count += 1
    return count
  fs, p = _filesystem(directory)
  for name in fs.find(p):
    fs.cat_file(name)
    count += 1
  return count


def remove(path: str) -> None:
  if not is_url(path):
    os.remove(path)
    return
  fs, p = _filesystem(path)
  fs.rm(p)


def open(path: str, mode: str = 'r') -> IO[Any]:  # pylint: disable=redefined-builtin
  """`path` opened for reading or writing ('r', 'rb', 'w', 'wb', 'a'); on an
  object store, what is written appears whole when the file is closed."""
  if not is_url(path):
    return builtins.open(path, mode)
  fs, p = _filesystem(path)
  return fs.open(p, mode)


def read_text(path: str) -> str:
  with open(path, 'r') as f:
    return f.read()


def read_json(path: str) -> Any:
  with open(path, 'r') as f:
    return json.load(f)


def replace(path: str, data: Union[str, bytes]) -> None:
  """Replaces the file `path` whole with `data`; a reader never sees it half
  written. Locally through a temporary file and `os.replace` (removed again
  if the write fails); on an object store an object appears whole on close.
  """
  mode = 'wb' if isinstance(data, bytes) else 'w'
  if is_url(path):
    with open(path, mode) as f:
      f.write(data)
    return
  tmp = path + '.tmp'
  try:
    with builtins.open(tmp, mode) as f:
      f.write(data)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_json(path: str, value: Any) -> None:
  """`replace(path, value as indented JSON)`."""
  replace(path, json.dumps(value, indent=2))
