"""Synthetic biographies and attribute questions: knowledge storage and extraction.

From "Physics of Language Models: Part 3.1, Knowledge Storage and Extraction" (Allen-Zhu & Li 2023,
arXiv 2309.14316), its bioS data. Each individual has a unique full name (first, middle and last
name from the lists below) and six attributes: birth date, birth city, university, major, employer
and employer city, the last fixed by the employer as in the paper. A biography states each
attribute in one sentence drawn from that attribute's templates; the first sentence names the
person in full, the others use a pronoun.

The paper's finding is that a model trained on biographies of all individuals and on questions
about half of them answers questions about the other half only when the biographies are augmented.
The augmentations, applied to a seeded draw of `augmented_fraction` of the individuals (the rest
get one plain biography), are:

- multiplicity: k biographies per individual, each with freshly drawn templates (paraphrases);
- permute: the sentences in a random order;
- fullname: the full name in every sentence instead of a pronoun.

Splits. `num_documents` is the number of individuals, not of documents. A seeded draw puts
`qa_train_fraction` of the individuals in the QA-train half and the rest in the QA-test half
(recorded as `qa_split`). `train` holds the biographies of everyone, then the question/answer pairs
of the QA-train half (the paper's mixed training); `validation` holds the question/answer pairs of
the QA-test half, the extraction probe. Individual i (name and attributes) depends only on
(seed, i), so a population of n is the first n individuals of any larger one.

The paper's main protocol pretrains on the biographies alone, then fine-tunes on the QA-train
half's questions: `train_parts` 'biographies' or 'qa' keeps that part of `train` alone ('all', the
default, keeps both). To show what the model memorised, `validation_parts` 'biographies' replaces
the questions of `validation` by recall probes of the same QA-test half: one per attribute, the
individual's first biography up to that attribute's value (the prompt) and the value (the answer),
so answer accuracy is whether the model completes its own training text.
"""

import functools
import itertools
import re
import string
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import checks

NAME = 'biographies'
VERSION = 1
SPLITS = checks.SPLITS

FEMALE_FIRST_NAMES = tuple(
    'Anya Beatrix Clara Delphine Elena Fiona Greta Hazel Iris Juno Katya Leona Mira Nadia Odette '
    'Petra Quinn Rosalind Selma Tamsin Una Vera Wren Xenia Yara Zelda Adele Brielle Cora Dahlia '
    'Esme Freya Gemma Helena Imogen Jasmine Kira Lydia Maren Nora Olive Paloma Rhea Sabine Thea '
    'Uma Violet Willa Ximena Zara'.split())
MALE_FIRST_NAMES = tuple(
    'Aaron Bastian Caspar Dorian Emil Felix Gideon Hugo Ivan Jasper Kellan Lucian Magnus Nolan '
    'Oscar Pascal Quentin Rafael Silas Tobias Ulric Victor Wesley Xavier Yusuf Zane Anders Bruno '
    'Cyrus Damon Elias Flint Gavin Henrik Idris Jonah Kasimir Leander Milo Nico Orion Percy Rowan '
    'Stellan Theo Umar Vance Warren Yannick Zeke'.split())
MIDDLE_NAMES = tuple(
    'Briar Ash Blair Cole Dale Eden Finch Gray Haven Ivy Jade Kai Lane Moss North Oak Pike Reed '
    'Sage True Vale West Wynn Yale Brook Clay Drew Ellis Frost Glen Hollis Jude Kit Lark Marlow '
    'Noel Onyx Paige Quill Rain Shea Tate Umber Vesper Wilder Arden Bay Cedar Dune Ember Fern '
    'Grove Heath Indigo Juniper Knox Linden Maple Nash Ocean'.split())
