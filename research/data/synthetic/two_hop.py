"""Two-hop fact composition: one-hop facts about made-up people, and questions that compose two.

From "Unveiling the Mechanisms of Explicit CoT Training: How Chain-of-Thought Enhances Reasoning
Generalization" (Yao et al. 2025, arXiv 2502.04667), whose two-hop facts follow "Grokked
Transformers are Implicit Reasoners" (Wang et al. 2024, arXiv 2405.15071): a model that knows
each one-hop fact may still fail to compose them, in distribution (ID: other compositions of the
same subject were trained) and more so out of distribution (OOD: no composition of the subject
was), and training with the bridge written out (chain of thought) closes much of the gap.

A world of `num_documents` subjects and `num_bridges` bridge people (all distinct made-up names):
a first-hop relation (FIRST_RELATIONS) takes a subject to a bridge person, a second-hop relation
(SECOND_RELATIONS) takes a bridge person to an attribute value (a city, an employer, ...):

    The mentor of Odette Blackwood is Felix Hale                          first hop
    The birth city of Felix Hale is Boston, MA                            second hop
    The birth city of the mentor of Odette Blackwood is Boston, MA        composed (two hops)

With `cot` the composed answer writes the bridge first: ' Felix Hale; the birth city of Felix Hale
is Boston, MA'. Every document is a prompt (up to 'is') and its answer. Splits:

- train: the one-hop facts of the hops `train_facts` names ('both', 'first', 'second' or 'none':
  a hop left out is seen only inside composed questions), then the composed questions that are
  not held out;
- validation: every one-hop fact as a probe (`relation` 'stated' when train states it, else
  'unstated'), then the held-out composed questions: those of the `ood_fraction` of subjects
  none of whose compositions is trained (`relation` 'ood'), and a `holdout` fraction of the
  others' (`relation` 'id').

Evaluating the task reports answer accuracy by `difficulty` (the hops, 1 or 2) and by `relation`
(research/evaluate.GROUP_KEYS). Subject i's facts depend only on (seed, i, num_bridges) and the
bridge people's on (seed, bridge), so a world of n subjects is the first n of any larger one.
"""

import functools
import itertools
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import biographies, checks, draws

NAME = 'two_hop'
VERSION = 1
SPLITS = checks.SPLITS
FIRST_RELATIONS = ('mentor', 'rival', 'neighbour', 'business partner', 'oldest friend')
SECOND_RELATIONS = {
    'birth city': biographies.CITIES,
    'employer': tuple(employer for employer, _ in biographies.EMPLOYERS),
    'university': biographies.UNIVERSITIES,
    'major': biographies.MAJORS,
}
TRAIN_FACTS = ('both', 'first', 'second', 'none')

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 300,  # subjects (not documents); about 0.18 M characters of train
    'num_bridges': 60,  # the people first-hop relations lead to
    'first_relations': 3,  # the first FIRST_RELATIONS used (at most 5)
    'second_relations': 3,  # the first SECOND_RELATIONS used (at most 4)
    'train_facts': 'both',  # both | first | second | none: the hops stated as one-hop facts
    'holdout': 0.2,  # of an ID subject's composed questions, held out for validation
    'ood_fraction': 0.1,  # of the subjects, none of whose composed questions is trained
    'cot': False,  # a composed answer writes the bridge person first
}

