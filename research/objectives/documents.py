"""Objectives that rewrite documents before packing: MeCo metadata, conditional-training tokens and
fill-in-the-middle.

Each turns a task's document store into a derived in-memory store whose documents carry extra
tokens and per-token loss weights (`DocumentStore.weights`); packing and the causal-LM objective
then treat them like any other documents.

- `Meco` (Gao et al. 2025, "Metadata Conditioning Accelerates Language Model Pre-training", arXiv
  2501.01956; research/objectives/metadata.py): `prefix + source + suffix` before every document,
  weight 0, until the cooldown, whose steps read the plain store.
- `ControlTokens` (Korbak et al. 2023, "Pretraining Language Models with Human Preferences", arXiv
  2302.08582; research/objectives/control_tokens.py): '<|aligned|>' or '<|misaligned|>' before every
  line, by the line's misalignment score against a threshold, left out with a drop probability.
  Scores are computed once per store and scorer and cached beside the store.
- `Fim` (Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle", arXiv
  2207.14255; research/objectives/fim.py): a share of documents split into prefix, middle and
  suffix and reordered between the sentinels <PRE>, <SUF>, <MID>, all weights 1.
- `Permute` (reverse training, arXiv 2403.13799; semantic-aware permutation training, arXiv
  2403.00758; research/objectives/permutation.py): a share of documents with their tokens, words
  or sentences reversed or shuffled, all weights 1, at every step or every other step.

The random draws of document i come from a generator seeded by (stream, seed, i), so a rewritten
store is a pure function of the store and the seed.
"""

from collections.abc import Callable, Sequence
import dataclasses
import json
import os

import numpy as np
import seqio

from research.data import store as store_lib
from research.data import vocabularies
from research.objectives import control_tokens, fim, metadata, permutation

_CONTROL_STREAM = 0x6374726c  # seeded-stream tag of the per-document drop draws
_FIM_STREAM = 0x66696d  # seeded-stream tag of the per-document fill-in-the-middle draws
_PERMUTE_STREAM = 0x7065726d  # seeded-stream tag of the per-document permutation draws


def _derived(store: store_lib.DocumentStore, documents: list[tuple[np.ndarray, np.ndarray]]
             ) -> store_lib.DocumentStore:
  """A store with the same documents' ids and metadata but new (tokens, weights) per document."""
  lengths = np.array([len(tokens) for tokens, _ in documents], np.int64)
  dtype = np.int32 if not len(store.tokens) else store.tokens.dtype
  return dataclasses.replace(
      store, tokens=np.concatenate([t for t, _ in documents] + [np.zeros(0, dtype)]).astype(dtype),
      offsets=np.concatenate([[0], np.cumsum(lengths)]),
      weights=np.concatenate([w for _, w in documents] + [np.zeros(0, np.float32)]))


def _rewritten(store: store_lib.DocumentStore, stream: int, seed: int,
               rewrite: Callable[[int, np.random.Generator], Sequence[int]]
               ) -> store_lib.DocumentStore:
  """A store whose document i is `rewrite(i, rng)`, all weights 1, with rng seeded by
  (stream, seed, i)."""
  documents = []
  for index in range(store.num_documents):
    tokens = np.asarray(rewrite(index, np.random.default_rng([stream, seed, index])), np.int64)
    documents.append((tokens, np.ones(len(tokens), np.float32)))
  return _derived(store, documents)


@dataclasses.dataclass(frozen=True)
class Meco:
  """MeCo's metadata before every document until the last `cooldown_fraction` of training."""
  prefix: str
  suffix: str
  cooldown_fraction: float
  total_steps: int

  def applies_at(self, step: int) -> bool:
    """Metadata until the cooldown; the cooldown's steps read the plain documents."""
    return not metadata.in_cooldown(step, self.total_steps, self.cooldown_fraction)

  def apply(self, store: store_lib.DocumentStore, task_name: str, vocabulary: seqio.Vocabulary,
            seed: int) -> store_lib.DocumentStore:
    del seed  # deterministic
    encoded = {}
    documents = []
    for index, (doc_id, doc_metadata) in enumerate(zip(store.doc_ids, store.metadata)):
      text = metadata.metadata_text(task_name, doc_id, doc_metadata, self.prefix, self.suffix)
      if text not in encoded:
        encoded[text] = np.array(vocabulary.encode(text), np.int64)
      documents.append(metadata.with_metadata(store.document(index), encoded[text]))
    return _derived(store, documents)


