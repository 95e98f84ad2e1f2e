"""Denoising objectives: T5 span corruption, prefix LM, and UL2's mixture of denoisers.

UL2 (Tay et al. 2022, "UL2: Unifying Language Learning Paradigms", arXiv 2205.05131) casts
pretraining objectives as one family of denoisers, each a (mean span mu, corruption rate r) pair:

- span denoisers corrupt about r * n of a segment's n tokens in about r * n / mu spans, with T5's
  noise-span algorithm (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
  Unified Text-to-Text Transformer", arXiv 1910.10683, `random_spans_noise_mask`): the number of
  noise tokens is n_noise = clip(round(n * r), 1, n - 1), of spans k = max(round(n_noise / mu), 1),
  and the noise and clean token counts are each split into k positive parts uniformly at random,
  interleaved clean first. Inputs keep the clean tokens and put one unique sentinel in place of each
  span; targets list each span after its sentinel: `A B C D E` with `B` and `D E` noised gives
  inputs `A <0> C <1>` and targets `<0> B <1> D E`. Sentinels count down from the top of the
  vocabulary as T5's `<extra_id_k>` do (research/data/vocabularies.py);
- prefix denoisers (UL2's S) cut a segment in two: the prefix is the input, the suffix the target.
  The suffix length is uniform on [1, m], m = round(2 * r * n) - 1 (clipped to [1, n - 1]), so the
  mean corrupted fraction is r: r = 0.5 is T5's `prefix_lm` (split uniform on [1, n - 1]) and
  r = 0.25 the S-denoiser of UL2 configs (nanoUL2, levanter). r = 1 leaves the prefix empty: the
  whole segment is the target, causal LM as a denoiser ('S_100'), the 0-prefix causal denoiser
  of CodeGen2 (Nijkamp et al. 2023, "CodeGen2: Lessons for Training LLMs on Programming and
  Natural Languages", arXiv 2305.02309).

A mode token ([NLU] for R, [NLG] for X, [S2S] for S, the names of the released UL2 checkpoints)
goes before the inputs. `PRESETS` holds UL2's 7-denoiser mixture (R: (3, .15), (8, .15); X: (3, .5),
(8, .5), (64, .15), (64, .5); S: r = .25; 20% S and 80% split evenly over R and X, as configs citing
the paper do) and UL2R's (Tay et al. 2022, "Transcending Scaling Laws with 0.1% Extra Compute",
arXiv 2210.11399: 50% S, R (3, .15), X (32, .15), X (3, .5)) and CodeGen2's (50% causal LM 'S_100',
50% span corruption R (3, .15), T5's spans: REFERENCE.md gives not the paper's span settings); CodeGen2
trains its mixture on a decoder with causal attention throughout, without mode tokens
(`objective.prefix_attention=False`, `objective.mode_tokens=False`; experiments/codegen2.py).
Special cases need no special code: causal LM is the prefix denoiser 'S_100', T5 span corruption
the single R (3, .15).

Everything here is numpy on the host, a pure function of the tokens and a numpy Generator, so a
data pipeline can seed each example from (seed, example index) and stay deterministic and resumable.
The lengths of a span denoiser's inputs and targets depend only on n (`span_lengths`), which lets
packing place segments so that every denoiser's output fits (the T5 `random_spans_helper` problem,
solved exactly by `max_raw_length`).
"""

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from research import errors

MODE_TOKENS = {'R': '[NLU]', 'X': '[NLG]', 'S': '[S2S]'}


@dataclasses.dataclass(frozen=True)
class Denoiser:
  """One denoiser: a mean span and a corruption rate, or a prefix split with mean suffix rate."""
  name: str
  mean_span: float  # mu, in tokens (span denoisers)
  rate: float  # r: the expected fraction of a segment's tokens that go to the targets
  prefix: bool = False  # S-denoiser: one span, running to the segment's end
  mode: str = '[NLU]'  # the mode token put before the inputs

  @property
  def kind(self) -> str:
    """'S' for prefix denoisers; 'X' (extreme) for spans >= 12 or rates >= 0.3; else 'R'."""
    if self.prefix:
      return 'S'
    return 'X' if self.mean_span >= 12 or self.rate >= 0.3 else 'R'