_STREAM = 0x74776f68  # seeded-stream tag of this generator (subject facts, names)
_VALUE_STREAM = 0x76616c75  # the bridge people's attribute values


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1,
                                           draws.NUM_NAMES // 2)
  p['num_bridges'] = checks.check_number(task_name, 'num_bridges', p['num_bridges'], 1,
                                         draws.NUM_NAMES // 2)
  p['first_relations'] = checks.check_number(task_name, 'first_relations', p['first_relations'],
                                             1, len(FIRST_RELATIONS))
  p['second_relations'] = checks.check_number(task_name, 'second_relations',
                                              p['second_relations'], 1, len(SECOND_RELATIONS))
  if p['train_facts'] not in TRAIN_FACTS:
    checks.fail(task_name, 'train_facts', p['train_facts'], f'is invalid; set it to one of '
                f'{list(TRAIN_FACTS)}.')
  for key in ('holdout', 'ood_fraction'):
    p[key] = checks.check_number(task_name, key, p[key], 0, 1, kind=float)
  p['cot'] = checks.check_bool(task_name, 'cot', p['cot'])
  return p


def subject(seed: int, index: int) -> str:
  return draws.person(_STREAM, seed, index)


def bridge_person(seed: int, bridge: int) -> str:
  """Bridge person `bridge`: names taken from the end of the seed's order, subjects' from the
  start, so the two never meet."""
  return draws.person(_STREAM, seed, draws.NUM_NAMES - 1 - bridge)


def bridges(seed: int, index: int, num_bridges: int) -> list[int]:
  """The bridge person each first-hop relation takes subject `index` to."""
  rng = np.random.default_rng([_STREAM, seed, index])
  return rng.integers(num_bridges, size=len(FIRST_RELATIONS)).tolist()


@functools.lru_cache(maxsize=2**16)
def _values(seed: int, bridge: int) -> dict[str, str]:
  rng = np.random.default_rng([_VALUE_STREAM, seed, bridge])
  return {relation: pool[int(rng.integers(len(pool)))]
          for relation, pool in SECOND_RELATIONS.items()}


def value(seed: int, bridge: int, relation: str) -> str:
  """The value second-hop `relation` gives bridge person `bridge`."""
  return _values(seed, bridge)[relation]


def first_hop(seed: int, index: int, relation: str, bridge: int) -> tuple[str, str]:
  """(prompt, answer): subject `index`'s bridge person by first-hop `relation`."""
  return f'The {relation} of {subject(seed, index)} is', f' {bridge_person(seed, bridge)}'


def second_hop(seed: int, bridge: int, relation: str) -> tuple[str, str]:
  """(prompt, answer): bridge person `bridge`'s value by second-hop `relation`."""
  return f'The {relation} of {bridge_person(seed, bridge)} is', f' {value(seed, bridge, relation)}'


def composed(seed: int, index: int, first: str, second: str, bridge: int,
             cot: bool) -> tuple[str, str]:
  """(prompt, answer): the `second` of the `first` of subject `index`, whose bridge is `bridge`;
  with `cot` the answer names the bridge person first."""
  name, answer = bridge_person(seed, bridge), value(seed, bridge, second)
  return (f'The {second} of the {first} of {subject(seed, index)} is',
          f' {name}; the {second} of {name} is {answer}' if cot else f' {answer}')


def _stated(hop: str, train_facts: str) -> bool:
  return train_facts in ('both', hop)


def _document(skill: str, texts: tuple[str, str], relations: str, relation: str, stated: bool,
              seed: int, source: int, bridge: int, p: dict) -> dict:
  hops = 2 if skill == 'two_hop' else 1
  prompt, answer = texts
  return {'text': prompt + answer, 'skill': skill, 'difficulty': hops, 'hops': hops,
          'relations': relations, 'relation': relation, 'stated': stated, 'cot': p['cot'],
          'seed': seed, 'source': source, 'bridge': bridge, 'num_bridges': p['num_bridges'],
          'prompt': prompt, 'answer': answer}


def _second_hop(seed: int, bridge: int, relation: str, p: dict) -> dict:
  stated = _stated('second', p['train_facts'])
  return _document('second_hop', second_hop(seed, bridge, relation), relation,
                   'stated' if stated else 'unstated', stated, seed, -1, bridge, p)


def _first_hop(seed: int, index: int, bridge: int, relation: str, p: dict) -> dict:
  stated = _stated('first', p['train_facts'])
  return _document('first_hop', first_hop(seed, index, relation, bridge), relation,
                   'stated' if stated else 'unstated', stated, seed, index, bridge, p)


def _two_hop(seed: int, index: int, bridge: int, first: str, second: str, ood: bool,
             p: dict) -> dict:
  return _document('two_hop', composed(seed, index, first, second, bridge, p['cot']),
                   f'{first}>{second}', 'ood' if ood else 'id', p['train_facts'] == 'both',
                   seed, index, bridge, p)


def _subject_documents(seed: int, index: int, split: str, p: dict) -> Iterator[dict]:
  """Subject `index`'s first-hop facts (train: those stated) and composed questions (train: those
  not held out; validation: those held out)."""
  validation = split == 'validation'
  firsts = FIRST_RELATIONS[:p['first_relations']]
  seconds = list(SECOND_RELATIONS)[:p['second_relations']]
  bridge_of = bridges(seed, index, p['num_bridges'])
  if validation or _stated('first', p['train_facts']):
    for r, first in enumerate(firsts):
      yield _first_hop(seed, index, bridge_of[r], first, p)
  ood = draws.held_out(f'{seed}:{index}:ood', p['ood_fraction'])
  for r, first in enumerate(firsts):
    for second in seconds:
      held = ood or draws.held_out(f'{seed}:{index}:{first}:{second}', p['holdout'])
      if held == validation:
        yield _two_hop(seed, index, bridge_of[r], first, second, ood, p)


def _generate(split: str, seed: int, p: dict) -> Iterator[dict]:
  """The second-hop facts (train: if stated), then each subject's documents."""
  seconds = list(SECOND_RELATIONS)[:p['second_relations']]
  shown = split == 'validation' or _stated('second', p['train_facts'])
  facts = (_second_hop(seed, bridge, second, p)
           for bridge in range(p['num_bridges'] if shown else 0) for second in seconds)
  questions = (document for index in range(p['num_documents'])
               for document in _subject_documents(seed, index, split, p))
  for number, document in enumerate(itertools.chain(facts, questions)):
    yield {'id': f'{NAME}/{split}/{number}', **document}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The documents of `split` for a world of `num_documents` subjects (see the module docstring).

  Metadata: `skill` ('first_hop', 'second_hop' or 'two_hop'), `difficulty` and `hops` (1 or 2),
  `relations` ('mentor', 'birth city' or 'mentor>birth city'), `relation` ('stated' / 'unstated'
  for a one-hop fact, 'id' / 'ood' for a composed question), `stated` (whether train states the
  one-hop fact, or for a composed question both of its hops), `seed`, `source` (the subject's
  index; -1 for a second-hop fact), `bridge` (the bridge person's index), `num_bridges`, `prompt`
  and `answer`; `text == prompt + answer`. Parameters are validated here, before any document is
  made; errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def check(document: dict) -> bool:
  """True when the answer is the world's fact (or composition of two facts) the prompt asks for,
  recomputed from the seed, the subject and bridge indices and the relations named."""
  seed, source, bridge = document['seed'], document['source'], document['bridge']
  relations, skill = document['relations'].split('>'), document['skill']
  hops = {'first_hop': (FIRST_RELATIONS,), 'second_hop': (SECOND_RELATIONS,),
          'two_hop': (FIRST_RELATIONS, SECOND_RELATIONS)}.get(skill, ())
  if (len(relations) != len(hops) or not all(r in known for r, known in zip(relations, hops))
      or not 0 <= bridge < document['num_bridges']):
    return False
  if skill != 'second_hop' and bridges(seed, source, document['num_bridges'])[
      FIRST_RELATIONS.index(relations[0])] != bridge:
    return False
  if skill == 'first_hop':
    expected = first_hop(seed, source, relations[0], bridge)
  elif skill == 'second_hop':
    expected = second_hop(seed, bridge, relations[0])
  else:
    expected = composed(seed, source, *relations, bridge, document['cot'])
  return ((document['prompt'], document['answer']) == expected
          and document['text'] == document['prompt'] + document['answer'])
