"""Few-shot classification of noisy exemplars, with bursty sequences and Zipfian classes.

The token version of "Data Distributional Properties Drive Emergent In-Context Learning in
Transformers" (Chan et al. 2022, arXiv 2205.05055): in-context learning (ICL) emerges only when
training sequences are bursty (a sequence's classes come in clumps) and classes are many and rare,
and a Zipfian class distribution lets ICL and in-weights learning (IWL) coexist.

A class is a random prototype of `length` lowercase letters; an exemplar is its prototype with each
letter replaced by a random one with probability `noise`. Each of the `num_classes` training classes
has a fixed label of two uppercase letters, its rank r (0, 1, ...) a probability proportional to
(r + 1)^-zipf. A sequence is `context` exemplar>label pairs, then a query exemplar whose `answer`
is its class's label:

    qhxk>MB;aoze>TR;qbxk>MB;...;qhxz>

A training sequence's query class is drawn by frequency; with probability `burstiness` the sequence
is bursty: `BURST` context exemplars of the query class and `BURST` of one other class, the rest
drawn by frequency (as every context exemplar of a non-bursty sequence), shuffled. The validation
split is one of two evaluations (`validation`):

  icl      ICL on `num_held_out` classes never trained on: `context` / 2 exemplars each of two
           held-out classes, the labels of the pair drawn per sequence from the training labels;
           the query is of one of them (chance 1/2 for a model that copies a label in context)
  weights  IWL: the query of one of the `common` most frequent training classes, uniformly, the
           context exemplars of other training classes, uniformly: only the weights know the label

Difficulty is the number of the query's class in the context (0 for `weights`). Prototypes and
labels are a seeded draw per seed, the same for both splits and every other parameter but the
class counts and `length`. Document i of a split is a pure function of (split, seed, i,
parameters): documents are drawn in blocks of `_BLOCK` from
`np.random.default_rng([_STREAM, seed, split index, block])`, so a corpus of n documents is the
first n documents of any larger one.
"""

import re
import string
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import checks

NAME = 'icl_classification'
VERSION = 1
SPLITS = checks.SPLITS
LETTERS = string.ascii_lowercase
LABEL_LETTERS = string.ascii_uppercase
BURST = 3  # exemplars of the query's class, and of one other class, in a bursty sequence
VALIDATIONS = ('icl', 'weights')

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # sequences per split; about 0.9 M characters with these defaults
    'num_classes': 200,  # training classes, each with a fixed label
    'num_held_out': 50,  # classes never trained on, for the ICL evaluation
    'length': 4,  # letters of a prototype and of its exemplars
    'noise': 0.2,  # the probability that an exemplar's letter is redrawn
    'context': 8,  # exemplar>label pairs before the query (even, at least 2 * BURST)
    'zipf': 0.0,  # class rank r has probability ~ (r + 1)^-zipf; 0: uniform
    'burstiness': 0.9,  # the share of training sequences that are bursty
    'common': 20,  # the weights evaluation's query classes: the `common` most frequent
    'validation': 'icl',  # the validation split: 'icl' or 'weights'
}

_STREAM = 0x69636c63  # seeded-stream tag of this generator
_TABLE_STREAM = 0x636c6173  # the prototypes' and labels' tag: one per seed, for both splits
_BLOCK = 1024
_PAIR = re.compile(r'([a-z]+)>([A-Z]{2});')


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  p['num_classes'] = checks.check_number(task_name, 'num_classes', p['num_classes'], 2,
                                         len(LABEL_LETTERS)**2)
  p['num_held_out'] = checks.check_number(task_name, 'num_held_out', p['num_held_out'], 2)
  p['length'] = checks.check_number(task_name, 'length', p['length'], 1, 32)
  p['noise'] = checks.check_number(task_name, 'noise', p['noise'], 0, 1, kind=float)
  p['context'] = checks.check_number(task_name, 'context', p['context'], 2 * BURST, 64)
  if p['context'] % 2:
    checks.fail(task_name, 'context', p['context'], 'is odd; set it to an even integer (the icl '
                'evaluation shows two classes half the context each).')
  p['zipf'] = checks.check_number(task_name, 'zipf', p['zipf'], 0, 10, kind=float)
  p['burstiness'] = checks.check_number(task_name, 'burstiness', p['burstiness'], 0, 1,
                                        kind=float)
  p['common'] = checks.check_number(task_name, 'common', p['common'], 1, p['num_classes'] - 1)
  if p['validation'] not in VALIDATIONS:
    checks.fail(task_name, 'validation', p['validation'], f'is invalid; use one of '
                f'{list(VALIDATIONS)}.')
  return p


def class_probabilities(num_classes: int, zipf: float) -> np.ndarray:
  """The training classes' probabilities by rank: (r + 1)^-zipf, normalised."""
  weights = np.arange(1, num_classes + 1, dtype=np.float64)**-zipf
  return weights / weights.sum()


def tables(seed: int, **params) -> tuple[np.ndarray, list[str]]:
  """(prototypes [num_classes + num_held_out, length] of letter indices, the training classes'
  labels): a seeded draw per seed; class c < num_classes is the training class of rank c."""
  p = _resolve_params('train', seed, 1, params, NAME)
  return _tables(int(seed), p)


