"""MeCo: metadata conditioning, then a cooldown without metadata, on the host.

Gao et al. 2025, "Metadata Conditioning Accelerates Language Model Pre-training", arXiv
2501.01956. For the first 1 - `cooldown_fraction` of training every document is preceded by
`prefix` + its source + `suffix` ("URL: en.wikipedia.org\n\n" in the paper, whose source is the
document's URL without scheme and path), with no loss on those metadata tokens; the last
`cooldown_fraction` (10% in the paper) trains on the plain documents, so the model needs no metadata
at inference.

The source of a document is the domain of its `url` metadata field where it has one (C4 and
other web corpora through TFDS), as in the paper: the URL's host, with or without a scheme
(`url_domain`). The built-in corpora have no URLs; their analogue
of a domain is the task plus the top-level module: 'stdlib_code/json' for the file
'json/decoder.py', 'stdlib_prose/json' for its docstrings ('docstrings/json/decoder.py') and
'stdlib_prose/topic' for the documentation topics. Every other document's source is its task.
"""

import urllib.parse
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from research import errors


def url_domain(url: str) -> str:
  """The host of `url`, lower-case, without scheme, user, port or path; '' if it names none.

  'https://en.wikipedia.org/x', 'en.wikipedia.org/x' and 'EN.wikipedia.org:443' all give
  'en.wikipedia.org'. A URL without '://' is read as a host first: urlsplit alone finds no host
  in 'en.wikipedia.org/x' and takes 'example.com' for the scheme of 'example.com:80'.
  """
  url = url.strip()
  if '://' not in url and not url.startswith('//'):
    url = '//' + url
  try:
    return urllib.parse.urlsplit(url).hostname or ''
  except ValueError:  # a malformed host, such as an unclosed IPv6 bracket
    return ''


def source_name(task_name: str, doc_id: str, doc_metadata: Mapping[str, Any]) -> str:
  """The short source of a document (see the module docstring)."""
  if doc_metadata.get('url'):
    return url_domain(str(doc_metadata['url'])) or task_name
  if task_name == 'stdlib_code':
    return f"{task_name}/{doc_id.split('/', 1)[0].removesuffix('.py')}"
  if task_name == 'stdlib_prose':
    parts = doc_id.split('/')
    top = parts[1] if parts[0] == 'docstrings' and len(parts) > 1 else parts[0]
    return f"{task_name}/{top.removesuffix('.py')}"
  return task_name


def metadata_text(task_name: str, doc_id: str, doc_metadata: Mapping[str, Any], prefix: str,
                  suffix: str) -> str:
  """The text put before a document: `prefix` + its source name + `suffix`."""
  return prefix + source_name(task_name, doc_id, doc_metadata) + suffix


def with_metadata(tokens: np.ndarray, metadata_tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The metadata tokens followed by the document's, and float32 loss weights: 0 on the metadata,
  1 on the document. Tokens keep the dtype of `tokens`."""
  combined = np.concatenate([np.asarray(metadata_tokens, dtype=tokens.dtype), tokens])
  weights = np.concatenate([np.zeros(len(metadata_tokens), np.float32),
                            np.ones(len(tokens), np.float32)])
  return combined, weights


def in_cooldown(step: int, total_steps: int, cooldown_fraction: float) -> bool:
  """True from step round((1 - cooldown_fraction) * total_steps) on, when documents go without
  metadata."""
  return step >= round((1.0 - cooldown_fraction) * total_steps)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError on an experiment config whose `objective.meco` is unusable."""
  settings = config.objective.meco
  cooldown = settings.cooldown_fraction
  if not 0.0 <= cooldown < 1.0:
    raise errors.UserError(f'objective.meco.cooldown_fraction={cooldown!r} must be in [0, 1): the '
                           'fraction of training at the end without metadata (0.1 in the paper; 1 '
                           'would never show metadata).')
  for key, example in (('prefix', 'URL: '), ('suffix', '\n\n')):
    if not isinstance(settings[key], str):
      raise errors.UserError(f'objective.meco.{key}={settings[key]!r} must be a string, like '
                             f"{example!r} (the paper's).")
