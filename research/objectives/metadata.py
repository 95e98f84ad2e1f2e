"""MeCo: metadata conditioning, then a cooldown without metadata, on the host.

Gao et al. 2025, "Metadata Conditioning Accelerates Language Model Pre-training", arXiv
2501.01956. For the first 1 - `cooldown_fraction` of training every document is preceded by
`prefix` + its source + `suffix` ("URL: en.wikipedia.org\n\n" in the paper, whose source is the
document's URL without scheme and path), with no loss on those metadata tokens; the last
`cooldown_fraction` (10% in the paper) trains on the plain documents, so the model needs no metadata
at inference.

Our corpora have no URLs. The analogue of the domain is the task plus the top of the document id's
path: 'stdlib_code/json' for the standard-library file 'json/decoder.py', 'stdlib_code/os' for
'os.py'; documents with flat ids (the synthetic tasks) get the task name alone.
"""

import ml_collections
import numpy as np

from research import errors


def source_name(task_name: str, doc_id: str) -> str:
  """The short source of a document: f'{task_name}/{top}', top the first path component of
  `doc_id` without a trailing '.py', when `doc_id` is a path ('/' in it or a '.py' name); else
  `task_name`."""
  if '/' not in doc_id and not doc_id.endswith('.py'):
    return task_name
  top = doc_id.split('/', 1)[0].removesuffix('.py')
  return f'{task_name}/{top}'


def metadata_text(task_name: str, doc_id: str, prefix: str, suffix: str) -> str:
  """The text put before a document: `prefix` + its source name + `suffix`."""
  return prefix + source_name(task_name, doc_id) + suffix


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