def _tables(seed: int, p: dict) -> tuple[np.ndarray, list[str]]:
  rng = np.random.default_rng([_TABLE_STREAM, seed])
  count = p['num_classes'] + p['num_held_out']
  prototypes = rng.integers(0, len(LETTERS), size=(count, p['length']))
  codes = rng.choice(len(LABEL_LETTERS)**2, size=p['num_classes'], replace=False)
  labels = [LABEL_LETTERS[c // len(LABEL_LETTERS)] + LABEL_LETTERS[c % len(LABEL_LETTERS)]
            for c in codes.tolist()]
  return prototypes, labels


def _train_classes(rng: np.random.Generator, p: dict) -> tuple[list[int], bool]:
  """(classes of the context then the query, bursty) of a training sequence."""
  probabilities = class_probabilities(p['num_classes'], p['zipf'])
  query = int(rng.choice(p['num_classes'], p=probabilities))
  context = rng.choice(p['num_classes'], size=p['context'], p=probabilities).tolist()
  bursty = bool(rng.random() < p['burstiness'])
  if bursty:
    other = (query + 1 + int(rng.integers(p['num_classes'] - 1))) % p['num_classes']
    context[:2 * BURST] = [query] * BURST + [other] * BURST
    context = rng.permutation(context).tolist()
  return context + [query], bursty


def _icl_classes(rng: np.random.Generator, p: dict) -> list[int]:
  """Two held-out classes, half the context each in a random order, then one as the query."""
  pair = p['num_classes'] + rng.choice(p['num_held_out'], size=2, replace=False)
  context = rng.permutation(np.repeat(pair, p['context'] // 2)).tolist()
  return context + [int(pair[rng.integers(2)])]


def _weights_classes(rng: np.random.Generator, p: dict) -> list[int]:
  """A common training class as the query, the context of other training classes."""
  query = int(rng.integers(p['common']))
  others = rng.integers(p['num_classes'] - 1, size=p['context'])
  return (others + (others >= query)).tolist() + [query]


def _sequence(rng: np.random.Generator, split: str, p: dict, prototypes: np.ndarray,
              labels: list[str]) -> dict:
  if split == 'train':
    classes, bursty = _train_classes(rng, p)
  else:
    bursty = p['validation'] == 'icl'
    classes = (_icl_classes if bursty else _weights_classes)(rng, p)
  if split == 'validation' and bursty:  # the held-out pair's labels, drawn per sequence
    pair = sorted(set(classes))
    label = dict(zip(pair, (labels[i] for i in rng.choice(len(labels), 2, replace=False))))
  else:
    label = {c: labels[c] for c in classes}
  letters = prototypes[classes]
  redraw = rng.random(letters.shape) < p['noise']
  letters = np.where(redraw, rng.integers(0, len(LETTERS), size=letters.shape), letters)
  exemplars = [''.join(LETTERS[i] for i in row) for row in letters.tolist()]
  query = classes[-1]
  pairs = zip(exemplars[:-1], classes[:-1])
  prompt = ''.join(f'{e}>{label[c]};' for e, c in pairs) + exemplars[-1] + '>'
  shots = classes[:-1].count(query)
  kind = 'train' if split == 'train' else p['validation']
  return {'text': prompt + label[query], 'skill': f'{kind}_{"bursty" if bursty else "iid"}',
          'difficulty': shots, 'query_class': query, 'bursty': bursty,
          'classes': ','.join(map(str, classes)), 'prompt': prompt, 'answer': label[query]}


def _generate(split: str, seed: int, p: dict) -> Iterator[dict]:
  split_index = SPLITS.index(split)
  prototypes, labels = _tables(seed, p)
  for index in range(p['num_documents']):
    block, offset = divmod(index, _BLOCK)
    if offset == 0:
      rng = np.random.default_rng([_STREAM, seed, split_index, block])
      documents = [_sequence(rng, split, p, prototypes, labels) for _ in range(_BLOCK)]
    yield {'id': f'{NAME}/{split}/{index}', **documents[offset]}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` sequences of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` ('train_bursty', 'train_iid', 'icl_bursty' or 'weights_iid'), `difficulty`
  (how many context exemplars share the query's class), `query_class`, `bursty`, `classes` (every
  exemplar's class, the query's last, as '3,17,...'), `prompt` (the pairs and the query exemplar
  with '>') and `answer` (its label); `text == prompt + answer`. Parameters are validated here,
  before any document is made; errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def check(document: dict) -> bool:
  """True when the prompt is exemplar>label pairs then a query exemplar, every exemplar of the
  query's class in the context carries the answer's label, and `difficulty` counts them."""
  prompt = document['prompt']
  query = re.fullmatch(r'((?:[a-z]+>[A-Z]{2};)*)([a-z]+)>', prompt)
  classes = [int(c) for c in document['classes'].split(',')]
  if query is None or not re.fullmatch(r'[A-Z]{2}', document['answer']):
    return False
  pairs = _PAIR.findall(query.group(1))
  same = [label for (_, label), c in zip(pairs, classes) if c == classes[-1]]
  return (len(pairs) == len(classes) - 1 and classes[-1] == document['query_class']
          and all(label == document['answer'] for label in same)
          and len(same) == document['difficulty']
          and document['text'] == prompt + document['answer'])
