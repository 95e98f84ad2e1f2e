"""Set disjointness: two sets of numbers, then whether they share no element.

From "Just read twice: closing the recall gap for recurrent language models" (Arora et al. 2024,
arXiv 2407.05483): recall in a fixed-size recurrent state reduces to set disjointness, the
communication-complexity problem, and the memory a streaming model needs depends on the order of
the sets: remembering the first set costs its size, so a smaller first set is easier. Repeating
the context (JRT-Prompt, `read_twice`) lets the model see both orders. A document is the first set,
';', the second set, '?', then 'yes' (disjoint) or 'no':

    3 17 42;8 5 17?no

Each set's size is uniform over min_size..max_size, drawn independently, its elements distinct
and uniform over 0..universe-1. Half the documents (a coin flip) are disjoint; the others share
exactly one element (the hardest case: one element decides). Skill is the order of the sizes
('smaller_first', 'equal', 'larger_first'); difficulty is the first set's size. The splits are
independent draws.

Document i of a split is a pure function of (split, seed, i, parameters) (draws.block_stream).
"""

import re
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import associative_recall, checks, draws

NAME = 'set_disjointness'
VERSION = 1
SPLITS = checks.SPLITS
ANSWERS = {True: 'yes', False: 'no'}  # disjoint -> answer

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # documents per split; about 0.57 M characters with these defaults
    'min_size': 1,  # the smallest set; each set's size is uniform over min_size..max_size
    'max_size': 8,  # the largest set
    'universe': 100,  # elements are numbers 0..universe-1 (at least 2 * max_size)
    'read_twice': False,  # write both sets twice (JRT-Prompt)
}

_STREAM = 0x7365746a  # seeded-stream tag of this generator
_SET = re.compile(r'\d+(?: \d+)*')


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  checks.check_range(task_name, p, 'min_size', 'max_size', 1, 1000)
  p['universe'] = checks.check_number(task_name, 'universe', p['universe'], 2 * p['max_size'],
                                      10**6)
  p['read_twice'] = checks.check_bool(task_name, 'read_twice', p['read_twice'])
  return p


def _order(first: int, second: int) -> str:
  return 'smaller_first' if first < second else 'larger_first' if first > second else 'equal'


def _draw(rng: np.random.Generator, p: dict) -> dict:
  sizes = rng.integers(p['min_size'], p['max_size'] + 1, size=2).tolist()
  elements = rng.choice(p['universe'], size=sum(sizes), replace=False).tolist()
  first, second = elements[:sizes[0]], elements[sizes[0]:]
  disjoint = bool(rng.integers(2))
  if not disjoint:  # one element of the second set becomes one of the first
    second[int(rng.integers(sizes[1]))] = first[int(rng.integers(sizes[0]))]
  context = f'{" ".join(map(str, first))};{" ".join(map(str, second))}'
  prompt = associative_recall.read(context, p['read_twice']) + '?'
  return {'text': prompt + ANSWERS[disjoint], 'skill': _order(*sizes), 'difficulty': sizes[0],
          'first_size': sizes[0], 'second_size': sizes[1], 'disjoint': disjoint,
          'read_twice': p['read_twice'], 'prompt': prompt, 'answer': ANSWERS[disjoint]}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` documents of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` ('smaller_first', 'equal' or 'larger_first'), `difficulty` and `first_size`
  (the first set's size), `second_size`, `disjoint`, `read_twice`, `prompt` (the sets and '?')
  and `answer` ('yes' or 'no'); `text == prompt + answer`. Parameters are validated here, before
  any document is made; errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return draws.block_stream(NAME, split, int(seed), p['num_documents'], _STREAM,
                            lambda rng: _draw(rng, p))


def check(document: dict) -> bool:
  """True when the answer says whether the prompt's two sets (of distinct elements each, of the
  sizes in the metadata) share no element."""
  prompt = document['prompt']
  context = associative_recall.context_of(prompt[:-1], document['read_twice'])
  if context is None or not prompt.endswith('?') or context.count(';') != 1:
    return False
  texts = context.split(';')
  if not all(_SET.fullmatch(text) for text in texts):
    return False
  sets = [text.split(' ') for text in texts]
  first, second = ({int(x) for x in elements} for elements in sets)
  return ([len(first), len(second)] == [len(s) for s in sets]
          == [document['first_size'], document['second_size']]
          and document['answer'] == ANSWERS[first.isdisjoint(second)]
          and document['disjoint'] == first.isdisjoint(second)
          and document['text'] == prompt + document['answer'])