@dataclasses.dataclass(frozen=True)
class ControlTokens:
  """Conditional training: a control token before every line by its score (all weights 1)."""
  scorer: str
  threshold: float
  drop_fraction: float

  def applies_at(self, step: int) -> bool:
    del step
    return True

  def apply(self, store: store_lib.DocumentStore, task_name: str, vocabulary: seqio.Vocabulary,
            seed: int) -> store_lib.DocumentStore:
    del task_name
    ids = {name: vocabularies.control_token_id(vocabulary, name)
           for name in control_tokens.BANNED_AT_GENERATION}
    scores = line_scores(store, self.scorer, vocabulary)

    def annotated(index: int, rng: np.random.Generator) -> list[int]:
      pieces = []
      for token, line in control_tokens.annotate(store.text(index, vocabulary), scores[index],
                                                 self.threshold, self.drop_fraction, rng):
        pieces.extend(([ids[token]] if token else []) + vocabulary.encode(line))
      return pieces + [vocabulary.eos_id]

    return _rewritten(store, _CONTROL_STREAM, seed, annotated)


@dataclasses.dataclass(frozen=True)
class Fim:
  """Fill-in-the-middle: with probability `rate` a document rewritten in PSM or SPM order."""
  rate: float
  spm_rate: float
  level: str  # 'char' or 'token': where the split points fall

  def applies_at(self, step: int) -> bool:
    del step
    return True

  def apply(self, store: store_lib.DocumentStore, task_name: str, vocabulary: seqio.Vocabulary,
            seed: int) -> store_lib.DocumentStore:
    del task_name
    sentinel_ids = {name: vocabularies.control_token_id(vocabulary, name)
                    for name in fim.SENTINELS}

    def infilling(index: int, rng: np.random.Generator) -> np.ndarray | list[int]:
      tokens = store.document(index)
      if self.level == 'char':
        pieces, encode = store.text(index, vocabulary), vocabulary.encode
      else:
        pieces, encode = store.body(index, vocabulary.eos_id), list
      rewrite = fim.draw(len(pieces), self.rate, self.spm_rate, rng)
      if rewrite is None:
        return tokens
      return fim.rearranged(pieces, rewrite, encode, sentinel_ids) + [vocabulary.eos_id]

    return _rewritten(store, _FIM_STREAM, seed, infilling)


@dataclasses.dataclass(frozen=True)
class Permute:
  """Reverse / permutation training: with probability `rate` a document's units reordered."""
  rate: float
  unit: str  # permutation.UNITS
  order: str  # permutation.ORDERS
  alternate: bool  # odd steps rewritten, even steps plain

  def applies_at(self, step: int) -> bool:
    return step % 2 == 1 if self.alternate else True

  def apply(self, store: store_lib.DocumentStore, task_name: str, vocabulary: seqio.Vocabulary,
            seed: int) -> store_lib.DocumentStore:
    del task_name

    def reordered(index: int, rng: np.random.Generator) -> np.ndarray | list[int]:
      tokens = store.document(index)
      if rng.random() >= self.rate:
        return tokens
      if self.unit == 'token':
        ids = permutation.permuted(list(store.body(index, vocabulary.eos_id)), self.order, rng)
      else:
        pieces = permutation.units(store.text(index, vocabulary), self.unit)
        ids = vocabulary.encode(' '.join(permutation.permuted(pieces, self.order, rng)))
      return ids + [vocabulary.eos_id]

    return _rewritten(store, _PERMUTE_STREAM, seed, reordered)


def line_scores(store: store_lib.DocumentStore, scorer: str,
                vocabulary: seqio.Vocabulary) -> list[list[float]]:
  """Each document's per-line scores by `scorer`, cached in the store's directory as JSON."""
  path = os.path.join(store.directory, f'line_scores.{scorer}.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  scores = [control_tokens.SCORERS[scorer](store.text(index, vocabulary))
            for index in range(store.num_documents)]
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'w', encoding='utf-8') as f:
    json.dump(scores, f)
  os.replace(tmp, path)
  return scores
