"""The causal language-modelling objective's host-side example transform.

Each packed segment (a document or a chunk of one) is predicted left to right: the model reads
`inputs`, the targets shifted right by one inside the segment, and predicts `targets`. Position 0
of every segment reads the start id, the vocabulary's beginning-of-sequence token (the pad id 0
for vocabularies without one; research/data/vocabularies.start_id), so nothing leaks across the
segment boundaries of a packed row.
"""

import numpy as np


def causal_lm_example(targets: np.ndarray, segment_ids: np.ndarray,
                      start_id: int = 0) -> np.ndarray:
  """Inputs for next-token prediction, same shape and dtype as `targets` ([..., L]).

  inputs[..., t] = targets[..., t - 1] when positions t - 1 and t lie in the same segment
  (segment_ids > 0), `start_id` at the start of every segment, and 0 on padding.
  """
  inputs = np.where(segment_ids > 0, start_id, 0).astype(targets.dtype)
  same_segment = (segment_ids[..., 1:] == segment_ids[..., :-1]) & (segment_ids[..., 1:] > 0)
  inputs[..., 1:] = np.where(same_segment, targets[..., :-1], inputs[..., 1:])
  return inputs