def span_denoiser(mean_span: int, rate: float) -> Denoiser:
  """The span denoiser (mu, r), named like 'R3_15' or 'X64_50' (kind, mu, percent rate)."""
  kind = 'X' if mean_span >= 12 or rate >= 0.3 else 'R'
  return Denoiser(f'{kind}{mean_span}_{round(rate * 100)}', mean_span, rate, False,
                  MODE_TOKENS[kind])


def prefix_denoiser(rate: float) -> Denoiser:
  """The prefix (S) denoiser with mean suffix fraction r, named like 'S_25'."""
  return Denoiser(f'S_{round(rate * 100)}', 0.0, rate, True, MODE_TOKENS['S'])


DENOISERS: dict[str, Denoiser] = {d.name: d for d in (
    span_denoiser(3, 0.15), span_denoiser(8, 0.15), span_denoiser(3, 0.5), span_denoiser(8, 0.5),
    span_denoiser(64, 0.15), span_denoiser(64, 0.5), span_denoiser(32, 0.15),
    prefix_denoiser(0.25), prefix_denoiser(0.5), prefix_denoiser(1.0))}

# Denoiser mixtures by objective name: denoiser name -> sampling weight.
PRESETS: dict[str, dict[str, float]] = {
    'ul2': {'R3_15': 0.8 / 6, 'R8_15': 0.8 / 6, 'X3_50': 0.8 / 6, 'X8_50': 0.8 / 6,
            'X64_15': 0.8 / 6, 'X64_50': 0.8 / 6, 'S_25': 0.2},
    'ul2r': {'S_25': 0.5, 'R3_15': 0.5 / 3, 'X32_15': 0.5 / 3, 'X3_50': 0.5 / 3},
    'span_corruption': {'R3_15': 1.0},
    'prefix_lm': {'S_50': 1.0},
    'codegen2': {'S_100': 0.5, 'R3_15': 0.5},
}

_DENOISER_KEYS = {'mean_span', 'rate', 'prefix', 'mode', 'weight'}


def _round(x):
  """Round half to even, elementwise, as integers (T5 rounds with tf.round, which does the same)."""
  return np.rint(x).astype(np.int64)


def span_counts(length, rate: float, mean_span: float) -> tuple[np.ndarray, np.ndarray]:
  """(noise tokens, noise spans) of a span denoiser on segments of `length` tokens (arrays ok).

  T5's counts: n_noise = clip(round(n r), 1, n - 1) and k = max(round(n_noise / mu), 1), with k at
  most the clean tokens so that spans stay apart. A 1-token segment is all noise (n_noise = k = 1).
  """
  length = np.asarray(length, np.int64)
  num_noise = np.clip(_round(length * rate), 1, np.maximum(length - 1, 1))
  num_spans = np.maximum(np.minimum(_round(num_noise / mean_span), length - num_noise), 1)
  return num_noise, num_spans


def output_lengths(denoiser: Denoiser, length, mode_tokens: bool) -> tuple[np.ndarray, np.ndarray]:
  """The most input and target tokens `denoiser` can make of a `length`-token segment (arrays ok).

  Exact for span denoisers (inputs n - n_noise + k, targets n_noise + k, plus a mode token);
  for prefix denoisers the bound over all split points (prefix up to n - 1, suffix up to m).
  """
  length = np.asarray(length, np.int64)
  mode = int(mode_tokens)
  if denoiser.prefix:
    return np.maximum(length - 1, 0) + mode, _max_suffix(length, denoiser.rate)
  num_noise, num_spans = span_counts(length, denoiser.rate, denoiser.mean_span)
  return length - num_noise + num_spans + mode, num_noise + num_spans


def sequence_length(denoiser: Denoiser, length, mode_tokens: bool) -> np.ndarray:
  """Exactly how many tokens [mode] + inputs + targets of a `length`-token segment take (arrays ok).

  A prefix split moves tokens from inputs to targets without adding any, so its total is fixed
  even though each side's length is random.
  """
  if denoiser.prefix:
    return np.asarray(length, np.int64) + int(mode_tokens)
  inputs, targets = output_lengths(denoiser, length, mode_tokens)
  return inputs + targets


def _max_suffix(length, rate: float):
  if rate >= 1:  # the causal denoiser: the whole segment
    return np.asarray(length, np.int64)
  return np.clip(_round(2 * rate * length) - 1, 1, np.maximum(length - 1, 1))


