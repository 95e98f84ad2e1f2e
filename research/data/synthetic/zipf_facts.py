"""Arbitrary facts about made-up people, stated with Zipfian (power-law) frequencies.

The singleton-fact generator of "Calibrated Language Models Must Hallucinate" (Kalai & Vempala
2023, arXiv 2311.14648): for arbitrary facts (a person's birthday: nothing in the other facts
predicts it) a calibrated model hallucinates at about the rate of the facts that its training data
states exactly once (the Good-Turing estimate of the unseen mass), however clean the data. Here the
frequency spectrum is controlled: each of `num_entities` people has one birthday (a month and a
day 1 to 28), and each of the `num_documents` training documents states one person's birthday,
the person drawn with probability proportional to (rank + 1)^-exponent (Zipf's law; rank 0 the
most frequent, exponent 0 uniform), as in the Zipfian class distributions of "Data Distributional
Properties Drive Emergent In-Context Learning in Transformers" (Chan et al. 2022,
arXiv 2205.05055):

    Odette Blackwood's birthday is March 3

The validation split asks every person's birthday once, in rank order, the same prompt and answer.
Every document carries its person's `rank` and `count` (statements of the person in training), so
a study buckets recall by frequency; `singleton` marks the facts stated exactly once, the
Good-Turing singletons (the paper's hallucination bound), and `difficulty` is the count's bit
length (0 unseen, 1 once, 2 for 2-3 times, 3 for 4-7, ...), so evaluating the task reports
singleton accuracy as `answer_accuracy/difficulty_1`.

The training stream is one seeded draw of its `num_documents` people (a longer stream is another
draw, so counts are exact for the stream trained on); person i's name and birthday depend only on
(seed, i).
"""

import functools
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import biographies, checks, draws

NAME = 'zipf_facts'
VERSION = 1
SPLITS = checks.SPLITS
MONTHS = biographies.MONTHS
DAYS = 28

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # training statements; about 0.75 M characters
    'num_entities': 1000,  # people, each with one birthday (at most draws.NUM_NAMES)
    'exponent': 1.0,  # person of rank r is stated with probability ~ (r + 1)^-exponent
}

_STREAM = 0x7a697066  # seeded-stream tag of this generator (names, the training stream)
_FACT_STREAM = 0x62646179  # the birthdays


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  p['num_entities'] = checks.check_number(task_name, 'num_entities', p['num_entities'], 1,
                                          draws.NUM_NAMES)
  p['exponent'] = checks.check_number(task_name, 'exponent', p['exponent'], 0, 10, kind=float)
  return p


def probabilities(num_entities: int, exponent: float) -> np.ndarray:
  """Each rank's probability of being stated: (rank + 1)^-exponent, normalised."""
  weights = np.arange(1, num_entities + 1, dtype=np.float64)**-exponent
  return weights / weights.sum()


def stream(seed: int, num_documents: int, num_entities: int, exponent: float) -> np.ndarray:
  """The rank of the person each training document states, [num_documents] int."""
  rng = np.random.default_rng([_STREAM, seed])
  return rng.choice(num_entities, size=num_documents, p=probabilities(num_entities, exponent))


@functools.lru_cache(maxsize=16)
def _birthdays(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Every possible person's birthday: (month index, day) arrays [draws.NUM_NAMES]."""
  rng = np.random.default_rng([_FACT_STREAM, seed])
  return (rng.integers(len(MONTHS), size=draws.NUM_NAMES),
          rng.integers(1, DAYS + 1, size=draws.NUM_NAMES))


def fact(seed: int, rank: int) -> tuple[str, str]:
  """(prompt, answer) of the person of `rank`'s birthday."""
  months, days = _birthdays(seed)
  return (f"{draws.person(_STREAM, seed, rank)}'s birthday is",
          f' {MONTHS[months[rank]]} {days[rank]}')


def _bucket(count: int) -> str:
  return 'unseen' if count == 0 else 'singleton' if count == 1 else 'repeated'


def _document(seed: int, rank: int, count: int) -> dict:
  prompt, answer = fact(seed, rank)
  return {'text': prompt + answer, 'skill': _bucket(count), 'difficulty': count.bit_length(),
          'rank': rank, 'count': count, 'singleton': count == 1, 'seed': seed, 'prompt': prompt,
          'answer': answer}


def _generate(split: str, seed: int, p: dict) -> Iterator[dict]:
  ranks = stream(seed, p['num_documents'], p['num_entities'], p['exponent'])
  counts = np.bincount(ranks, minlength=p['num_entities']).tolist()
  order = ranks.tolist() if split == 'train' else range(p['num_entities'])
  for index, rank in enumerate(order):
    yield {'id': f'{NAME}/{split}/{index}', **_document(seed, rank, counts[rank])}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """`train`: the `num_documents` statements; `validation`: one question per person.

  Metadata: `skill` ('unseen', 'singleton' or 'repeated'), `difficulty` (the bit length of
  `count`), `rank` (0: the most frequent), `count` (the person's statements in train),
  `singleton` (count == 1), `seed`, `prompt` ("<name>'s birthday is") and `answer` (' March 3');
  `text == prompt + answer`. Parameters are validated here, before any document is made; errors
  name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def check(document: dict) -> bool:
  """True when the answer is the birthday the seed gives the person of the document's rank (and
  the frequency metadata agree with `count`)."""
  count = document['count']
  return ((document['prompt'], document['answer']) == fact(document['seed'], document['rank'])
          and document['singleton'] == (count == 1) and document['skill'] == _bucket(count)
          and document['difficulty'] == count.bit_length()
          and document['text'] == document['prompt'] + document['answer'])
