"""Which code a run ran: the git commit, whether the checkout differed from it, and the difference.

In a git checkout this comes from git. Code shipped without its .git directory (launch/tpu_vm.py
packs the checkout for TPU VMs) carries it in two files at its root, written when it was packed:
SHIPPED_VERSION ({'git_commit', 'git_dirty'}) and SHIPPED_DIFF (the difference, when dirty).
Runs record the version in config.json and in each checkpoint, and a dirty checkout's diff in
WORKDIR/code.diff (research/train.py), so a result can be traced to the code that made it.
"""

import functools
import importlib.metadata
import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED_VERSION = 'code_version.json'
SHIPPED_DIFF = 'code.diff'


def _git(*args: str, check: bool = True) -> str:
  return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, text=True, check=check,
                        timeout=30).stdout


def _from_git() -> tuple[dict, str] | None:
  """({'git_commit', 'git_dirty'}, the checkout's difference from HEAD: changed tracked files and
  new files git does not ignore, such as an experiment file not committed yet), None outside git."""
  try:
    commit = _git('rev-parse', 'HEAD').strip()
    diff = _git('diff', 'HEAD')
    for new in _git('ls-files', '--others', '--exclude-standard', '-z').split('\0'):
      if new:  # `git diff --no-index` exits 1 when the files differ, as they do here
        diff += _git('diff', '--no-index', '--', os.devnull, new, check=False)
  except (OSError, subprocess.SubprocessError):
    return None
  return {'git_commit': commit, 'git_dirty': bool(diff)}, diff


@functools.cache
def _version_and_diff() -> tuple[dict, str]:
  found = _from_git()
  if found is not None:
    return found
  try:
    with open(os.path.join(ROOT, SHIPPED_VERSION), encoding='utf-8') as f:
      version = json.load(f)
  except (OSError, ValueError):
    try:
      return {'package_version': importlib.metadata.version('research')}, ''
    except importlib.metadata.PackageNotFoundError:
      return {'package_version': 'unknown'}, ''
  try:
    with open(os.path.join(ROOT, SHIPPED_DIFF), encoding='utf-8') as f:
      diff = f.read()
  except OSError:
    diff = ''
  return version, diff


def code_version() -> dict:
  """{'git_commit': HEAD, 'git_dirty': whether the checkout differs from it}, from git or from
  the files shipped with the code; {'package_version': ...} when neither is there."""
  return dict(_version_and_diff()[0])


def code_diff() -> str:
  """The checkout's difference from the commit as a patch; '' for a clean checkout."""
  return _version_and_diff()[1]


def shipped_files() -> dict[str, str]:
  """{file name: contents} that code shipped without .git carries at its root (module docstring)."""
  files = {SHIPPED_VERSION: json.dumps(code_version(), sort_keys=True)}
  if code_diff():
    files[SHIPPED_DIFF] = code_diff()
  return files
