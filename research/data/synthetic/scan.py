"""SCAN: compositional navigation commands and their action sequences.

The grammar of "Generalization without Systematicity: On the Compositional Skills of
Sequence-to-Sequence Recurrent Networks" (Lake & Baroni 2018, arXiv 1711.00350), the synthetic
set whose complexity, repetition and difficulty "Data Factors for Better Compositional
Generalization" (Zhou et al. 2023, arXiv 2311.04420) varies. A command is one or two phrases
joined by 'and' (in order) or 'after' (the second first); a phrase is a verb, optionally 'twice'
or 'thrice'; a verb is a primitive (walk, look, run, jump), or a primitive or 'turn' with a
direction: 'left', 'opposite left' (turn twice, then act), 'around left' (turn and act, four
times), and the same to the right. All 20,910 commands are enumerated. A document is a command,
'=', then its actions:

    jump twice and walk left=JUMP JUMP LTURN WALK

Splits. With `held_out_primitive` '' (SCAN's 'simple' split) a seeded hash holds out a `holdout`
fraction of the commands for validation. With `held_out_primitive` 'jump' (the 'add jump' split,
likewise walk, look or run) validation holds every command that composes jump, and training every
command without it plus the bare 'jump', which is a `primitive_fraction` share of the training
documents so that the model learns what it means. Training commands have at most `max_depth`
operators (the simple-examples arm of Data Factors). Documents draw their commands uniformly from
their split's pool. Skill and difficulty are the command's depth: the number of its operator words
(left, right, opposite, around, twice, thrice, and, after); `primitives` lists the primitives it
uses.

Document i of a split is a pure function of (split, seed, i, parameters) (draws.block_stream).
"""

import functools
import itertools
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import checks, draws

NAME = 'scan'
VERSION = 1
SPLITS = checks.SPLITS
ACTIONS = {'walk': 'WALK', 'look': 'LOOK', 'run': 'RUN', 'jump': 'JUMP'}
TURNS = {'left': 'LTURN', 'right': 'RTURN'}
OPERATORS = frozenset({'left', 'right', 'opposite', 'around', 'twice', 'thrice', 'and', 'after'})
REPEATS = {'twice': 2, 'thrice': 3}
HELD_OUT_PRIMITIVES = ('', *ACTIONS)
MAX_DEPTH = 7  # 'walk around left thrice and run opposite right twice'

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # commands per split; about 2.4 M characters with these defaults
    'held_out_primitive': '',  # '' (random split) or a primitive whose compositions are held out
    'holdout': 0.2,  # the random split's fraction of commands held out for validation
    'primitive_fraction': 0.1,  # the share of training documents that are the bare primitive
    'max_depth': MAX_DEPTH,  # training commands have at most this many operator words
}

_STREAM = 0x7363616e  # seeded-stream tag of this generator


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  if p['held_out_primitive'] not in HELD_OUT_PRIMITIVES:
    checks.fail(task_name, 'held_out_primitive', p['held_out_primitive'], f'is invalid; set it '
                f'to one of {list(HELD_OUT_PRIMITIVES)}.')
  p['holdout'] = checks.check_number(task_name, 'holdout', p['holdout'], 0.01, 0.99, kind=float)
  p['primitive_fraction'] = checks.check_number(task_name, 'primitive_fraction',
                                                p['primitive_fraction'], 0, 1, kind=float)
  p['max_depth'] = checks.check_number(task_name, 'max_depth', p['max_depth'], 0, MAX_DEPTH)
  return p


@functools.cache
def commands() -> tuple[str, ...]:
  """Every SCAN command (20,910), in a fixed order."""
  doers = (*ACTIONS, 'turn')
  verbs = [*ACTIONS] + [f'{doer} {how}{direction}' for doer in doers
                        for how in ('', 'opposite ', 'around ') for direction in TURNS]
  phrases = [f'{verb}{repeat}' for verb in verbs for repeat in ('', ' twice', ' thrice')]
  pairs = [f'{a} {joint} {b}' for joint in ('and', 'after')
           for a, b in itertools.product(phrases, phrases)]
  return tuple(phrases + pairs)


