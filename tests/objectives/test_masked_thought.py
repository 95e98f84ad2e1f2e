"""Masked Thought: the rate schedule, the response mask and the masking of response inputs."""

import numpy as np
import pytest

from experiments import base
from research import errors
from research.objectives import causal_lm, masked_thought

_MASK_ID = 999


def _packed_rows(rng: np.random.Generator, batch: int, length: int, delimiter: list[int]):
  """Rows of segments 1, 2, ... then padding; tokens 3..9, the delimiter spliced in at random."""
  targets_BL = rng.integers(3, 10, size=[batch, length]).astype(np.int32)
  segment_ids_BL = np.zeros([batch, length], np.int32)
  for row in range(batch):
    start, segment = 0, 1
    end_of_row = length - rng.integers(0, length // 4)
    while start < end_of_row:
      stop = min(start + int(rng.integers(4, 40)), end_of_row)
      segment_ids_BL[row, start:stop] = segment
      start, segment = stop, segment + 1
    for at in rng.integers(0, length - len(delimiter), size=rng.integers(0, 8)):
      targets_BL[row, at:at + len(delimiter)] = delimiter
  return np.where(segment_ids_BL > 0, targets_BL, 0), segment_ids_BL


def _response_by_loops(targets_BL, segment_ids_BL, delimiter):
  """The definition, one segment at a time."""
  response_BL = np.zeros(targets_BL.shape, bool)
  n = len(delimiter)
  for row in range(targets_BL.shape[0]):
    for segment in set(segment_ids_BL[row].tolist()) - {0}:
      positions = np.flatnonzero(segment_ids_BL[row] == segment)
      tokens = targets_BL[row, positions].tolist()
      ends = [i + n for i in range(len(tokens) - n + 1) if tokens[i:i + n] == delimiter]
      if ends:
        response_BL[row, positions[ends[0]:]] = True
  return response_BL


def test_mask_rate_warms_up_linearly_then_holds():
  rate = lambda step: masked_thought.mask_rate(step, 1000, 0.4, 0.66)
  assert rate(0) == 0.0
  assert rate(330) == pytest.approx(0.2)
  assert rate(660) == pytest.approx(0.4)
  assert rate(800) == pytest.approx(0.4)
  assert rate(1000) == pytest.approx(0.4)
  assert masked_thought.mask_rate(0, 1000, 0.4, 0.0) == pytest.approx(0.4)


def test_response_mask_by_hand():
  # Segment 1: 5 = 7 8; segment 2: 9 10 (no delimiter); segment 3: = 3; padding holds '=' too.
  eq = 61
  targets_BL = np.array([[5, eq, 7, 8, 9, 10, eq, 3, eq, eq]])
  segment_ids_BL = np.array([[1, 1, 1, 1, 2, 2, 3, 3, 0, 0]])
  response_BL = masked_thought.response_mask(targets_BL, segment_ids_BL, [eq])
  np.testing.assert_array_equal(response_BL, [[0, 0, 1, 1, 0, 0, 0, 1, 0, 0]])


def test_multi_token_delimiter_counts_only_inside_one_segment():
  # (4, 5) straddles the boundary of segments 1 and 2, so only segment 2's second one counts.
  targets_BL = np.array([[3, 4, 5, 6, 4, 5, 7, 8]])
  segment_ids_BL = np.array([[1, 1, 2, 2, 2, 2, 2, 2]])
  response_BL = masked_thought.response_mask(targets_BL, segment_ids_BL, [4, 5])
  np.testing.assert_array_equal(response_BL, [[0, 0, 0, 0, 0, 0, 1, 1]])


@pytest.mark.parametrize('delimiter', [[7], [7, 8], [7, 8, 7]])
def test_response_mask_matches_the_definition_on_random_rows(delimiter):
  rng = np.random.default_rng(0)
  targets_BL, segment_ids_BL = _packed_rows(rng, 16, 300, delimiter)
  response_BL = masked_thought.response_mask(targets_BL, segment_ids_BL, delimiter)
  expected_BL = _response_by_loops(targets_BL, segment_ids_BL, delimiter)
  assert expected_BL.any() and not expected_BL.all()
  np.testing.assert_array_equal(response_BL, expected_BL)


@pytest.mark.parametrize('rate', [1.0, 0.4])
def test_masks_touch_only_response_inputs_at_the_rate(rate):
  rng = np.random.default_rng(1)
  delimiter = [7]
  targets_BL, segment_ids_BL = _packed_rows(rng, 64, 768, delimiter)
  targets_before_BL = targets_BL.copy()
  inputs_BL = causal_lm.causal_lm_example(targets_BL, segment_ids_BL)
  inputs_before_BL = inputs_BL.copy()
  response_BL = masked_thought.response_mask(targets_BL, segment_ids_BL, delimiter)
  masked_BL = masked_thought.mask_inputs(inputs_BL, targets_BL, segment_ids_BL, response_BL, rate,
                                         _MASK_ID, np.random.default_rng(2).random(inputs_BL.shape))
  # The inputs that hold a response token: position t reads target t - 1 of its own segment.
  holds_response_BL = np.zeros_like(response_BL)
  holds_response_BL[:, 1:] = response_BL[:, :-1] & (segment_ids_BL[:, 1:] == segment_ids_BL[:, :-1])
  changed_BL = masked_BL != inputs_BL
  assert not np.any(changed_BL & ~holds_response_BL)  # prompt, segment starts, padding untouched
  assert np.all(masked_BL[changed_BL] == _MASK_ID)
  assert not np.any(changed_BL & (segment_ids_BL == 0))
  assert holds_response_BL.sum() > 20_000
  assert abs(changed_BL[holds_response_BL].mean() - rate) < 0.02
  if rate == 1.0:
    np.testing.assert_array_equal(changed_BL, holds_response_BL)
  np.testing.assert_array_equal(targets_BL, targets_before_BL)
  np.testing.assert_array_equal(inputs_BL, inputs_before_BL)
  assert masked_BL.dtype == inputs_BL.dtype


def test_each_row_is_masked_by_its_example_id_alone():
  """A row's masking depends on (seed, its example id), not on the rows beside it, so a host that
  computes only its rows of a batch masks them as the whole batch would."""
  rng = np.random.default_rng(3)
  targets_BL, segment_ids_BL = _packed_rows(rng, 8, 256, [7])
  batch = {'targets': targets_BL, 'segment_ids': segment_ids_BL,
           'inputs': causal_lm.causal_lm_example(targets_BL, segment_ids_BL)}
  thought = masked_thought.MaskedThought(0.4, 0.0, (7,), _MASK_ID, total_steps=100)
  ids = np.arange(16, 24)
  whole = thought.apply(batch, 5, 0, ids)['inputs']
  assert np.sum(whole == _MASK_ID) > 50
  part = thought.apply({k: v[[2, 5]] for k, v in batch.items()}, 5, 0, ids[[2, 5]])['inputs']
  np.testing.assert_array_equal(part, whole[[2, 5]])
  assert np.any(thought.apply(batch, 5, 1, ids)['inputs'] != whole)  # another seed, other draws


@pytest.mark.parametrize('key, value, fragment', [
    ('max_rate', 1.5, 'objective.masked_thought.max_rate=1.5'),
    ('max_rate', -0.1, 'objective.masked_thought.max_rate=-0.1'),
    ('warmup_fraction', 2.0, 'objective.masked_thought.warmup_fraction=2.0'),
    ('delimiter', '', "objective.masked_thought.delimiter=''"),
])
def test_check_config_names_the_bad_key(key, value, fragment):
  config = base.get_config()
  masked_thought.check_config(config)
  config.objective.masked_thought[key] = value
  with pytest.raises(errors.UserError, match=fragment.replace('.', r'\.')):
    masked_thought.check_config(config)
