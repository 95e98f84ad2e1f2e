"""The error a user can cause and fix: a bad config value, key, path or device count.

Command-line entry points print its message alone (no traceback) and exit with status 2; any other
exception is a bug and keeps its traceback.
"""

import contextlib
import importlib


class UserError(ValueError):
  """One clear message naming the bad key, value or path, and the fix."""


def _unreachable(error: BaseException) -> bool:
  """Whether `error`, raised by a file operation on a bucket path, says the bucket could not be
  reached (no credentials, no network, no access): google-auth's and the Cloud client libraries'
  errors, TensorFlow's file-system errors other than not-found, and the OSError that etils.epath
  makes of those."""
  module = type(error).__module__
  if module.startswith(('google.auth', 'google.api_core')):
    return True
  if module.startswith('tensorflow'):
    return type(error).__name__ != 'NotFoundError'
  return isinstance(error, OSError) and not isinstance(error, FileNotFoundError)


@contextlib.contextmanager
def reaching(path: str, where: str):
  """Inside it, a failure to reach `path` in a bucket (gs://...) is one UserError saying `where`
  (the path as the user gave it: '--workdir=gs://...') could not be reached and how to
  authenticate, instead of a traceback from google-auth or TensorFlow's GCS file system. Wrap the
  first operation on each path a user gives (--workdir, data files, the distillation teacher,
  init.path, a run to read); a local path's errors, and any other error, pass through.
  """
  try:
    yield
  except UserError:
    raise
  except Exception as error:  # pylint: disable=broad-except  (re-raised unless it is one of those)
    if '://' not in path or not _unreachable(error):
      raise
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
    raise UserError(f'Cannot reach {where} ({reason}). Authenticate to Google Cloud Storage with '
                    '`gcloud auth application-default login` (on a TPU VM, give its service '
                    'account access to the bucket), or give a local path.') from error


def optional_package(name: str, message: str):
  """The optional package `name` (wandb, datasets: not every run needs it), imported; if it is not
  installed, a UserError `message`, which names the setting that needs it and how to install it."""
  try:
    return importlib.import_module(name)
  except ImportError as e:
    raise UserError(message) from e
