"""SKILL-MIX-style skill composition: k string skills applied in order to a random string.

From "Can Models Learn Skill Composition from Examples?" (Zhao et al. 2024, arXiv 2409.19808),
which fine-tunes on texts that each combine k language skills (the SKILL-MIX evaluation of Yu et al.
2023, arXiv 2310.17567) and finds that training on k = 2 and 3 improves composing k = 4 and 5 and
unseen combinations. Its skills are GPT-4-written rhetorical ones; here they are string operations
with one right answer, so a small model trained from scratch can be scored exactly. A document
names k distinct skills, a string of lowercase letters and digits, and the result of applying the
skills left to right:

    reverse,uppercase(ab3k)=K3BA

Skills (SKILLS): reverse, uppercase, add_one (each digit + 1 mod 10), next_letter (each letter to
the next, z to a), duplicate (the string twice), rotate (the first symbol moved to the end), sort
(symbols in code-point order), swap_pairs (symbols 1-2, 3-4, ... swapped). k is uniform over
min_skills..max_skills in train and validation_min_skills..validation_max_skills in validation,
the skills a uniform draw of k of `skills` in a random order. `held_out_pairs` holds out that
fraction of the unordered pairs of skills (a seeded draw; at least one when above 0): no training
document uses both skills of a held-out pair, and every validation document uses both of at least
one (so validation k is at least 2). Skill is 'k_<k>' and difficulty k; `skills` lists them in
order; `held_out` says whether a held-out pair is among them. The splits are otherwise independent
draws.

Document i of a split is a pure function of (split, seed, i, parameters) (draws.block_stream).
"""

import functools
import itertools
import re
import string
from collections.abc import Iterator, Sequence

import numpy as np

from research.data.synthetic import checks, draws

NAME = 'skill_mix'
VERSION = 1
SPLITS = checks.SPLITS
SYMBOLS = string.ascii_lowercase + string.digits


def _shift(text: str, alphabet: str) -> str:
  return text.translate(str.maketrans(alphabet, alphabet[1:] + alphabet[0]))


SKILLS = {
    'reverse': lambda s: s[::-1],
    'uppercase': str.upper,
    'add_one': lambda s: _shift(s, string.digits),
    'next_letter': lambda s: _shift(_shift(s, string.ascii_lowercase), string.ascii_uppercase),
    'duplicate': lambda s: s + s,
    'rotate': lambda s: s[1:] + s[:1],
    'sort': lambda s: ''.join(sorted(s)),
    'swap_pairs': lambda s: ''.join(s[i:i + 2][::-1] for i in range(0, len(s), 2)),
}

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # documents per split; about 0.6 M characters with these defaults
    'skills': tuple(SKILLS),  # the skills documents draw from
    'min_skills': 1,  # the fewest skills of a training document (k)
    'max_skills': 3,  # the most
    'validation_min_skills': 1,  # the fewest skills of a validation document
    'validation_max_skills': 3,  # the most: above max_skills to test composing more
    'held_out_pairs': 0.0,  # the fraction of skill pairs that training never combines
    'min_length': 3,  # the shortest input string; lengths are uniform over the range
    'max_length': 6,  # the longest
}

_STREAM = 0x736b696c  # seeded-stream tag of this generator
_PAIR_STREAM = 0x70616972  # the held-out pairs' draw
_PROMPT = re.compile(r'([a-z_]+(?:,[a-z_]+)*)\(([a-z0-9]+)\)=')


def _check_skills(task_name: str, value) -> tuple[str, ...]:
  if isinstance(value, str) or not isinstance(value, Sequence) or not value:
    checks.fail(task_name, 'skills', value, f'is invalid; set it to a list of {list(SKILLS)}.')
  unknown = [skill for skill in value if skill not in SKILLS]
  if unknown or len(set(value)) != len(value):
    checks.fail(task_name, 'skills', value, f'names unknown skills {unknown} or a skill twice; '
                f'list distinct skills of {list(SKILLS)}.')
  return tuple(value)


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  p['skills'] = _check_skills(task_name, p['skills'])
  count = len(p['skills'])
  checks.check_range(task_name, p, 'min_skills', 'max_skills', 1, count)
  checks.check_range(task_name, p, 'validation_min_skills', 'validation_max_skills', 1, count)
  checks.check_range(task_name, p, 'min_length', 'max_length', 1, 100)
  p['held_out_pairs'] = checks.check_number(task_name, 'held_out_pairs', p['held_out_pairs'], 0,
                                            1, kind=float)
  if p['held_out_pairs'] and p['validation_min_skills'] < 2:
    checks.fail(task_name, 'held_out_pairs', p['held_out_pairs'], 'needs validation documents '
                f'of 2 skills or more (validation_min_skills={p["validation_min_skills"]}); set '
                'validation_min_skills >= 2.')
  for prefix, validation in (('', False), ('validation_', True)):
    for k in range(p[f'{prefix}min_skills'], p[f'{prefix}max_skills'] + 1):
      if not _subsets(int(seed), p['skills'], p['held_out_pairs'], k, validation):
        checks.fail(task_name, 'held_out_pairs', p['held_out_pairs'], f'leaves no combination of '
                    f'{k} skills for {"validation" if validation else "training"}; lower it or '
                    f'{prefix}max_skills.')
  return p


