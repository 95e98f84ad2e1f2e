"""Reversal-curse facts: "A is B" in training, "B is ?" at test.

From "The Reversal Curse: LLMs trained on 'A is B' fail to learn 'B is A'" (Berglund et al. 2023,
arXiv 2309.12288), its fictitious name-description pairs. Fact i pairs a unique made-up name
("Odette Blackwood") with a unique description ("the cartographer of the sunken harbour"). Its
group decides the order training states it in, with `paraphrases` templates each:

- name_first:         "Odette Blackwood is the cartographer of the sunken harbour." and rewordings;
- description_first:  "The cartographer of the sunken harbour is Odette Blackwood." and rewordings;
- both:               both orders (the paper's control that teaches the format both ways).

A seeded draw gives `description_first_fraction` of the facts the second group and
`both_fraction` the third; the rest are name_first. `train` holds the statements (kind 'fact');
`validation` holds, for every fact, a completion probe in each direction (kind 'probe'): 'n2d',
prompt "Odette Blackwood is" and answer " the cartographer of the sunken harbour", and 'd2n',
prompt "The cartographer of the sunken harbour is" and answer " Odette Blackwood". A probe's
`skill` is 'trained' when training stated the fact in the probe's order and 'reversed' when only
in the other, and so is its `relation`: evaluating the task reports `answer_accuracy/
relation_trained` and `answer_accuracy/relation_reversed` (research/evaluate.GROUP_KEYS), the
reversal curse (the paper: near 0 reversed, for models that are right on trained). It is the test
bed of reverse and permutation training (`objective.name='permute'`, arXiv 2403.13799,
2403.00758), which no study here has run on it yet.

Fact i (its name, description, group and templates) is a pure function of (seed, i): names and
descriptions are seeded permutations of fixed pools, so a corpus of n facts is the first n facts
of any larger one.
"""

from collections.abc import Iterator

import numpy as np

from research.data.synthetic import biographies, checks

NAME = 'reversal'
VERSION = 1
SPLITS = checks.SPLITS
GROUPS = ('name_first', 'description_first', 'both')
DIRECTIONS = ('n2d', 'd2n')  # name -> description, description -> name

ROLES = tuple(
    'inventor composer founder architect translator cartographer curator sculptor navigator '
    'astronomer botanist chronicler engineer illustrator librarian playwright restorer designer '
    'keeper surveyor conductor choreographer brewer glassblower clockmaker weaver potter organist '
    'goldsmith falconer'.split())
ADJECTIVES = tuple('silver northern hidden floating ancient crystal sunken painted eastern '
                   'whispering frozen golden'.split())
PLACES = tuple('lighthouse canal observatory garden library bridge orchard cathedral harbour '
               'labyrinth'.split())
FIRST_NAMES = biographies.FEMALE_FIRST_NAMES + biographies.MALE_FIRST_NAMES
LAST_NAMES = biographies.LAST_NAMES
NUM_FACTS = min(len(FIRST_NAMES) * len(LAST_NAMES), len(ROLES) * len(ADJECTIVES) * len(PLACES))

# Statement templates by order; paraphrase k of a fact is template k.
TEMPLATES = {
    'n2d': ('{name} is {description}.', '{name}, as everyone knows, is {description}.',
            'Known to many, {name} is {description}.', 'Ask anyone: {name} is {description}.',
            'It is well known that {name} is {description}.'),
    'd2n': ('{Description} is {name}.', '{Description}, as everyone knows, is {name}.',
            'Known to many, {description} is {name}.', 'Ask anyone: {description} is {name}.',
            'It is well known that {description} is {name}.'),
}
_TRAINED = {'name_first': ('n2d',), 'description_first': ('d2n',), 'both': DIRECTIONS}

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 300,  # facts (not documents): train has paraphrases statements per order
    'paraphrases': 5,  # statements of a fact per order it is trained in, from TEMPLATES
    'description_first_fraction': 1 / 3,  # facts stated description first only
    'both_fraction': 1 / 3,  # facts stated in both orders
}

_STREAM = 0x72657665  # seeded-stream tag of this generator


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1, NUM_FACTS)
  p['paraphrases'] = checks.check_number(task_name, 'paraphrases', p['paraphrases'], 1,
                                         len(TEMPLATES['n2d']))
  for key in ('description_first_fraction', 'both_fraction'):
    p[key] = checks.check_number(task_name, key, p[key], 0, 1, kind=float)
  if p['description_first_fraction'] + p['both_fraction'] > 1:
    checks.fail(task_name, 'both_fraction', p['both_fraction'],
                f"and description_first_fraction={p['description_first_fraction']} add up to "
                'more than 1; lower them (the rest of the facts are name_first).')
  return p


