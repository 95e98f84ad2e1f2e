"""Reverse and permutation training: documents whose units are reversed or shuffled, trained left
to right, against the reversal curse.

Golovneva et al. 2024, "Reverse Training to Nurse the Reversal Curse", arXiv 2403.13799: a model
trained on "A is B" does not learn "B is A"; training also on reversed text (its tokens, its words,
or random-length segments reversed) lets facts be recalled in both directions. Guo et al. 2024,
"Mitigating Reversal Curse in Large Language Models via Semantic-aware Permutation Training",
arXiv 2403.00758 (SPT): the units are semantic chunks, whose order is reversed or shuffled.

With probability `rate` a document is rewritten: its `unit`s ('token'; 'word', whitespace-split;
'sentence', split after '.', '!' or '?' and at newlines) put in reverse order or shuffled
(`order`), joined by single spaces (the original separators are not kept), EOS last. Every token is
in the loss. With `alternate`, odd steps read the rewritten documents and even steps the
originals (two packings of the task; research/data/task_rows.py), so over the epochs a document is
read in both directions, as in reverse training, at half the reads per direction; otherwise every
step reads the rewritten store.
"""

import re

import ml_collections
import numpy as np

from research import errors

UNITS = ('token', 'word', 'sentence')
ORDERS = ('reverse', 'shuffle')
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+|\n+')


def units(text: str, unit: str) -> list[str]:
  """The words (whitespace-split) or sentences of `text`, without their separators."""
  pieces = text.split() if unit == 'word' else _SENTENCE_END.split(text)
  return [piece.strip() for piece in pieces if piece.strip()]


def permuted(pieces: list, order: str, rng: np.random.Generator) -> list:
  """`pieces` reversed, or in an order drawn from `rng`."""
  if order == 'reverse':
    return pieces[::-1]
  return [pieces[i] for i in rng.permutation(len(pieces))]


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError on an experiment config whose `objective.permute` is unusable."""
  settings = config.objective.permute
  if not 0 <= settings.rate <= 1:
    raise errors.UserError(f'objective.permute.rate={settings.rate!r} is not a probability; set '
                           'it in [0, 1] (the share of documents rewritten).')
  for key, choices in (('unit', UNITS), ('order', ORDERS), ('alternate', (True, False))):
    if settings[key] not in choices:
      raise errors.UserError(f'objective.permute.{key}={settings[key]!r} must be one of '
                             f'{list(choices)}.')
