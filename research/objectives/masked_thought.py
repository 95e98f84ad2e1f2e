"""Masked Thought: random masking of the reasoning tokens a model reads, on the host.

Chen et al. 2024, "Masked Thought: Simply Masking Partial Reasoning Steps Can Improve Mathematical
Reasoning Learning of Language Models", arXiv 2403.02178. Every input token of the response (the
tokens after the prompt) is replaced independently with probability `rate` by a mask id, while the
labels stay the original tokens, so the model predicts the true next token from a corrupted
history. Prompt tokens are never masked. The rate rises linearly from 0 to its maximum over the
first `warmup_fraction` of training, then stays there (the authors' `update_mask_rate` with
`mask_rate_warmup` = 0.66 and a maximum of 0.4 for GSM8K).

Here the prompt of each packed segment ends with the first occurrence of a delimiter token sequence
(`objective.masked_thought.delimiter`, '=' for the arithmetic tasks); a segment without it is all
prompt. The mask id is the control token '[MASK]' (research/data/vocabularies.py).
"""

import dataclasses

import ml_collections
import numpy as np

from research import errors


def mask_rate(step: int, total_steps: int, max_rate: float, warmup_fraction: float) -> float:
  """The masking probability at `step`: 0 at step 0, rising linearly to `max_rate` at step
  warmup_fraction * total_steps, `max_rate` after it (and from the start when that step is 0)."""
  warmup_steps = warmup_fraction * total_steps
  if warmup_steps <= 0:
    return float(max_rate)
  return float(max_rate * min(step / warmup_steps, 1.0))


def _segment_starts(segment_ids_BL: np.ndarray) -> np.ndarray:
  """bool [B, L]: True where a new run of equal segment ids begins (position 0 included)."""
  starts_BL = np.ones(segment_ids_BL.shape, dtype=bool)
  starts_BL[:, 1:] = segment_ids_BL[:, 1:] != segment_ids_BL[:, :-1]
  return starts_BL


def response_mask(targets_BL: np.ndarray, segment_ids_BL: np.ndarray,
                  delimiter_ids) -> np.ndarray:
  """bool [B, L]: the tokens of each segment after the first occurrence of `delimiter_ids` in it.

  `delimiter_ids` is a non-empty sequence of token ids; an occurrence must lie inside one segment
  (segment_ids > 0). The delimiter and everything before it are prompt, and so is all of a segment
  that lacks it; padding (segment id 0) is never response.
  """
  delimiter_N = np.asarray(delimiter_ids, dtype=targets_BL.dtype)
  n = delimiter_N.size
  batch, length = targets_BL.shape
  ends_BL = np.zeros([batch, length], dtype=bool)  # the last token of a delimiter occurrence
  if length >= n:
    windows_BWN = np.lib.stride_tricks.sliding_window_view(targets_BL, n, axis=1)
    segment_windows_BWN = np.lib.stride_tricks.sliding_window_view(segment_ids_BL, n, axis=1)
    one_segment_BW = np.all(segment_windows_BWN == segment_windows_BWN[..., :1], axis=-1)
    ends_BL[:, n - 1:] = (np.all(windows_BWN == delimiter_N, axis=-1) & one_segment_BW
                          & (segment_windows_BWN[..., 0] > 0))
  # Occurrences ending strictly before t in the row, minus those before t's segment began. The
  # count is non-decreasing along the row, so a running maximum carries each segment's base.
  before_BL = np.cumsum(ends_BL, axis=1) - ends_BL
  base_BL = np.maximum.accumulate(np.where(_segment_starts(segment_ids_BL), before_BL, 0), axis=1)
  return (before_BL > base_BL) & (segment_ids_BL > 0)


def mask_inputs(inputs_BL: np.ndarray, targets_BL: np.ndarray, segment_ids_BL: np.ndarray,
                response_BL: np.ndarray, rate: float, mask_id: int,
                uniform_BL: np.ndarray) -> np.ndarray:
  """`inputs_BL` with each response token it holds replaced by `mask_id` with probability `rate`.

  In the causal layout (research/objectives/causal_lm.py) inputs[t] holds targets[t - 1] when
  t - 1 and t share a segment. Position t is eligible when that token is a response token
  (response_BL[t - 1]) and inputs[t] still holds it; it is masked when its draw `uniform_BL[t]`
  (independent uniforms in [0, 1)) is below `rate`. Prompt tokens, segment starts and padding are never changed, and the
  targets (the labels) are not touched.
  """
  eligible_BL = np.zeros(inputs_BL.shape, dtype=bool)
  eligible_BL[:, 1:] = (response_BL[:, :-1] & (segment_ids_BL[:, 1:] == segment_ids_BL[:, :-1])
                        & (segment_ids_BL[:, 1:] > 0) & (inputs_BL[:, 1:] == targets_BL[:, :-1]))
  masked_BL = eligible_BL & (uniform_BL < rate)
  return np.where(masked_BL, np.asarray(mask_id, dtype=inputs_BL.dtype), inputs_BL)


_MASK_STREAM = 0x6d61736b  # seeded-stream tag of the per-example masking draws


@dataclasses.dataclass(frozen=True)
class MaskedThought:
  """The settings of a run: the rate schedule, the delimiter's and the mask's token ids."""
  max_rate: float
  warmup_fraction: float
  delimiter_ids: tuple[int, ...]
  mask_id: int
  total_steps: int

  def apply(self, batch: dict[str, np.ndarray], step: int, seed: int,
            example_ids: np.ndarray) -> dict[str, np.ndarray]:
    """The causal-LM batch of `step` with its response inputs masked at the step's rate; each
    row's draws are seeded by (seed, its example id), so a row is the same in any subset of the
    batch."""
    rate = mask_rate(step, self.total_steps, self.max_rate, self.warmup_fraction)
    response_BL = response_mask(batch['targets'], batch['segment_ids'], self.delimiter_ids)
    length = batch['inputs'].shape[1]
    uniform_BL = np.array([np.random.default_rng([_MASK_STREAM, seed, i]).random(length)
                           for i in example_ids.tolist()]).reshape(-1, length)
    inputs_BL = mask_inputs(batch['inputs'], batch['targets'], batch['segment_ids'], response_BL,
                            rate, self.mask_id, uniform_BL)
    return {**batch, 'inputs': inputs_BL}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError on an experiment config whose `objective.masked_thought` is unusable."""
  settings = config.objective.masked_thought
  if not 0.0 <= settings.max_rate <= 1.0:
    raise errors.UserError(f'objective.masked_thought.max_rate={settings.max_rate!r} is not a '
                           'probability; set it in [0, 1] (the paper uses 0.4 for GSM8K, 0.2 for '
                           'MATH).')
  if not 0.0 <= settings.warmup_fraction <= 1.0:
    raise errors.UserError(f'objective.masked_thought.warmup_fraction={settings.warmup_fraction!r} '
                           'is not a fraction of training; set it in [0, 1] (0.66 in the paper, 0 '
                           'for the maximum rate from the start).')
  if not settings.delimiter:
    raise errors.UserError(f'objective.masked_thought.delimiter={settings.delimiter!r} is empty; '
                           "set it to the text that ends each prompt, such as '='.")
