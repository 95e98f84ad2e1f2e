"""Sorting a list of numbers, optionally with index hints, for length generalization.

From "Improving Length-Generalization in Transformers via Task Hinting" (Awasthi & Gupta 2023,
arXiv 2310.00726), whose test bed is sorting: trained on lists of at most 20 numbers, a standard
transformer sorts lists of 100 with <1% accuracy. Sorting is also the set-output example of "Order
Matters: Sequence to sequence for sets" (Vinyals et al. 2015, arXiv 1511.06391). A document is a
list of numbers uniform over 0..max_value (repeats allowed), '=', then the list sorted:

    52 7 31 7=7 7 31 52

With `index_hints` every number carries the letter of its position in the input, and the answer
carries each number's letter: the index hints of "What Algorithms can Transformers Learn? A Study
in Length Generalization" (Zhou et al. 2023, arXiv 2310.16028) and the positional descriptions of
"Positional Description Matters for Transformers Arithmetic" (Shen et al. 2023, arXiv 2311.14737),
which let a model find a number by its position. Equal numbers keep their input order (a stable
sort), so the answer is unique:

    a52 b7 c31 d7=b7 d7 c31 a52

Skill and difficulty are the list's length, uniform over min_length..max_length in train and over
validation_min_length..validation_max_length in validation (longer lists there test length
generalization). The splits are independent draws: a short list can be in both.

Document i of a split is a pure function of (split, seed, i, parameters) (draws.block_stream).
"""

import string
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import checks, draws

NAME = 'sorting'
VERSION = 1
SPLITS = checks.SPLITS
HINTS = string.ascii_lowercase + string.ascii_uppercase  # the hint of input position i
_MAX_LENGTH = 1000

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # lists per split; about 0.68 M characters with these defaults
    'min_length': 2,  # the shortest training list; lengths are uniform over the range
    'max_length': 10,  # the longest training list (at most 52 with index_hints)
    'validation_min_length': 2,  # the shortest validation list
    'validation_max_length': 10,  # the longest validation list: above max_length to extrapolate
    'max_value': 99,  # numbers are uniform over 0..max_value
    'index_hints': False,  # tag each number with the letter of its input position
}

_STREAM = 0x736f7274  # seeded-stream tag of this generator


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  p['index_hints'] = checks.check_bool(task_name, 'index_hints', p['index_hints'])
  longest = len(HINTS) if p['index_hints'] else _MAX_LENGTH
  checks.check_range(task_name, p, 'min_length', 'max_length', 1, longest)
  checks.check_range(task_name, p, 'validation_min_length', 'validation_max_length', 1, longest)
  p['max_value'] = checks.check_number(task_name, 'max_value', p['max_value'], 1, 10**9)
  return p


def _items(values: list[int], hinted: bool) -> list[str]:
  return [f'{HINTS[i]}{v}' if hinted else str(v) for i, v in enumerate(values)]


def sorted_answer(values: list[int], hinted: bool) -> str:
  """The answer to `values`: the numbers in ascending order (ties in input order), each with its
  input position's hint when `hinted`."""
  items = _items(values, hinted)
  return ' '.join(items[i] for i in sorted(range(len(values)), key=values.__getitem__))


def _document(values: list[int], hinted: bool) -> dict:
  prompt = ' '.join(_items(values, hinted)) + '='
  answer = sorted_answer(values, hinted)
  return {'text': prompt + answer, 'skill': f'length_{len(values)}', 'difficulty': len(values),
          'length': len(values), 'hinted': hinted, 'prompt': prompt, 'answer': answer}


def _draw(rng: np.random.Generator, low: int, high: int, p: dict) -> dict:
  length = int(rng.integers(low, high + 1))
  values = rng.integers(0, p['max_value'] + 1, size=length).tolist()
  return _document(values, p['index_hints'])


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` lists of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` ('length_<n>'), `difficulty` and `length` (n), `hinted` (index_hints),
  `prompt` (the list and '=') and `answer` (the sorted list); `text == prompt + answer`.
  Parameters are validated here, before any document is made; errors name
  `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  prefix = 'validation_' if split == 'validation' else ''
  low, high = p[f'{prefix}min_length'], p[f'{prefix}max_length']
  return draws.block_stream(NAME, split, int(seed), p['num_documents'], _STREAM,
                            lambda rng: _draw(rng, low, high, p))


def _values(prompt: str, hinted: bool) -> list[int] | None:
  """The numbers of a prompt, or None when it is not a list in the document's format."""
  items = prompt[:-1].split(' ')
  if not prompt.endswith('=') or len(items) > (len(HINTS) if hinted else _MAX_LENGTH):
    return None
  width = 1 if hinted else 0
  if any(not item[width:].isdigit() or (hinted and item[0] != HINTS[i])
         for i, item in enumerate(items)):
    return None
  return [int(item[width:]) for item in items]


def check(document: dict) -> bool:
  """True when the answer is the prompt's numbers sorted (with their hints when hinted)."""
  values = _values(document['prompt'], document['hinted'])
  return (values is not None and len(values) == document['length']
          and document['answer'] == sorted_answer(values, document['hinted'])
          and document['text'] == document['prompt'] + document['answer'])
