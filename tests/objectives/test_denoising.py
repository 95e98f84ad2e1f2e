"""Statistics and exactness of the denoisers on 10,000 sampled examples each."""

import numpy as np
import pytest

from research import errors
from research.objectives import denoising

SENTINELS = np.arange(999, 899, -1)  # sentinel k = 999 - k
MODE_ID = 2000
NUM_EXAMPLES = 10_000


def _runs(mask):
  starts = mask & ~np.concatenate([[False], mask[:-1]])
  return int(starts.sum())


@pytest.fixture(scope='module')
def samples():
  """Per denoiser of every preset: 10,000 (length, inputs, targets, mask, tokens) at lengths 64-512."""
  rng = np.random.default_rng(0)
  out = {}
  for name, denoiser in denoising.DENOISERS.items():
    rows = []
    for _ in range(NUM_EXAMPLES):
      length = int(rng.integers(64, 513))
      tokens = rng.integers(3, 259, length)
      inputs, targets, mask = denoising.denoise(tokens, denoiser, rng, SENTINELS, MODE_ID)
      rows.append((length, inputs, targets, mask, tokens))
    out[name] = rows
  return out


@pytest.mark.parametrize('name', sorted(denoising.DENOISERS))
def test_realised_rate_and_span_length_match_the_denoiser(samples, name):
  denoiser = denoising.DENOISERS[name]
  rows = samples[name]
  rate = np.mean([m.mean() for _, _, _, m, _ in rows])
  assert abs(rate - denoiser.rate) < 0.01, (name, rate)
  if denoiser.prefix:
    assert all(_runs(m) == 1 and m[-1] for _, _, _, m, _ in rows)  # one span, to the end
    return
  span = np.mean([m.sum() / _runs(m) for _, _, _, m, _ in rows])
  implied = np.mean([n / max(1, round(n / denoiser.mean_span))
                     for n in (int(np.clip(np.rint(length * denoiser.rate), 1, length - 1))
                               for length, *_ in rows)])
  assert abs(span - implied) < 0.05 * implied, (name, span, implied)
  if 512 * 0.15 / denoiser.mean_span >= 10:  # many spans per example: mu itself
    long_rows = [m for length, _, _, m, _ in rows if length * denoiser.rate / denoiser.mean_span >= 10]
    long_span = np.mean([m.sum() / _runs(m) for m in long_rows])
    assert abs(long_span - denoiser.mean_span) < 0.05 * denoiser.mean_span


@pytest.mark.parametrize('name', sorted(denoising.DENOISERS))
def test_inputs_and_targets_reconstruct_the_tokens_with_unique_sentinels(samples, name):
  denoiser = denoising.DENOISERS[name]
  for length, inputs, targets, mask, tokens in samples[name][:500]:
    assert inputs[0] == MODE_ID
    np.testing.assert_array_equal(
        denoising.original_tokens(inputs, targets, SENTINELS, [MODE_ID]), tokens)
    used = [t for t in targets.tolist() if t in SENTINELS]
    assert len(used) == len(set(used)) == (0 if denoiser.prefix else _runs(mask))
    assert used == SENTINELS[:len(used)].tolist()  # <extra_id_0>, <extra_id_1>, ... in order
    limit_inputs, limit_targets = denoising.output_lengths(denoiser, length, True)
    assert len(inputs) <= limit_inputs and len(targets) <= limit_targets
    if not denoiser.prefix:  # exact for span denoisers
      assert (len(inputs), len(targets)) == (limit_inputs, limit_targets)
    assert len(inputs) + len(targets) == denoising.sequence_length(denoiser, length, True)


def test_noise_mask_starts_clean_and_ends_noisy_with_t5_counts():
  rng = np.random.default_rng(1)
  mask = denoising.span_noise_mask(100, 0.15, 3.0, rng)
  assert not mask[0] and mask[-1] and mask.sum() == 15 and _runs(mask) == 5
  np.testing.assert_array_equal(denoising.span_noise_mask(1, 0.15, 3.0, rng), [True])
  assert denoising.span_noise_mask(2, 0.5, 3.0, rng).tolist() == [False, True]


def test_random_segmentation_is_uniform_over_compositions():
  rng = np.random.default_rng(2)
  counts = {}
  for _ in range(6000):
    parts = tuple(denoising.random_segmentation(5, 3, rng).tolist())
    counts[parts] = counts.get(parts, 0) + 1
  assert len(counts) == 6  # C(4, 2) compositions of 5 into 3 positive parts
  assert all(abs(c / 6000 - 1 / 6) < 0.02 for c in counts.values())


def test_prefix_lm_split_is_uniform_as_in_t5():
  rng = np.random.default_rng(3)
  suffixes = [denoising.prefix_noise_mask(11, 0.5, rng).sum() for _ in range(20000)]
  assert min(suffixes) == 1 and max(suffixes) == 10
  assert abs(np.mean(suffixes) - 5.5) < 0.05


def test_max_raw_length_solves_the_t5_input_lengths():
  # T5's random_spans_helper: 568 raw tokens give 512 inputs (with EOS) for R (3, .15).
  denoiser = denoising.DENOISERS['R3_15']
  raw = denoising.max_raw_length(
      lambda n: denoising.output_lengths(denoiser, n, False)[0] + 1 <= 512, 2000)
  assert raw == 568


def test_mixture_presets_and_overrides():
  denoisers, rates = denoising.mixture_from_config('ul2', {}, {})
  assert [d.name for d in denoisers] == ['R3_15', 'R8_15', 'X3_50', 'X8_50', 'X64_15', 'X64_50',
                                         'S_25']
  assert [d.mode for d in denoisers] == ['[NLU]'] * 2 + ['[NLG]'] * 4 + ['[S2S]']
  np.testing.assert_allclose(rates, [0.8 / 6] * 6 + [0.2])
  _, rates = denoising.mixture_from_config('ul2r', {}, {'S_25': 1.0, 'R3_15': 1.0, 'X32_15': 1.0,
                                                        'X3_50': 1.0})
  np.testing.assert_allclose(rates, [0.25] * 4)
  custom, rates = denoising.mixture_from_config(
      'ul2', {'long': {'mean_span': 20, 'rate': 0.2}, 'split': {'prefix': True, 'rate': 0.3}}, {})
  assert [(d.kind, d.mode) for d in custom] == [('X', '[NLG]'), ('S', '[S2S]')]
  with pytest.raises(errors.UserError, match=r"objective\.rates\.Q1: .*'R3_15'"):
    denoising.mixture_from_config('ul2', {}, {'Q1': 1.0})
  with pytest.raises(errors.UserError, match=r'objective\.denoisers\.bad\.rate=1\.5'):
    denoising.mixture_from_config('ul2', {'bad': {'mean_span': 3, 'rate': 1.5}}, {})


def test_choice_frequencies_follow_the_rates():
  _, rates = denoising.mixture_from_config('ul2', {}, {})
  rng = np.random.default_rng(4)
  picks = np.bincount([denoising.choose(rates, rng) for _ in range(NUM_EXAMPLES)], minlength=7)
  np.testing.assert_allclose(picks / NUM_EXAMPLES, rates, atol=0.02)