def _verb(words: list[str]) -> list[str] | None:
  """The actions of a verb's words, or None when they are not a verb."""
  doer, *how = words
  act = [ACTIONS[doer]] if doer in ACTIONS else []
  if not how:
    return act or None
  *manner, direction = how
  if doer not in (*ACTIONS, 'turn') or direction not in TURNS or manner not in (
      [], ['opposite'], ['around']):
    return None
  turn = [TURNS[direction]]
  return {(): turn + act, ('opposite',): turn * 2 + act,
          ('around',): (turn + act) * 4}[tuple(manner)]


def _phrase(words: list[str]) -> list[str] | None:
  """The actions of a phrase's words (a verb, then 'twice' or 'thrice' or neither), or None."""
  times = REPEATS.get(words[-1], 1) if words else 1
  verb_words = words[:-1] if times > 1 else words
  verb = _verb(verb_words) if verb_words else None
  return None if verb is None else verb * times


def actions(command: str) -> list[str] | None:
  """The action sequence of `command`, or None when it is not a SCAN command."""
  words = command.split(' ')
  for joint in ('and', 'after'):
    if joint in words:
      cut = words.index(joint)
      first, second = _phrase(words[:cut]), _phrase(words[cut + 1:])
      if first is None or second is None:
        return None
      return first + second if joint == 'and' else second + first
  return _phrase(words)


def depth(command: str) -> int:
  return sum(word in OPERATORS for word in command.split(' '))


def primitives(command: str) -> list[str]:
  """The primitives (and 'turn') a command uses, sorted."""
  return sorted({word for word in command.split(' ') if word in ACTIONS or word == 'turn'})


def _held_out(command: str, seed: int, p: dict) -> bool:
  primitive = p['held_out_primitive']
  if primitive:
    return primitive in command.split(' ') and command != primitive
  return draws.held_out(f'{seed}:{command}', p['holdout'])


@functools.lru_cache(maxsize=16)
def _pool(seed: int, validation: bool, held_out_primitive: str, holdout: float,
          max_depth: int) -> tuple[str, ...]:
  p = {'held_out_primitive': held_out_primitive, 'holdout': holdout}
  return tuple(c for c in commands() if _held_out(c, seed, p) == validation
               and (validation or depth(c) <= max_depth))


def pool(split: str, seed: int, **params) -> tuple[str, ...]:
  """The commands `split`'s documents draw from (the bare held-out primitive aside)."""
  p = _resolve_params(split, seed, 1, params, NAME)
  return _pool(int(seed), split == 'validation', p['held_out_primitive'], p['holdout'],
               p['max_depth'])


def _document(command: str, p: dict) -> dict:
  answer = ' '.join(actions(command))
  return {'text': f'{command}={answer}', 'skill': f'depth_{depth(command)}',
          'difficulty': depth(command), 'depth': depth(command),
          'primitives': ','.join(primitives(command)), 'num_actions': answer.count(' ') + 1,
          'held_out_primitive': p['held_out_primitive'], 'prompt': f'{command}=',
          'answer': answer}


def _draw(rng: np.random.Generator, commands_pool: tuple[str, ...], bare: str, p: dict) -> dict:
  if bare and rng.random() < p['primitive_fraction']:
    return _document(bare, p)
  return _document(commands_pool[int(rng.integers(len(commands_pool)))], p)


def _generate(split: str, seed: int, p: dict) -> Iterator[dict]:
  validation = split == 'validation'
  commands_pool = _pool(seed, validation, p['held_out_primitive'], p['holdout'], p['max_depth'])
  bare = '' if validation else p['held_out_primitive']
  yield from draws.block_stream(NAME, split, seed, p['num_documents'], _STREAM,
                                lambda rng: _draw(rng, commands_pool, bare, p))


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` commands of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` ('depth_<d>'), `difficulty` and `depth` (d, the operator words), `primitives`
  ('jump,walk'), `num_actions`, `held_out_primitive` (the parameter), `prompt` (the command and
  '=') and `answer` (the actions); `text == prompt + answer`. Parameters are validated here,
  before any document is made; errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def check(document: dict) -> bool:
  """True when the answer is the prompt's command carried out by the grammar's meaning."""
  prompt = document['prompt']
  command_actions = actions(prompt[:-1]) if prompt.endswith('=') else None
  return (command_actions is not None and document['answer'] == ' '.join(command_actions)
          and document['depth'] == depth(prompt[:-1])
          and document['text'] == prompt + document['answer'])
