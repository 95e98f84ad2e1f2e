"""XOR cluster data with label noise, written as text.

From "Benign Overfitting and Grokking in ReLU Networks for XOR Cluster Data" (Xu et al. 2023,
arXiv 2310.02541): points from four Gaussian clusters whose label is the XOR of the cluster's signs
(not linearly separable), a constant fraction of the training labels flipped. A two-layer ReLU
network fits the flipped labels after one gradient step with near-random test accuracy, and much
later reaches near-optimal test accuracy while still fitting them: benign overfitting and
grokking, the slow test-accuracy climb that the grokking monitors watch for.

A point has `dim` integer coordinates: the first two are the cluster's signs times `separation`
plus Gaussian noise of standard deviation `noise`, the others noise alone, all rounded. Its label
is 1 when the two signs differ, else 0; in training a label is flipped with probability
`label_noise` (validation labels are clean). A document is k labelled points, then a query point
whose label is the answer (k = 0, the default, is the paper's supervised setting; k > 0 makes it an
in-context task):

    +3,-4>1;-2,-3>0;+4,+2>

Skill is the query's cluster ('++', '+-', '-+', '--'); difficulty is k, uniform over
min_shots..max_shots; `flipped` says whether the query's label was flipped. The splits are
independent draws.

Document i of a split is a pure function of (split, seed, i, parameters) (draws.block_stream).
"""

import re
from collections.abc import Iterator

import numpy as np

from research.data.synthetic import checks, draws

NAME = 'xor_clusters'
VERSION = 1
SPLITS = checks.SPLITS
CLUSTERS = ('++', '+-', '-+', '--')  # cluster c's signs; its label is 1 when they differ

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # documents per split; about 0.14 M characters with these defaults
    'dim': 2,  # coordinates of a point (the first two carry the clusters)
    'separation': 3,  # the cluster means' distance from 0 along each of the first two axes
    'noise': 1.0,  # the standard deviation of every coordinate's Gaussian noise
    'label_noise': 0.1,  # the probability that a training label is flipped
    'min_shots': 0,  # the fewest labelled points before the query
    'max_shots': 0,  # the most
}

_STREAM = 0x786f7263  # seeded-stream tag of this generator
_POINT = re.compile(r'[+-]\d+(?:,[+-]\d+)*')


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  p['dim'] = checks.check_number(task_name, 'dim', p['dim'], 2, 64)
  p['separation'] = checks.check_number(task_name, 'separation', p['separation'], 1, 99)
  p['noise'] = checks.check_number(task_name, 'noise', p['noise'], 0, 99, kind=float)
  p['label_noise'] = checks.check_number(task_name, 'label_noise', p['label_noise'], 0, 0.5,
                                         kind=float)
  checks.check_range(task_name, p, 'min_shots', 'max_shots', 0, 64)
  return p


def label(cluster: int) -> int:
  """The XOR label of cluster `cluster`: 1 when its two signs differ."""
  return int(CLUSTERS[cluster][0] != CLUSTERS[cluster][1])


def _draw(rng: np.random.Generator, train: bool, p: dict) -> dict:
  shots = int(rng.integers(p['min_shots'], p['max_shots'] + 1))
  clusters = rng.integers(len(CLUSTERS), size=shots + 1).tolist()
  means = np.zeros((shots + 1, p['dim']))
  means[:, :2] = [[p['separation'] * (1 if s == '+' else -1) for s in CLUSTERS[c]]
                  for c in clusters]
  points = np.rint(means + p['noise'] * rng.standard_normal(means.shape)).astype(int).tolist()
  flips = (rng.random(shots + 1) < p['label_noise']).tolist() if train else [False] * (shots + 1)
  labels = [str(label(c) ^ f) for c, f in zip(clusters, flips)]
  written = [','.join(f'{v:+d}' for v in point) for point in points]
  prompt = ''.join(f'{x}>{y};' for x, y in zip(written[:-1], labels[:-1])) + written[-1] + '>'
  return {'text': prompt + labels[-1], 'skill': CLUSTERS[clusters[-1]], 'difficulty': shots,
          'shots': shots, 'flipped': flips[-1], 'clusters': ','.join(map(str, clusters)),
          'flips': ','.join(str(int(f)) for f in flips), 'prompt': prompt, 'answer': labels[-1]}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` documents of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` (the query's cluster, '++', '+-', '-+' or '--'), `difficulty` and `shots`
  (the labelled points before the query), `flipped` (the query's label), `clusters` (every
  point's cluster index, the query's last, as '0,3,1'), `flips` (whether each label is flipped,
  as '0,1,0'), `prompt` (the points and '>') and `answer` ('0' or '1'); `text == prompt +
  answer`. Parameters are validated here, before any document is made; errors name
  `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return draws.block_stream(NAME, split, int(seed), p['num_documents'], _STREAM,
                            lambda rng: _draw(rng, split == 'train', p))


def check(document: dict) -> bool:
  """True when every label in the document, the answer last, is its point's cluster's XOR label
  (flipped where `flips` says), and the prompt is `shots` labelled points then a query point."""
  items = document['prompt'].split(';')
  clusters = [int(c) for c in document['clusters'].split(',')]
  flips = [int(f) for f in document['flips'].split(',')]
  pairs = [item.split('>') for item in items[:-1]] + [[items[-1][:-1], document['answer']]]
  return (items[-1].endswith('>') and len(pairs) == len(clusters) == len(flips)
          == document['shots'] + 1 and flips[-1] == document['flipped']
          and all(len(pair) == 2 and _POINT.fullmatch(pair[0]) for pair in pairs)
          and [pair[1] for pair in pairs] == [str(label(c) ^ f) for c, f in zip(clusters, flips)]
          and document['text'] == document['prompt'] + document['answer'])