LAST_NAMES = tuple(
    'Forger Abbott Ainsworth Baxter Blackwood Calloway Carver Dalton Donovan Ellery Everhart '
    'Fairbanks Fletcher Galloway Garrison Hale Hargrove Holloway Ingram Irving Jarvis Jennings '
    'Kendrick Kingsley Lancaster Lockhart Maddox Merriweather Norwood Oakley Osborne Pemberton '
    'Prescott Quimby Radcliffe Redford Sallow Sinclair Thornton Tolliver Underwood Upton Vickery '
    'Waverly Whitaker Yardley Youngblood Zimmerman Ashby Bramwell Crowley Dunmore Eastwood Farrow '
    'Gainsborough Hawthorne Kettering Langley Mortimer Newcombe Ormsby Pritchard Rutherford '
    'Stanhope Templeton Wexford Whitmore Ashworth Barlow Chandler Cromwell Delacroix Finley '
    'Granger Harcourt Huxley Kimball Lowell Marsh Northcott Pendleton Quarles Rowley Sheffield '
    'Thackeray Ventura Winslow Yates Ambrose Bellamy Corbin Drummond Emerson Fenwick Grimshaw '
    'Hollister Jamison Kirkland Lindqvist'.split())
CITIES = (
    'New York, NY', 'Los Angeles, CA', 'Chicago, IL', 'Houston, TX', 'Phoenix, AZ',
    'Philadelphia, PA', 'San Antonio, TX', 'San Diego, CA', 'Dallas, TX', 'San Jose, CA',
    'Austin, TX', 'Jacksonville, FL', 'Columbus, OH', 'Charlotte, NC', 'Indianapolis, IN',
    'Seattle, WA', 'Denver, CO', 'Boston, MA', 'Nashville, TN', 'Detroit, MI', 'Portland, OR',
    'Memphis, TN', 'Louisville, KY', 'Baltimore, MD', 'Milwaukee, WI', 'Albuquerque, NM',
    'Tucson, AZ', 'Fresno, CA', 'Sacramento, CA', 'Kansas City, MO', 'Atlanta, GA', 'Omaha, NE',
    'Raleigh, NC', 'Miami, FL', 'Minneapolis, MN', 'Tulsa, OK', 'Cleveland, OH', 'Wichita, KS',
    'New Orleans, LA', 'Tampa, FL', 'Honolulu, HI', 'Anchorage, AK', 'Pittsburgh, PA',
    'Cincinnati, OH', 'Buffalo, NY', 'Madison, WI', 'Boise, ID', 'Spokane, WA', 'Des Moines, IA',
    'Richmond, VA', 'Salt Lake City, UT', 'Birmingham, AL', 'Providence, RI', 'Hartford, CT',
    'Burlington, VT', 'Portland, ME', 'Savannah, GA', 'Charleston, SC', 'Princeton, NJ',
    'Ann Arbor, MI', 'Berkeley, CA', 'Palo Alto, CA', 'Cambridge, MA', 'Ithaca, NY', 'Durham, NC',
    'Santa Fe, NM', 'Lexington, KY', 'Little Rock, AR', 'Jackson, MS', 'Fargo, ND',
    'Sioux Falls, SD', 'Billings, MT', 'Cheyenne, WY', 'Reno, NV', 'Las Vegas, NV', 'Eugene, OR',
    'Tallahassee, FL', 'Columbia, SC', 'Knoxville, TN', 'Dayton, OH', 'Rochester, NY',
    'Syracuse, NY', 'Lincoln, NE', 'Springfield, IL')
UNIVERSITIES = (
    'Massachusetts Institute of Technology', 'Stanford University', 'Harvard University',
    'Princeton University', 'Yale University', 'Columbia University', 'University of Chicago',
    'University of Pennsylvania', 'California Institute of Technology', 'Duke University',
    'Johns Hopkins University', 'Northwestern University', 'Brown University', 'Cornell University',
    'Rice University', 'Vanderbilt University', 'Dartmouth College', 'Carnegie Mellon University',
    'Emory University', 'Georgetown University', 'University of Michigan', 'University of Virginia',
    'University of North Carolina at Chapel Hill', 'University of California, Berkeley',
    'University of California, Los Angeles', 'University of Southern California',
    'New York University', 'Tufts University', 'University of Notre Dame', 'Boston College',
    'Boston University', 'University of Rochester', 'Georgia Institute of Technology',
    'University of Texas at Austin', 'University of Wisconsin-Madison',
    'University of Illinois Urbana-Champaign', 'University of Washington', 'Ohio State University',
    'Purdue University', 'Pennsylvania State University', 'University of Florida',
    'University of Minnesota', 'University of Maryland', 'Rutgers University', 'Indiana University',
    'University of Arizona', 'Arizona State University', 'University of Colorado Boulder',
    'University of Utah', 'University of Oregon', 'Michigan State University',
    'Texas A&M University', 'University of Iowa', 'Tulane University', 'Brandeis University',
    'Case Western Reserve University', 'Wake Forest University', 'Lehigh University',
    'Northeastern University', 'Syracuse University', 'University of Pittsburgh')
