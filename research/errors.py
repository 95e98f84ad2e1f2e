"""The error a user can cause and fix: a bad config value, key, path or device count.

Command-line entry points print its message alone (no traceback) and exit with status 1; any other
exception is a bug and keeps its traceback.
"""


class UserError(ValueError):
  """One clear message naming the bad key, value or path, and the fix."""