@functools.lru_cache(maxsize=64)
def held_out_pairs(seed: int, skills: tuple[str, ...], fraction: float) -> frozenset:
  """The held-out unordered pairs (frozensets of two skills): a seeded draw of round(fraction *
  pairs) of the pairs of `skills`, at least one when `fraction` > 0."""
  pairs = list(itertools.combinations(skills, 2))
  count = max(1, round(fraction * len(pairs))) if fraction else 0
  order = np.random.default_rng([_PAIR_STREAM, seed]).permutation(len(pairs))
  return frozenset(frozenset(pairs[i]) for i in order[:count].tolist())


def has_held_out_pair(skills: Sequence[str], held_out: frozenset) -> bool:
  return any(frozenset(pair) in held_out for pair in itertools.combinations(skills, 2))


@functools.lru_cache(maxsize=256)
def _subsets(seed: int, skills: tuple[str, ...], fraction: float, k: int,
             validation: bool) -> tuple[tuple[str, ...], ...]:
  """The k-subsets of `skills` a split draws from: training's hold no held-out pair, and with
  held-out pairs validation's hold one at least."""
  held_out = held_out_pairs(seed, skills, fraction)
  return tuple(subset for subset in itertools.combinations(skills, k)
               if not fraction or has_held_out_pair(subset, held_out) == validation)


def apply(skills: Sequence[str], text: str) -> str:
  """`text` after each of `skills` in turn."""
  for skill in skills:
    text = SKILLS[skill](text)
  return text


def _draw(rng: np.random.Generator, validation: bool, seed: int, p: dict) -> dict:
  prefix = 'validation_' if validation else ''
  k = int(rng.integers(p[f'{prefix}min_skills'], p[f'{prefix}max_skills'] + 1))
  subsets = _subsets(seed, p['skills'], p['held_out_pairs'], k, validation)
  subset = subsets[int(rng.integers(len(subsets)))]
  chosen = [subset[i] for i in rng.permutation(k).tolist()]
  length = int(rng.integers(p['min_length'], p['max_length'] + 1))
  text = ''.join(SYMBOLS[i] for i in rng.integers(len(SYMBOLS), size=length).tolist())
  held_out = has_held_out_pair(chosen, held_out_pairs(seed, p['skills'], p['held_out_pairs']))
  prompt = f'{",".join(chosen)}({text})='
  answer = apply(chosen, text)
  return {'text': prompt + answer, 'skill': f'k_{k}', 'difficulty': k, 'k': k,
          'skills': ','.join(chosen), 'held_out': held_out, 'length': length, 'prompt': prompt,
          'answer': answer}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` documents of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` ('k_<k>'), `difficulty` and `k` (the number of skills), `skills` (in the order
  applied, as 'reverse,uppercase'), `held_out` (whether a held-out pair is among them), `length`
  (the input's), `prompt` (the skills, the input in parentheses and '=') and `answer` (the
  result); `text == prompt + answer`. Parameters are validated here, before any document is
  made; errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  validation = split == 'validation'
  return draws.block_stream(NAME, split, int(seed), p['num_documents'], _STREAM,
                            lambda rng: _draw(rng, validation, int(seed), p))


def check(document: dict) -> bool:
  """True when the answer is the prompt's string after the prompt's skills, applied in order."""
  match = _PROMPT.fullmatch(document['prompt'])
  if match is None:
    return False
  skills = match.group(1).split(',')
  return (all(skill in SKILLS for skill in skills) and len(set(skills)) == len(skills)
          and document['answer'] == apply(skills, match.group(2))
          and document['skills'] == match.group(1) and document['k'] == len(skills)
          and document['text'] == document['prompt'] + document['answer'])