MAJORS = (
    'Computer Science', 'Mathematics', 'Physics', 'Chemistry', 'Biology', 'Economics', 'History',
    'Philosophy', 'Psychology', 'Sociology', 'Political Science', 'English Literature',
    'Linguistics', 'Anthropology', 'Art History', 'Music', 'Architecture', 'Civil Engineering',
    'Mechanical Engineering', 'Electrical Engineering', 'Chemical Engineering',
    'Aerospace Engineering', 'Biomedical Engineering', 'Materials Science', 'Statistics',
    'Astronomy', 'Geology', 'Environmental Science', 'Marine Biology', 'Neuroscience', 'Nursing',
    'Public Health', 'Business Administration', 'Accounting', 'Finance', 'Marketing', 'Journalism',
    'Communications', 'Education', 'Graphic Design', 'Film Studies', 'Theater', 'Classics',
    'Religious Studies', 'Urban Planning', 'Agricultural Science', 'Nutrition', 'Pharmacology',
    'Geography', 'International Relations')
# Fictional employers and the city each one is in (employer city is a function of the employer).
EMPLOYERS = (
    ('Harborlight Systems', 'Seattle, WA'), ('Northwind Analytics', 'Chicago, IL'),
    ('Bluefield Robotics', 'Pittsburgh, PA'), ('Cedar Ridge Bank', 'Charlotte, NC'),
    ('Silverline Aerospace', 'Houston, TX'), ('Kestrel Pharmaceuticals', 'Boston, MA'),
    ('Meridian Foods', 'Omaha, NE'), ('Granite Peak Energy', 'Denver, CO'),
    ('Lumen Health', 'Nashville, TN'), ('Quarry Lane Publishing', 'New York, NY'),
    ('Brightwater Logistics', 'Memphis, TN'), ('Copperleaf Software', 'Austin, TX'),
    ('Tidewater Shipping', 'Jacksonville, FL'), ('Evergreen Motors', 'Detroit, MI'),
    ('Summit Insurance Group', 'Hartford, CT'), ('Redwood Biotech', 'San Diego, CA'),
    ('Falcon Crest Media', 'Los Angeles, CA'), ('Ironbridge Steel', 'Cleveland, OH'),
    ('Prairie Wind Farms', 'Des Moines, IA'), ('Starboard Games', 'San Jose, CA'),
    ('Oakhurst Consulting', 'Atlanta, GA'), ('Pinecrest Medical Devices', 'Minneapolis, MN'),
    ('Sandstone Mining', 'Salt Lake City, UT'), ('Blue Mesa Solar', 'Phoenix, AZ'),
    ('Riverbend Textiles', 'Raleigh, NC'), ('Gulfstream Seafood', 'New Orleans, LA'),
    ('Highland Telecom', 'Kansas City, MO'), ('Crescent Bay Hotels', 'Miami, FL'),
    ('Lakeshore Chemicals', 'Milwaukee, WI'), ('Frontier Rail', 'Omaha, NE'),
    ('Maple Leaf Paper', 'Portland, ME'), ('Coastal Wind Power', 'Providence, RI'),
    ('Silver Spur Ranching', 'Cheyenne, WY'), ('Aurora Semiconductors', 'Palo Alto, CA'),
    ('Keystone Instruments', 'Philadelphia, PA'), ('Desert Bloom Water', 'Tucson, AZ'),
    ('Thunderbird Airlines', 'Dallas, TX'), ('Golden Gate Securities', 'San Jose, CA'),
    ('Bayou Engineering', 'New Orleans, LA'), ('Glacier Outfitters', 'Anchorage, AK'),
    ('Orchard Valley Produce', 'Fresno, CA'), ('Capitol Hill Advisors', 'Richmond, VA'),
    ('Mosaic Learning', 'Ann Arbor, MI'), ('Lantern Street Studios', 'Cambridge, MA'),
    ('Windward Yachts', 'Charleston, SC'), ('Riverstone Brewing', 'Madison, WI'),
    ('Ember Forge Tools', 'Cincinnati, OH'), ('Hollow Oak Furniture', 'Burlington, VT'),
    ('Pacific Tide Labs', 'Honolulu, HI'), ('Stonegate Realty', 'Las Vegas, NV'))
