"""Where a run's files live: a local path (relative or absolute) or a URL.

Orbax refuses relative checkpoint paths, and `os.path.abspath` would turn a
bucket URL (`gs://b/x`) into a local directory named `gs:`; every place that
makes a workdir path absolute goes through `absolute`.
"""

import os
import re

_URL = re.compile(r'^[a-zA-Z][a-zA-Z0-9+.-]*://')


def is_url(path: str) -> bool:
  """Whether `path` names a remote filesystem (`gs://...`, `memory://...`)."""
  return bool(_URL.match(os.fspath(path)))


def absolute(path: str) -> str:
  """`path` made absolute against the working directory; a URL unchanged."""
  path = os.fspath(path)
  return path if is_url(path) else os.path.abspath(path)
