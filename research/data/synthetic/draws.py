"""Seeded draws the synthetic generators share: document streams drawn in blocks, the made-up
people of fact tasks, and holdouts by a seeded hash.

A block stream's document i is a pure function of (stream tag, seed, split, i): documents are drawn
one after another from `np.random.default_rng([stream, seed, split index, block])`, `BLOCK` to a
block, so a corpus of n documents is the first n documents of any larger one.
"""

import functools
import hashlib
from collections.abc import Callable, Iterator

import numpy as np

from research.data.synthetic import biographies, checks

BLOCK = 1024
FIRST_NAMES = biographies.FEMALE_FIRST_NAMES + biographies.MALE_FIRST_NAMES
LAST_NAMES = biographies.LAST_NAMES
NUM_NAMES = len(FIRST_NAMES) * len(LAST_NAMES)  # distinct 'First Last' names


def block_stream(name: str, split: str, seed: int, num_documents: int, stream: int,
                 draw: Callable[[np.random.Generator], dict]) -> Iterator[dict]:
  """`num_documents` documents of `split`, each `draw(rng)` with the id `<name>/<split>/<i>`."""
  split_index = checks.SPLITS.index(split)
  for index in range(num_documents):
    block, offset = divmod(index, BLOCK)
    if offset == 0:
      rng = np.random.default_rng([stream, seed, split_index, block])
      documents = [draw(rng) for _ in range(min(BLOCK, num_documents - index))]
    yield {'id': f'{name}/{split}/{index}', **documents[offset]}


@functools.lru_cache(maxsize=16)
def _name_order(stream: int, seed: int) -> np.ndarray:
  return np.random.default_rng([stream, seed]).permutation(NUM_NAMES)


def person(stream: int, seed: int, index: int) -> str:
  """Person `index` of a seed's made-up people (`index` < NUM_NAMES): 'First Last', distinct for
  distinct indices, from a seeded permutation of every name."""
  first, last = divmod(int(_name_order(stream, seed)[index]), len(LAST_NAMES))
  return f'{FIRST_NAMES[first]} {LAST_NAMES[last]}'


def held_out(key: str, fraction: float) -> bool:
  """Whether the item named by `key` (which should hold the seed) is in a `fraction` of all items
  picked by a hash: the same on every machine and in every process."""
  digest = hashlib.blake2b(key.encode('utf-8'), digest_size=8).digest()
  return int.from_bytes(digest, 'big') < fraction * 2**64