MONTHS = ('January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September',
          'October', 'November', 'December')
YEARS = (1900, 2099)  # birth years, inclusive, and days 1 to 28 of any month, as in the paper

ATTRIBUTES = ('birth_date', 'birth_city', 'university', 'major', 'employer', 'employer_city')
# Sentence templates per attribute. {Subject}: the full name, He or She; {Possessive}: the full
# name + "'s", His or Her; {possessive} (after the subject): his or her.
TEMPLATES = {
    'birth_date': ('{Subject} was born on {value}.', '{Subject} came into this world on {value}.',
                   '{Possessive} date of birth is {value}.', '{Subject} entered life on {value}.',
                   '{Subject} first opened {possessive} eyes on {value}.'),
    'birth_city': ('{Subject} was born in {value}.',
                   '{Subject} spent {possessive} early years in {value}.',
                   '{Possessive} birthplace is {value}.', '{Subject} hails from {value}.',
                   '{Subject} was brought into the world in {value}.'),
    'university': ('{Subject} studied at {value}.', '{Subject} graduated from {value}.',
                   '{Possessive} alma mater is {value}.',
                   '{Subject} completed {possessive} education at {value}.',
                   '{Subject} received mentorship from the faculty of {value}.'),
    'major': ('{Subject} majored in {value}.', '{Subject} focused {possessive} studies on {value}.',
              '{Possessive} field of study was {value}.', '{Subject} earned a degree in {value}.',
              '{Subject} specialized in {value}.'),
    'employer': ('{Subject} worked for {value}.', '{Subject} was employed by {value}.',
                 '{Possessive} employer was {value}.', '{Subject} held a job at {value}.',
                 '{Subject} built a career at {value}.'),
    'employer_city': ('{Subject} worked in {value}.', '{Possessive} workplace was in {value}.',
                      '{Subject} commuted to work in {value}.',
                      '{Possessive} office was located in {value}.',
                      '{Subject} pursued {possessive} career in {value}.'),
}
QUESTIONS = {
    'birth_date': 'What is the birth date of {name}?',
    'birth_city': 'What is the birth city of {name}?',
    'university': 'Which university did {name} study at?',
    'major': 'What major did {name} study?',
    'employer': 'Which company did {name} work for?',
    'employer_city': 'Where did {name} work?',
}
ANSWER_CUE = '\nAnswer: '

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 1000,  # individuals; about 1.1 M characters of train with these defaults
    'multiplicity': 5,  # biographies per augmented individual
    'permute': True,  # augmented biographies state the attributes in a random order
    'fullname': True,  # augmented biographies repeat the full name instead of a pronoun
    'augmented_fraction': 0.5,  # of the individuals, drawn per seed; the rest get 1 plain biography
    'qa_train_fraction': 0.5,  # of the individuals whose questions are in train
    'train_parts': 'all',  # all | biographies | qa: what train holds
    'validation_parts': 'qa',  # qa | biographies: questions or recall probes of the QA-test half
}
TRAIN_PARTS = ('all', 'biographies', 'qa')
VALIDATION_PARTS = ('qa', 'biographies')

