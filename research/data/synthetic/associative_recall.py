"""Associative recall: key-value pairs, then a key whose value is the answer.

The recall task of "Just read twice: closing the recall gap for recurrent language models" (Arora
et al. 2024, arXiv 2407.05483), which shows recall is hard for a fixed-size recurrent state (it
reduces to set disjointness, set_disjointness.py) and that repeating the context (JRT-Prompt)
closes much of the gap; the single-query form of the multi-query associative recall of "Zoology:
Measuring and Improving Recall in Efficient Language Models" (Arora et al. 2023, arXiv 2312.04927).
A document is n pairs of a key (`key_length` lowercase letters, distinct within the document) and a
value (`value_length` digits), then ';' and one of the keys, whose value is the answer:

    qx=41 fb=07 mk=93;fb=07

With `read_twice` the pairs are written twice, '|' between (JRT-Prompt): 'qx=41 fb=07|qx=41
fb=07;fb='. Skill and difficulty are n, uniform over min_pairs..max_pairs; `query_position` is the
queried pair's index (how far back the model must look). The splits are independent draws.

Document i of a split is a pure function of (split, seed, i, parameters) (draws.block_stream).
"""

import re
import string
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import checks, draws

NAME = 'associative_recall'
VERSION = 1
SPLITS = checks.SPLITS
LETTERS = string.ascii_lowercase
REPEAT = '|'  # between the two readings of the context (read_twice)

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # documents per split; about 0.64 M characters with these defaults
    'min_pairs': 1,  # the fewest key-value pairs; n is uniform over min_pairs..max_pairs
    'max_pairs': 8,  # the most pairs (at most 26^key_length)
    'key_length': 2,  # letters of a key (1 to 4)
    'value_length': 2,  # digits of a value (1 to 9)
    'read_twice': False,  # write the pairs twice (JRT-Prompt)
}

_STREAM = 0x61737363  # seeded-stream tag of this generator
_PAIR = re.compile(r'([a-z]+)=(\d+)')


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  p['key_length'] = checks.check_number(task_name, 'key_length', p['key_length'], 1, 4)
  p['value_length'] = checks.check_number(task_name, 'value_length', p['value_length'], 1, 9)
  checks.check_range(task_name, p, 'min_pairs', 'max_pairs', 1,
                     min(len(LETTERS)**p['key_length'], 1000))
  p['read_twice'] = checks.check_bool(task_name, 'read_twice', p['read_twice'])
  return p


def read(context: str, read_twice: bool) -> str:
  """`context`, and again after REPEAT when `read_twice` (JRT-Prompt)."""
  return f'{context}{REPEAT}{context}' if read_twice else context


def _word(code: int, length: int, symbols: str) -> str:
  """`code` written in base len(symbols) with `length` symbols."""
  digits = []
  for _ in range(length):
    code, digit = divmod(code, len(symbols))
    digits.append(symbols[digit])
  return ''.join(reversed(digits))


def _draw(rng: np.random.Generator, p: dict) -> dict:
  num_pairs = int(rng.integers(p['min_pairs'], p['max_pairs'] + 1))
  codes = rng.choice(len(LETTERS)**p['key_length'], size=num_pairs, replace=False).tolist()
  values = rng.integers(0, 10**p['value_length'], size=num_pairs).tolist()
  query = int(rng.integers(num_pairs))
  keys = [_word(code, p['key_length'], LETTERS) for code in codes]
  values = [_word(v, p['value_length'], string.digits) for v in values]
  context = ' '.join(f'{k}={v}' for k, v in zip(keys, values))
  prompt = f'{read(context, p["read_twice"])};{keys[query]}='
  return {'text': prompt + values[query], 'skill': f'pairs_{num_pairs}', 'difficulty': num_pairs,
          'num_pairs': num_pairs, 'query_position': query, 'read_twice': p['read_twice'],
          'prompt': prompt, 'answer': values[query]}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` documents of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` ('pairs_<n>'), `difficulty` and `num_pairs` (n), `query_position` (the
  queried pair's index), `read_twice`, `prompt` (the pairs, ';', the key and '=') and `answer` (its
  value); `text == prompt + answer`. Parameters are validated here, before any document is made;
  errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return draws.block_stream(NAME, split, int(seed), p['num_documents'], _STREAM,
                            lambda rng: _draw(rng, p))


def context_of(prompt_context: str, read_twice: bool) -> str | None:
  """The context a prompt's `prompt_context` (what comes before its question) reads, or None
  when it is not read as `read_twice` says."""
  if not read_twice:
    return None if REPEAT in prompt_context else prompt_context
  first, repeat, second = prompt_context.partition(REPEAT)
  return first if repeat and first == second else None


def check(document: dict) -> bool:
  """True when the answer is the value paired with the queried key in the prompt's context, the
  keys are distinct and the metadata counts the pairs and the queried pair's position."""
  context, _, query = document['prompt'].rpartition(';')
  context = context_of(context, document['read_twice'])
  if context is None or not query.endswith('='):
    return False
  pairs = [_PAIR.fullmatch(item) for item in context.split(' ')]
  if not all(pairs):
    return False
  keys = [pair.group(1) for pair in pairs]
  if len(set(keys)) != len(keys) or query[:-1] not in keys:
    return False
  position = keys.index(query[:-1])
  return (document['answer'] == pairs[position].group(2) and len(keys) == document['num_pairs']
          and position == document['query_position']
          and document['text'] == document['prompt'] + document['answer'])
