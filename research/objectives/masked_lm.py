"""Masked language modelling on an encoder-only model, on the host.

Devlin et al. 2019, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", arXiv 1810.04805: each token of a segment is selected independently with
probability `rate`; a selected token is replaced by the mask token with probability `mask`, by a
random token with probability `random`, and left as it is otherwise (BERT's 80/10/10 rule), and the
loss is on the selected tokens only, predicted from the whole corrupted segment. MosaicBERT
(Portes et al. 2023, "MosaicBERT: A Bidirectional Encoder Optimized for Fast Pretraining", arXiv
2312.17482) raises the rate to 30%.

The encoder-only model is this codebase's decoder stack read bidirectionally: every position of a
segment is in its `prefix` (research/model/layers.attention_mask), so it attends to the whole
segment and never across packed segments, and position t predicts its own token (inputs[t] is the
corrupted targets[t], not targets[t - 1]). The mask token is the control token '[MASK]'
(research/data/vocabularies.py); random tokens are drawn uniformly from the vocabulary's text tokens
(those that stand for at least one byte, vocabularies.token_bytes), never from the special or extra
ids. Each row's draws are seeded by (seed, its example id), so a row is the same in any batch.
"""

import dataclasses
import functools

import ml_collections
import numpy as np

from research import errors

_MLM_STREAM = 0x6d6c6d20  # seeded-stream tag of the per-example selection and replacement draws


def corrupt(targets_L: np.ndarray, real_L: np.ndarray, rng: np.random.Generator, rate: float,
            mask: float, random: float, mask_id: int, random_ids: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
  """(inputs [L], selected [L] bool) of one row: each `real_L` position selected with probability
  `rate`; a selected one reads `mask_id` (probability `mask`), a token of `random_ids` drawn
  uniformly (probability `random`) or its own token (the rest)."""
  length = len(targets_L)
  selected_L = real_L & (rng.random(length) < rate)
  action_L = rng.random(length)
  replacement_L = random_ids[rng.integers(0, len(random_ids), length)]
  inputs_L = np.where(selected_L & (action_L < mask), mask_id, targets_L)
  inputs_L = np.where(selected_L & (action_L >= mask) & (action_L < mask + random), replacement_L,
                      inputs_L)
  return inputs_L.astype(targets_L.dtype), selected_L


@dataclasses.dataclass(frozen=True)
class MaskedLM:
  """The settings of a run: the selection rate, the replacement rule and its token ids."""
  rate: float
  mask: float
  random: float
  mask_id: int
  random_ids: tuple[int, ...]

  @functools.cached_property
  def _random_ids(self) -> np.ndarray:
    """`random_ids` as an array, made once (a vocabulary's worth of ids, read every batch)."""
    return np.asarray(self.random_ids, np.int64)

  def apply(self, batch: dict[str, np.ndarray], seed: int,
            example_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The masked-LM batch of packed causal rows (`targets`, `segment_ids`, `positions`,
    `weights`): `inputs` the corrupted targets, `weights` the row's weights at the selected
    tokens only, `prefix` every real position (bidirectional attention within each segment)."""
    real_BL = (batch['segment_ids'] > 0) & (batch['weights'] > 0)
    inputs, selected = zip(*[
        corrupt(targets_L, real_L, np.random.default_rng([_MLM_STREAM, seed, example_id]),
                self.rate, self.mask, self.random, self.mask_id, self._random_ids)
        for targets_L, real_L, example_id in zip(batch['targets'], real_BL, example_ids.tolist())])
    return {**batch, 'inputs': np.stack(inputs),
            'weights': np.where(np.stack(selected), batch['weights'], 0).astype(np.float32),
            'prefix': batch['segment_ids'] > 0}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError on an experiment config whose `objective.mlm` is unusable."""
  settings = config.objective.mlm
  if not 0.0 < settings.rate <= 1.0:
    raise errors.UserError(f'objective.mlm.rate={settings.rate!r} must be in (0, 1]: the share of '
                           'tokens selected for the loss (BERT 0.15, MosaicBERT 0.3).')
  if not (settings.mask >= 0 and settings.random >= 0 and settings.mask + settings.random <= 1):
    raise errors.UserError(f'objective.mlm.mask={settings.mask!r} and random={settings.random!r} '
                           'must be >= 0 with a sum <= 1: the shares of the selected tokens '
                           'replaced by [MASK] and by a random token, the rest kept (BERT 0.8, '
                           '0.1).')