_PEOPLE_STREAM, _NAMES_STREAM, _TEXT_STREAM = 0x70656f70, 0x6e616d65, 0x74657874
_QA_STREAM, _AUGMENT_STREAM = 0x71617370, 0x61756774
_BLOCK = 1024
_FIRST_NAMES = FEMALE_FIRST_NAMES + MALE_FIRST_NAMES
NUM_NAMES = len(_FIRST_NAMES) * len(MIDDLE_NAMES) * len(LAST_NAMES)
_MAX_MULTIPLICITY = int(np.prod([len(t) for t in TEMPLATES.values()]))
_NAME = r'[A-Z][a-z]+ [A-Z][a-z]+ [A-Z][a-z]+'
_FIELDS = {'Subject': rf'{_NAME}|He|She', 'Possessive': rf"{_NAME}'s|His|Her",
           'possessive': 'his|her', 'value': r'[^.]+', 'name': _NAME}


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 2, NUM_NAMES)
  p['multiplicity'] = checks.check_number(task_name, 'multiplicity', p['multiplicity'], 1,
                                          _MAX_MULTIPLICITY)
  for key in ('permute', 'fullname'):
    p[key] = checks.check_bool(task_name, key, p[key])
  for key in ('augmented_fraction', 'qa_train_fraction'):
    p[key] = checks.check_number(task_name, key, p[key], 0.0, 1.0, kind=float)
  for key, choices in (('train_parts', TRAIN_PARTS), ('validation_parts', VALIDATION_PARTS)):
    if p[key] not in choices:
      checks.fail(task_name, key, p[key], f'is invalid; set it to one of {list(choices)}.')
  qa_train = _count(p['qa_train_fraction'], p['num_documents'])
  if not 0 < qa_train < p['num_documents']:
    checks.fail(task_name, 'qa_train_fraction', p['qa_train_fraction'],
                f'leaves {qa_train} of num_documents={p["num_documents"]} individuals in the QA-train '
                'half; choose a fraction (or more individuals) so that both halves are non-empty.')
  return p


def _count(fraction: float, num_individuals: int) -> int:
  return int(round(fraction * num_individuals))


@functools.lru_cache(maxsize=4)
def _name_order(seed: int) -> np.ndarray:
  """A seeded permutation of all name indices: individual i has name index order[i]."""
  return np.random.default_rng([_NAMES_STREAM, seed]).permutation(NUM_NAMES)


@functools.lru_cache(maxsize=4)
def _name_owner(seed: int) -> np.ndarray:
  """The inverse of `_name_order`: the individual who has each name index."""
  return np.argsort(_name_order(seed))


def _full_name(name_index: int) -> tuple[str, bool]:
  """(full name, is female) of a name index into first x middle x last."""
  first, rest = divmod(name_index, len(MIDDLE_NAMES) * len(LAST_NAMES))
  middle, last = divmod(rest, len(LAST_NAMES))
  full = f'{_FIRST_NAMES[first]} {MIDDLE_NAMES[middle]} {LAST_NAMES[last]}'
  return full, first < len(FEMALE_FIRST_NAMES)


@functools.lru_cache(maxsize=64)
def _people_block(seed: int, block: int) -> tuple[dict, ...]:
  """Individuals block * _BLOCK ... (block + 1) * _BLOCK - 1: name, pronouns, attributes."""
  rng = np.random.default_rng([_PEOPLE_STREAM, seed, block])
  month_B, day_B = rng.integers(0, 12, size=_BLOCK), rng.integers(1, 29, size=_BLOCK)
  year_B = rng.integers(YEARS[0], YEARS[1] + 1, size=_BLOCK)
  city_B, major_B = rng.integers(0, len(CITIES), _BLOCK), rng.integers(0, len(MAJORS), _BLOCK)
  university_B = rng.integers(0, len(UNIVERSITIES), _BLOCK)
  employer_B = rng.integers(0, len(EMPLOYERS), _BLOCK)
  names = _name_order(seed)[block * _BLOCK:(block + 1) * _BLOCK]
  people = []
  for b in range(_BLOCK):
    name, female = _full_name(int(names[b]))
    people.append({
        'name': name,
        'pronoun': 'she' if female else 'he',
        'possessive': 'her' if female else 'his',
        'birth_date': f'{MONTHS[month_B[b]]} {day_B[b]}, {year_B[b]}',
        'birth_city': CITIES[city_B[b]],
        'university': UNIVERSITIES[university_B[b]],
        'major': MAJORS[major_B[b]],
        'employer': EMPLOYERS[employer_B[b]][0],
        'employer_city': EMPLOYERS[employer_B[b]][1],
    })
  return tuple(people)


