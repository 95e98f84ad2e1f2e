"""Text files that only grow (metrics.jsonl, worker logs), on a local disk or in a bucket.

On a local disk an `Appender` appends each write to PATH with one `os.write` to a file opened with
O_APPEND, so a kill never leaves half a line behind the last complete one (a full disk can still
cut one short).

In a bucket (a path with '://', e.g. gs://) objects are immutable: appending to one uploads it
again whole, and TensorFlow's file system does so at every flush, so a run that flushes each line
uploads a total that grows with the square of its length. There an `Appender` keeps its lines in
memory and writes each flush as one new object PATH.parts/NNNNNN (000000, 000001, ...: name order
is write order, which `gcloud storage cat 'PATH.parts/*'` follows) and never rewrites one; MaxText's
gcs_metrics writes its metrics in chunk objects too. It flushes at a write once `flush_seconds`
have passed since the last flush, and at `flush()` and `close()`. A new Appender numbers on from
the highest part already there, so a resumed run appends after the earlier run's parts. The cost:
a hard kill loses up to `flush_seconds` of lines, which a resumed run logs again anyway (it
repeats the steps after its checkpoint).

`exists` and `read_text` take either layout, in a bucket or on a local disk (where `gcloud storage
rsync` brings a bucket run's PATH.parts/ back as it is): PATH if it is there, then its parts in
order.
"""

import os
import time


def _remote(path: str) -> bool:
  return '://' in path


def _gfile():
  import tensorflow as tf  # only for bucket paths: importing it takes seconds
  return tf.io.gfile


def _part(path: str, index: int) -> str:
  return f'{path}.parts/{index:06d}'


def _part_indices(path: str) -> list[int]:
  """The indices of the parts of `path` (one listing), ascending."""
  directory = path + '.parts'
  if _remote(path):
    gfile = _gfile()
    names = gfile.listdir(directory) if gfile.isdir(directory) else []
  else:
    names = os.listdir(directory) if os.path.isdir(directory) else []
  return sorted(int(name) for name in names if name.isdigit())


def _is_file(path: str) -> bool:
  if not _remote(path):
    return os.path.isfile(path)
  gfile = _gfile()  # not a directory: TF's ram:// file system calls every prefix of a name one
  return gfile.exists(path) and not gfile.isdir(path)


def _read(path: str) -> bytes:
  if not _remote(path):
    with open(path, 'rb') as f:
      return f.read()
  with _gfile().GFile(path, 'rb') as f:
    return f.read()


def exists(path: str) -> bool:
  """Whether `path` or a part of it exists."""
  return _is_file(path) or bool(_part_indices(path))


def read_text(path: str) -> str:
  """The text of `path` (if it exists) followed by that of its parts in order; bytes that are not
  UTF-8 (a line cut short mid-character) read as U+FFFD, so a torn line costs only itself."""
  data = [_read(path)] if _is_file(path) else []
  data += [_read(_part(path, index)) for index in _part_indices(path)]
  return b''.join(data).decode('utf-8', errors='replace')


class Appender:
  """Appends whole lines to `path`: at once on a local disk, in new part objects in a bucket."""

  def __init__(self, path: str, flush_seconds: float = 30.0):
    self.path, self.flush_seconds = path, flush_seconds
    self._fd = None
    self._lines: list[str] = []
    if _remote(path):
      self._next = max(_part_indices(path), default=-1) + 1
      self._flushed = time.monotonic()
    else:
      self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

  def write(self, text: str) -> None:
    """Appends `text`, whole lines: a single os.write on a local disk, else kept until a flush."""
    if self._fd is not None:
      data = text.encode('utf-8')
      written = os.write(self._fd, data)
      while written < len(data):  # only a full disk or a signal mid-write writes less
        written += os.write(self._fd, data[written:])
      return
    self._lines.append(text)
    if time.monotonic() - self._flushed >= self.flush_seconds:
      self.flush()

  def flush(self) -> None:
    """Writes the lines kept since the last flush as the next part, if any (in a bucket)."""
    if self._fd is not None:
      return
    self._flushed = time.monotonic()
    if not self._lines:
      return
    with _gfile().GFile(_part(self.path, self._next), 'wb') as f:
      f.write(''.join(self._lines).encode('utf-8'))
    self._next += 1
    self._lines = []

  def close(self) -> None:
    self.flush()
    if self._fd is not None:
      os.close(self._fd)