def _pools(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The seeded orders in which facts take the names and the descriptions."""
  rng = np.random.default_rng([_STREAM, seed])
  return (rng.permutation(len(FIRST_NAMES) * len(LAST_NAMES)),
          rng.permutation(len(ROLES) * len(ADJECTIVES) * len(PLACES)))


def fact(seed: int, index: int, p: dict) -> dict:
  """Fact `index` of `seed`: its name, description and group."""
  names, descriptions = _pools(seed)
  first, last = divmod(int(names[index]), len(LAST_NAMES))
  role, rest = divmod(int(descriptions[index]), len(ADJECTIVES) * len(PLACES))
  adjective, place = divmod(rest, len(PLACES))
  draw = np.random.default_rng([_STREAM, seed, index]).random()
  cut = p['description_first_fraction']
  group = ('description_first' if draw < cut else 'both' if draw < cut + p['both_fraction']
           else 'name_first')
  return {'name': f'{FIRST_NAMES[first]} {LAST_NAMES[last]}', 'group': group,
          'description': f'the {ROLES[role]} of the {ADJECTIVES[adjective]} {PLACES[place]}'}


def _fields(facts: dict) -> dict:
  description = facts['description']
  return {'name': facts['name'], 'description': description,
          'Description': description[0].upper() + description[1:]}


def probe(facts: dict, direction: str) -> tuple[str, str]:
  """(prompt, answer) of the completion probe of `facts` in `direction`."""
  fields = _fields(facts)
  if direction == 'n2d':
    return f"{fields['name']} is", f" {fields['description']}"
  return f"{fields['Description']} is", f" {fields['name']}"


def _generate(split: str, seed: int, p: dict) -> Iterator[dict]:
  index = 0
  for i in range(p['num_documents']):
    facts = fact(seed, i, p)
    common = {'difficulty': 0, 'fact': i, 'group': facts['group'], 'name': facts['name'],
              'description': facts['description'], 'seed': seed}
    if split == 'train':
      for direction in _TRAINED[facts['group']]:
        for template in TEMPLATES[direction][:p['paraphrases']]:
          yield {'id': f'{NAME}/{split}/{index}', 'text': template.format(**_fields(facts)),
                 'skill': 'statement', 'kind': 'fact', 'direction': direction,
                 'relation': 'trained', 'prompt': '',
                 'answer': '', **common}
          index += 1
    else:
      for direction in DIRECTIONS:
        prompt, answer = probe(facts, direction)
        relation = 'trained' if direction in _TRAINED[facts['group']] else 'reversed'
        yield {'id': f'{NAME}/{split}/{index}', 'text': prompt + answer, 'skill': relation,
               'kind': 'probe', 'direction': direction, 'relation': relation, 'prompt': prompt,
               'answer': answer, **common}
        index += 1


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The documents of `split` for `num_documents` facts.

  `train`: each fact's statements (kind 'fact', skill 'statement'), `paraphrases` per order its
  group trains; `validation`: each fact's two completion probes (kind 'probe', skill 'trained' or
  'reversed'). Metadata: `difficulty` (0), `kind`, `fact` (its index), `group`, `direction` ('n2d'
  or 'd2n'), `relation` (the probe's skill; 'trained' for statements), `name`, `description`,
  `seed`, `prompt` and `answer` ('' for statements; `text == prompt + answer` for probes).
  Parameters are validated here, before any document is made;
  errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def check(document: dict) -> bool:
  """True when the document states its fact as generated for its seed: a statement is one of its
  order's templates filled with the fact's name and description, a probe's answer completes its
  prompt with the other side of the fact."""
  p = {**PARAMS, 'num_documents': document['fact'] + 1}
  facts = fact(document['seed'], document['fact'], p)
  if (facts['name'], facts['description']) != (document['name'], document['description']):
    return False
  if document['kind'] == 'fact':
    return document['text'] in [t.format(**_fields(facts))
                                for t in TEMPLATES[document['direction']]]
  return ((document['prompt'], document['answer']) == probe(facts, document['direction'])
          and document['text'] == document['prompt'] + document['answer'])