def _person(seed: int, individual: int) -> dict:
  return _people_block(seed, individual // _BLOCK)[individual % _BLOCK]


def _members(stream: int, seed: int, num_individuals: int, count: int) -> np.ndarray:
  """bool [num_individuals]: a seeded draw of `count` of them."""
  chosen = np.random.default_rng([stream, seed]).permutation(num_individuals)[:count]
  members = np.zeros(num_individuals, bool)
  members[chosen] = True
  return members


def _sentence(template: str, person: dict, value: str, use_name: bool) -> str:
  """One sentence; it opens with the full name when `use_name`, else with a pronoun."""
  pronoun, possessive = person['pronoun'], person['possessive']
  return template.format(Subject=person['name'] if use_name else pronoun.capitalize(),
                         Possessive=person['name'] + "'s" if use_name else possessive.capitalize(),
                         possessive=possessive, value=value)


def _sentences(person: dict, templates: tuple[int, ...], order: tuple[int, ...],
               fullname: bool) -> list[tuple[str, str]]:
  """A biography as (attribute, sentence) pairs: sentence j states attribute order[j] with template
  templates[order[j]]."""
  return [(ATTRIBUTES[a], _sentence(TEMPLATES[ATTRIBUTES[a]][templates[a]], person,
                                    person[ATTRIBUTES[a]], use_name=fullname or j == 0))
          for j, a in enumerate(order)]


def _biographies(seed: int, individual: int, augmented: bool,
                 p: dict) -> list[list[tuple[str, str]]]:
  """The biographies of one individual, as `_sentences`: k distinct augmented ones, or one plain
  one."""
  rng = np.random.default_rng([_TEXT_STREAM, seed, individual])
  count = p['multiplicity'] if augmented else 1
  permute, fullname = augmented and p['permute'], augmented and p['fullname']
  num_templates = [len(TEMPLATES[a]) for a in ATTRIBUTES]
  plans = {}  # (templates, order) -> None, in draw order; distinct plans give distinct texts
  while len(plans) < count:
    templates = tuple(rng.integers(0, num_templates).tolist())
    order = tuple(rng.permutation(len(ATTRIBUTES)).tolist() if permute else range(len(ATTRIBUTES)))
    plans[templates, order] = None
  person = _person(seed, individual)
  return [_sentences(person, templates, order, fullname) for templates, order in plans]


def _text(sentences: list[tuple[str, str]]) -> str:
  return ' '.join(sentence for _, sentence in sentences)


def _document(split: str, index: int, **fields) -> dict:
  return {'id': f'{NAME}/{split}/{index}', **fields}


def _generate(split: str, seed: int, p: dict) -> Iterator[dict]:
  num_individuals = p['num_documents']
  qa_train = _members(_QA_STREAM, seed, num_individuals,
                      _count(p['qa_train_fraction'], num_individuals))
  augmented = _members(_AUGMENT_STREAM, seed, num_individuals,
                       _count(p['augmented_fraction'], num_individuals))
  index = itertools.count()

  def document(i: int, text: str, kind: str, attribute: str = '', prompt: str = '') -> dict:
    return _document(split, next(index), text=text, skill=attribute or kind, difficulty=0,
                     kind=kind, individual=i, name=_person(seed, i)['name'], attribute=attribute,
                     augmented=bool(augmented[i]), qa_split='train' if qa_train[i] else 'test',
                     seed=seed, prompt=prompt, answer=text[len(prompt):] if prompt else '')

  parts = p['train_parts'] if split == 'train' else p['validation_parts']
  half = np.flatnonzero(qa_train == (split == 'train')).tolist()
  if split == 'train' and parts != 'qa':
    for i in range(num_individuals):
      for sentences in _biographies(seed, i, bool(augmented[i]), p):
        yield document(i, _text(sentences), 'biography')
  if split == 'validation' and parts == 'biographies':
    for i in half:
      sentences = _biographies(seed, i, bool(augmented[i]), p)[0]
      for j, (attribute, _) in enumerate(sentences):
        text = _text(sentences[:j + 1]).removesuffix('.')  # every template ends '{value}.'
        yield document(i, text, 'recall', attribute, text.removesuffix(_person(seed, i)[attribute]))
  if parts in ('all', 'qa'):
    for i in half:
      person = _person(seed, i)
      for attribute in ATTRIBUTES:
        prompt = QUESTIONS[attribute].format(name=person['name']) + ANSWER_CUE
        yield document(i, prompt + person[attribute], 'qa', attribute, prompt)


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The documents of `split` for a population of `num_documents` individuals.

  `train`: every individual's biographies (kind 'biography', prompt and answer ''), then six
  questions (kind 'qa', one per attribute) about each QA-train individual, or one of the two
  (`train_parts`); `validation`: the questions about each QA-test individual, or with
  `validation_parts='biographies'` six recall probes (kind 'recall') of each one's first biography.
  Metadata: `skill` ('biography' or the attribute), `difficulty` (0: no difficulty scale), `kind`,
  `individual` (its index), `name`, `attribute` ('' for biographies), `augmented`, `qa_split`
  ('train' or 'test'), `seed` (which `check` needs to look attributes up), `prompt` and `answer`
  (`text == prompt + answer` for questions and recall probes).
  Parameters are validated here, before any document is made; errors name
  `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def _pattern(template: str) -> re.Pattern:
  """A regex matching `template`'s renderings, with a group named after each field."""
  parts = []
  for literal, field, _, _ in string.Formatter().parse(template):
    parts.append(re.escape(literal))
    if field is not None:
      parts.append(f'(?P<{field}>{_FIELDS[field]})')
  return re.compile(''.join(parts))


_SENTENCE_PATTERNS = tuple((a, _pattern(t)) for a in ATTRIBUTES for t in TEMPLATES[a])
_QUESTION_PATTERNS = tuple((a, _pattern(QUESTIONS[a] + ANSWER_CUE)) for a in ATTRIBUTES)


def _individual_named(seed: int, name: str) -> int:
  """The index of the individual called `name` in the population of `seed`, or -1."""
  first, middle, last = name.split(' ')
  if first not in _FIRST_NAMES or middle not in MIDDLE_NAMES or last not in LAST_NAMES:
    return -1
  name_index = ((_FIRST_NAMES.index(first) * len(MIDDLE_NAMES) + MIDDLE_NAMES.index(middle))
                * len(LAST_NAMES) + LAST_NAMES.index(last))
  return int(_name_owner(seed)[name_index])


def _statements(text: str, person: dict) -> list[tuple[str, str]] | None:
  """[(attribute, value)] of each sentence of `text`, which must refer to `person` (in full in its
  first sentence); None when a sentence matches no template, or more than one."""
  name = person['name'].lower()
  forms = (name, name + "'s", person['pronoun'], person['possessive'])
  stated = []
  for j, sentence in enumerate(re.split(r'(?<=\.) ', text)):
    matches = [(a, m) for a, p in _SENTENCE_PATTERNS if (m := p.fullmatch(sentence))]
    if len(matches) != 1:
      return None
    attribute, match = matches[0]
    references = [r.lower() for g, r in match.groupdict().items() if g != 'value']
    if any(r not in forms for r in references) or (j == 0 and references[0] not in forms[:2]):
      return None
    stated.append((attribute, match['value']))
  return stated


def _check_statements(document: dict, person: dict) -> bool:
  """A biography states every attribute once with the person's value; a recall probe is a
  biography's first sentences, each with the person's value, its answer the last one's value."""
  stated = _statements(document['text'] + ('.' if document['kind'] == 'recall' else ''), person)
  if stated is None or any(value != person[a] for a, value in stated):
    return False
  attributes = [a for a, _ in stated]
  if document['kind'] == 'biography':
    return sorted(attributes) == sorted(ATTRIBUTES)
  return (len(set(attributes)) == len(attributes) and attributes[-1] == document['attribute']
          and document['answer'] == person[attributes[-1]]
          and document['text'] == document['prompt'] + document['answer'])


def check(document: dict) -> bool:
  """True when the document states its individual's attributes as generated for its seed.

  A question is parsed for the attribute and the name; the answer must be that individual's value,
  looked up in the population of `document['seed']`. A biography must state each attribute exactly
  once with the individual's value, naming them in full in its first sentence; a recall probe, the
  first sentences of one, must end with its answer, the value of its attribute.
  """
  if document['kind'] != 'qa':
    return _check_statements(document, _person(document['seed'], document['individual']))
  matches = [(a, m) for a, p in _QUESTION_PATTERNS if (m := p.fullmatch(document['prompt']))]
  if len(matches) != 1:
    return False
  attribute, match = matches[0]
  individual = _individual_named(document['seed'], match['name'])
  return (individual == document['individual'] and attribute == document['attribute']
          and document['answer'] == _person(document['seed'], individual)[attribute]
          and document['text'] == document['prompt'] + document['answer'])
