"""LEGO: resolve a chain of sign assignments over {+1, -1}.

From "Unveiling Transformers with LEGO: a synthetic reasoning task" (Zhang et al. 2022,
arXiv 2206.04301), used as a family of skills in "Skill-it! A Data-Driven Skills Framework for
Understanding and Training Language Models" (Chen et al. 2023, arXiv 2307.14430). A document is
one chain of `chain_length` distinct single-letter variables: the first gets a value, each next one
is `+` or `-` the previous one. The clauses are written (shuffled when `shuffle` is on, the paper's
setting, so that the model must find the chain itself), then a newline, then every variable's
resolved value in chain order:

    c=+b; a=+1; b=-a;
    a=+1, b=-1, c=-1

`prompt` is the clauses and the newline, `answer` the resolution, which records the resolved
values. Skill and difficulty are the chain length, uniform over min_chain..max_chain. Variable names
are a fresh random draw of distinct letters per chain, so their alphabetical order says nothing.
Skill-it's LEGO skills are one task per chain length: `data.tasks.lego_3 = {'source': 'lego',
'min_chain': 3, 'max_chain': 3}` is the skill of chains of 3.

Document i of a split is a pure function of (split, seed, i, parameters): chains are drawn in
blocks of `_BLOCK` from `np.random.default_rng([_STREAM, seed, split index, block])`, so a corpus
of n documents is the first n documents of any larger one.
"""

import string
from collections.abc import Iterable, Iterator

import numpy as np

from research.data.synthetic import checks

NAME = 'lego'
VERSION = 1
SPLITS = checks.SPLITS
VARIABLES = string.ascii_lowercase

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # chains per split; about 0.8 M characters with these defaults
    'min_chain': 1,  # the shortest chain; lengths are uniform over min_chain..max_chain
    'max_chain': 6,  # the longest chain (at most 26 variables)
    'shuffle': True,  # write the clauses in a random order instead of chain order
}

_STREAM = 0x6c65676f  # seeded-stream tag of this generator
_BLOCK = 1024


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  checks.check_range(task_name, p, 'min_chain', 'max_chain', 1, len(VARIABLES))
  p['shuffle'] = checks.check_bool(task_name, 'shuffle', p['shuffle'])
  return p


def _sign(value: int) -> str:
  return '+' if value > 0 else '-'


def _resolution(names: list[str], values: list[int]) -> str:
  return ', '.join(f'{name}={_sign(value)}1' for name, value in zip(names, values))


def _chain(names: list[str], signs: list[int], order: Iterable[int]) -> dict:
  """The document of one chain: variable 0 is signs[0], variable k is signs[k] * variable k-1."""
  clauses = [f'{names[0]}={_sign(signs[0])}1;']
  values = [signs[0]]
  for k in range(1, len(names)):
    clauses.append(f'{names[k]}={_sign(signs[k])}{names[k - 1]};')
    values.append(signs[k] * values[-1])
  prompt = ' '.join(clauses[k] for k in order) + '\n'
  answer = _resolution(names, values)
  return {'text': prompt + answer, 'skill': f'chain_{len(names)}', 'difficulty': len(names),
          'chain_length': len(names), 'prompt': prompt, 'answer': answer}


def _block(seed: int, split_index: int, block: int, p: dict) -> list[dict]:
  """The `_BLOCK` documents of one block, in order."""
  rng = np.random.default_rng([_STREAM, seed, split_index, block])
  max_chain = p['max_chain']
  length_B = rng.integers(p['min_chain'], max_chain + 1, size=_BLOCK).tolist()
  letters_BV = rng.permuted(np.tile(np.arange(len(VARIABLES)), (_BLOCK, 1)), axis=1)
  letters_BC = letters_BV[:, :max_chain].tolist()
  signs_BC = rng.choice([-1, 1], size=(_BLOCK, max_chain)).tolist()
  order_keys_BC = rng.random((_BLOCK, max_chain)).tolist()
  documents = []
  for b, n in enumerate(length_B):
    keys = order_keys_BC[b]
    order = sorted(range(n), key=keys.__getitem__) if p['shuffle'] else range(n)
    names = [VARIABLES[v] for v in letters_BC[b][:n]]
    documents.append(_chain(names, signs_BC[b][:n], order))
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
  """The `num_documents` chains of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` ('chain_<n>'), `difficulty` and `chain_length` (n), `prompt` (the clauses and a
  newline) and `answer` (every variable's value in chain order); `text == prompt + answer`.
  Parameters are validated here, before any document is made; errors name
  `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def check(document: dict) -> bool:
  """True when the answer is the chain in the prompt, resolved from its clauses alone."""
  prompt = document['prompt']
  if not prompt.endswith('\n'):
    return False
  definitions = {}  # variable -> (sign, source): source is '1' or another variable
  for clause in prompt[:-1].split(' '):
    if len(clause) != 5 or clause[1] != '=' or clause[2] not in '+-' or clause[4] != ';':
      return False
    definitions[clause[0]] = (1 if clause[2] == '+' else -1, clause[3])
  successors = {source: name for name, (_, source) in definitions.items()}
  names, values = [], []
  name = successors.get('1')
  while name is not None and name not in names:
    values.append(definitions[name][0] * (values[-1] if names else 1))
    names.append(name)
    name = successors.get(name)
  return (len(names) == len(definitions) == document['chain_length']
          and document['answer'] == _resolution(names, values)
          and document['text'] == prompt + document['answer'])
