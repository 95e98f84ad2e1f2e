"""Offline corpora built from what every Python installation has.

Two corpora need no download and are the same on every machine with the same interpreter:

- code: the standard library's own `.py` files (tests, idlelib, lib2to3 and site-packages left out);
- prose: the English documentation shipped with the interpreter, i.e. every pydoc topic plus the
  module, class and function docstrings of the standard library (read with `ast`, never imported).

Both yield `(doc_id, text)` pairs in a deterministic (sorted) order. `PYTHON_VERSION` names the
interpreter the corpora came from, since another Python version has another standard library.
"""

import ast
import inspect
import os
import platform
import sysconfig
from collections.abc import Iterator

import pydoc_data.topics

PYTHON_VERSION = platform.python_version()

_EXCLUDED_DIRS = frozenset({'site-packages', 'test', 'tests', 'idlelib', 'lib2to3'})
_DOCSTRING_NODES = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def stdlib_dir() -> str:
  """The directory holding this interpreter's standard library."""
  return sysconfig.get_paths()['stdlib']


def _stdlib_relpaths(root: str) -> list[str]:
  """Sorted '/'-separated paths, relative to `root`, of the kept `.py` files."""
  relpaths = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in _EXCLUDED_DIRS]
    reldir = os.path.relpath(dirpath, root)
    for filename in filenames:
      if filename.endswith('.py'):
        relpaths.append(os.path.normpath(os.path.join(reldir, filename)).replace(os.sep, '/'))
  return sorted(relpaths)


def _read_utf8(path: str) -> str | None:
  """The file's text, or None when it cannot be read or is not valid UTF-8."""
  try:
    with open(path, 'rb') as f:
      return f.read().decode('utf-8')
  except (OSError, UnicodeDecodeError):
    return None


def stdlib_code_documents() -> Iterator[tuple[str, str]]:
  """Yields (relative path, source text) for each standard-library module, sorted by path."""
  root = stdlib_dir()
  for relpath in _stdlib_relpaths(root):
    text = _read_utf8(os.path.join(root, relpath))
    if text is not None:
      yield relpath, text


def module_docstrings(source: str) -> list[str]:
  """Cleaned docstrings of a module, then of its classes and functions in source order.

  Returns an empty list when the source does not parse.
  """
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return []
  nodes = sorted((n for n in ast.walk(tree) if isinstance(n, _DOCSTRING_NODES)),
                 key=lambda n: (n.lineno, n.col_offset))
  docstrings = (ast.get_docstring(n, clean=False) for n in [tree, *nodes])
  return [text for text in (inspect.cleandoc(d) for d in docstrings if d) if text]


def stdlib_prose_documents() -> Iterator[tuple[str, str]]:
  """Yields ('topic/<name>', text) for each pydoc topic, then ('docstrings/<relpath>', text).

  A docstrings document joins one module's docstrings with blank lines; modules without any
  docstring text are skipped.
  """
  topics = pydoc_data.topics.topics
  for name in sorted(topics):
    yield f'topic/{name}', topics[name]
  for relpath, source in stdlib_code_documents():
    docstrings = module_docstrings(source)
    if docstrings:
      yield f'docstrings/{relpath}', '\n\n'.join(docstrings)
