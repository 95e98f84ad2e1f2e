"""Copying: a random string, a separator, then the same string again.

The copying probe of "Scaling Laws and Interpretability of Learning from Repeated Data" (Hernandez
et al. 2022, arXiv 2205.10487), which measures the induction heads of "In-context Learning and
Induction Heads" (Olsson et al. 2022, arXiv 2209.11895): the first copy of the string is random,
so only looking back at it can predict the second. A document is `length` symbols drawn uniformly
and independently from the first `alphabet` lowercase letters, then `SEPARATOR`, then the same
symbols:

    qhxkwb|qhxkwb

`prompt` is the first copy and the separator, `answer` the second copy, so a run that evaluates the
task (eval.tasks) reports how well the model copies: `eval/<task>/answer_loss` (its cross-entropy
on the copy; ln(alphabet) nats a symbol for a model that does not copy but knows the alphabet) and
`answer_accuracy` (the whole copy right, research/evaluate.py). Skill and difficulty are the length,
uniform over min_length..max_length. The splits are independent draws, not disjoint sets of
strings: a string of 6 or more of 26 symbols (3e8 of them) is almost never drawn twice.

Document i of a split is a pure function of (split, seed, i, parameters): strings are drawn in
blocks of `_BLOCK` from `np.random.default_rng([_STREAM, seed, split index, block])`, so a corpus
of n documents is the first n documents of any larger one.
"""

import string
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import checks

NAME = 'copying'
VERSION = 1
SPLITS = checks.SPLITS
SYMBOLS = string.ascii_lowercase
SEPARATOR = '|'

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # strings per split; about 0.4 M characters with these defaults
    'min_length': 4,  # the shortest string; lengths are uniform over min_length..max_length
    'max_length': 16,  # the longest string
    'alphabet': 26,  # symbols are the first `alphabet` lowercase letters
}

_STREAM = 0x636f7079  # seeded-stream tag of this generator
_BLOCK = 1024
_MAX_LENGTH = 1000  # keeps a block's symbol buffer (_BLOCK * max_length bytes) small


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  checks.check_range(task_name, p, 'min_length', 'max_length', 1, _MAX_LENGTH)
  p['alphabet'] = checks.check_number(task_name, 'alphabet', p['alphabet'], 2, len(SYMBOLS))
  return p


def _block(seed: int, split_index: int, block: int, p: dict) -> list[dict]:
  """The `_BLOCK` documents of one block, in order."""
  rng = np.random.default_rng([_STREAM, seed, split_index, block])
  length_B = rng.integers(p['min_length'], p['max_length'] + 1, size=_BLOCK).tolist()
  symbols_BM = rng.integers(0, p['alphabet'], size=(_BLOCK, p['max_length']), dtype=np.uint8)
  buffer = (symbols_BM + ord(SYMBOLS[0])).tobytes().decode('ascii')
  width, documents = p['max_length'], []
  for b, n in enumerate(length_B):
    copy = buffer[b * width:b * width + n]
    documents.append({'text': copy + SEPARATOR + copy, 'skill': f'length_{n}', 'difficulty': n,
                      'length': n, 'prompt': copy + SEPARATOR, 'answer': copy})
  return documents


def _generate(split: str, seed: int, p: dict) -> Iterator[dict]:
  split_index = SPLITS.index(split)
  for index in range(p['num_documents']):
    block, offset = divmod(index, _BLOCK)
    if offset == 0:
      documents = _block(seed, split_index, block, p)
    yield {'id': f'{NAME}/{split}/{index}', **documents[offset]}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` strings of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` ('length_<n>'), `difficulty` and `length` (n), `prompt` (the string and
  `SEPARATOR`) and `answer` (the string again); `text == prompt + answer`. Parameters are validated
  here, before any document is made; errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def check(document: dict) -> bool:
  """True when the answer is the prompt's string, a string of lowercase letters before the
  separator."""
  prompt, answer = document['prompt'], document['answer']
  copy = prompt[:-1]
  return (prompt.endswith(SEPARATOR) and answer == copy and len(copy) == document['length']
          and all(symbol in SYMBOLS for symbol in copy)
          and document['text'] == prompt + answer)