def random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly random composition of `num_items` into `num_segments` positive parts.

  Cuts fall at `num_segments - 1` distinct positions of the `num_items - 1` gaps, all choices
  equally likely (T5's shuffled-marker construction draws from the same distribution).
  """
  cuts = np.sort(rng.choice(num_items - 1, num_segments - 1, replace=False)) + 1
  return np.diff(np.concatenate([[0], cuts, [num_items]]))


def span_noise_mask(length: int, rate: float, mean_span: float,
                    rng: np.random.Generator) -> np.ndarray:
  """T5's random-spans noise mask: bool [length], k clean runs and k noise runs, clean first."""
  num_noise, num_spans = (int(x) for x in span_counts(length, rate, mean_span))
  if num_noise >= length:
    return np.ones(length, bool)
  noise_lengths = random_segmentation(num_noise, num_spans, rng)
  clean_lengths = random_segmentation(length - num_noise, num_spans, rng)
  run_lengths = np.stack([clean_lengths, noise_lengths], axis=1).reshape(-1)
  return np.repeat(np.tile([False, True], num_spans), run_lengths)


def prefix_noise_mask(length: int, rate: float, rng: np.random.Generator) -> np.ndarray:
  """bool [length]: a suffix of uniform length in [1, m] is noise (m from the module docstring);
  with rate 1, all of it."""
  if rate >= 1:
    return np.ones(length, bool)
  suffix = int(rng.integers(1, int(_max_suffix(length, rate)) + 1))
  return np.arange(length) >= length - suffix


def noise_mask(denoiser: Denoiser, length: int, rng: np.random.Generator) -> np.ndarray:
  if denoiser.prefix:
    return prefix_noise_mask(length, denoiser.rate, rng)
  return span_noise_mask(length, denoiser.rate, denoiser.mean_span, rng)


def inputs_and_targets(tokens: np.ndarray, mask: np.ndarray, sentinel_ids: np.ndarray | None,
                       mode_id: int | None) -> tuple[np.ndarray, np.ndarray]:
  """Splits `tokens` by a noise mask into (inputs, targets).

  With `sentinel_ids` (sentinel k's id at index k), each noise run becomes sentinel k in the inputs
  and sentinel k then the run in the targets (span corruption); with None, the inputs are the clean
  tokens and the targets the noise tokens (a prefix split). `mode_id` goes first in the inputs.
  """
  mode = np.array([] if mode_id is None else [mode_id], tokens.dtype)
  if sentinel_ids is None:
    return np.concatenate([mode, tokens[~mask]]), tokens[mask]
  starts = mask & ~np.concatenate([[False], mask[:-1]])
  span_index = np.cumsum(starts) - 1
  num_spans = int(starts.sum())
  if num_spans > len(sentinel_ids):
    raise errors.UserError(f'An example needs {num_spans} sentinels but the vocabulary has '
                           f'{len(sentinel_ids)}; raise data.extra_ids.')
  sentinels = sentinel_ids[span_index].astype(tokens.dtype)
  inputs = np.where(mask, sentinels, tokens)[~mask | starts]
  noise_tokens = tokens[mask]
  targets = np.empty(len(noise_tokens) + num_spans, tokens.dtype)
  noise_at = np.arange(len(noise_tokens)) + span_index[mask] + 1  # after k + 1 sentinels
  targets[noise_at] = noise_tokens
  sentinel_at = np.flatnonzero(starts[mask]) + np.arange(num_spans)
  targets[sentinel_at] = sentinel_ids[:num_spans]
  return np.concatenate([mode, inputs]), targets


def original_tokens(inputs: np.ndarray, targets: np.ndarray, sentinel_ids,
                    mode_ids=()) -> np.ndarray:
  """The segment's tokens back from (inputs, targets): the inverse of `inputs_and_targets`.

  Mode tokens (ids in `mode_ids`) are dropped from the inputs; each sentinel of the inputs is
  replaced by the span after it in the targets; without sentinels the targets follow the inputs.
  """
  sentinels, modes = set(np.asarray(sentinel_ids).tolist()), set(mode_ids)
  inputs = [t for t in np.asarray(inputs).tolist() if t not in modes]
  targets = np.asarray(targets).tolist()
  if not sentinels.intersection(targets):
    return np.array(inputs + targets, np.int64)
  spans, current = {}, None
  for token in targets:
    if token in sentinels:
      current = spans[token] = []
    else:
      current.append(token)
  return np.array([x for t in inputs for x in (spans[t] if t in sentinels else [t])], np.int64)


def denoise(tokens: np.ndarray, denoiser: Denoiser, rng: np.random.Generator,
            sentinel_ids: np.ndarray, mode_id: int | None):
  """(inputs, targets, noise mask) of one segment under `denoiser`."""
  mask = noise_mask(denoiser, len(tokens), rng)
  inputs, targets = inputs_and_targets(tokens, mask, None if denoiser.prefix else sentinel_ids,
                                       mode_id)
  return inputs, targets, mask


def max_raw_length(fits: Callable[[np.ndarray], np.ndarray], limit: int) -> int:
  """The largest n in [1, limit] with fits(n) true, fits being monotone (true, then false)."""
  lengths = np.arange(1, limit + 1)
  ok = fits(lengths)
  if not ok[0]:
    return 0
  return int(lengths[np.argmin(ok)] - 1) if not ok.all() else limit


def mixture_from_config(name: str, denoisers_config: Mapping, rates_config: Mapping
                        ) -> tuple[list[Denoiser], np.ndarray]:
  """The denoisers and normalised sampling rates of objective `name` and its config overrides.

  `denoisers_config` (objective.denoisers), when not empty, replaces the preset: name ->
  {mean_span, rate, prefix, mode, weight}; `rates_config` (objective.rates) reweights by name.
  """
  if denoisers_config:
    denoisers, weights = [], {}
    for key, spec in denoisers_config.items():
      path = f'objective.denoisers.{key}'
      if not hasattr(spec, 'keys') or not set(spec.keys()) <= _DENOISER_KEYS:
        raise errors.UserError(f'{path} must be a ConfigDict with keys from '
                               f'{sorted(_DENOISER_KEYS)}, got {spec!r}.')
      denoiser = Denoiser(key, float(spec.get('mean_span', 0.0)), float(spec.get('rate', 0.0)),
                          bool(spec.get('prefix', False)))
      denoisers.append(dataclasses.replace(denoiser,
                                           mode=spec.get('mode', MODE_TOKENS[denoiser.kind])))
      weights[key] = spec.get('weight', 1.0)
  else:
    if name not in PRESETS:
      raise errors.UserError(f'objective.name={name!r} has no denoiser preset; choose one of '
                             f'{sorted(PRESETS)} or set objective.denoisers.')
    denoisers = [DENOISERS[key] for key in PRESETS[name]]
    weights = dict(PRESETS[name])
  for key, weight in rates_config.items():
    if key not in weights:
      raise errors.UserError(f'objective.rates.{key}: {key!r} is not a denoiser of this objective; '
                             f'choose from {sorted(weights)}.')
    weights[key] = weight
  for denoiser in denoisers:
    check_denoiser(denoiser, f'objective.denoisers.{denoiser.name}')
  rates = np.array([weights[d.name] for d in denoisers], np.float64)
  if not all(isinstance(w, (int, float)) and w >= 0 for w in rates.tolist()) or rates.sum() <= 0:
    raise errors.UserError(f'objective.rates: the denoiser weights {weights} must be non-negative '
                           'numbers with a positive sum.')
  return denoisers, rates / rates.sum()


def check_denoiser(denoiser: Denoiser, path: str) -> None:
  """Raises naming `path` unless the rate is in (0, 1) (or 1, the causal prefix denoiser) and a
  span denoiser's mean span >= 1."""
  if not (0 < denoiser.rate < 1 or denoiser.prefix and denoiser.rate == 1):
    raise errors.UserError(f'{path}.rate={denoiser.rate} must be in (0, 1), or 1 for a prefix '
                           'denoiser (an empty prefix: causal LM).')
  if not denoiser.prefix and denoiser.mean_span < 1:
    raise errors.UserError(f'{path}.mean_span={denoiser.mean_span} must be >= 1 token.')
  if denoiser.mode and denoiser.mode not in MODE_TOKENS.values():
    raise errors.UserError(f'{path}.mode={denoiser.mode!r} is not a mode token; choose one of '
                           f'{sorted(MODE_TOKENS.values())}.')


def choose(rates: np.ndarray, rng: np.random.Generator) -> int:
  """The index of a denoiser drawn with probabilities `rates`."""
  return int(np.searchsorted(np.cumsum(rates), rng.random() * rates.sum(), side='right').clip(
      0, len(rates) - 1))
