"""Conditional training: a control token before each line, chosen by a misalignment score.

Korbak et al. 2023, "Pretraining Language Models with Human Preferences", arXiv 2302.08582. A
scorer gives every segment of a document (a line, for code) a misalignment score, lower being
better; the segment is preceded by '<|aligned|>' when its score is at most `threshold` and by
'<|misaligned|>' otherwise, except that with probability `drop_fraction` the token is left out
(the authors' `drop_token_fraction`: 0.1 with threshold 0 for PEP 8). Training is plain maximum
likelihood. Generation is conditioned on '<|aligned|>' with both control tokens banned.

The shipped scorer, 'pep8', counts the PEP 8 violations pycodestyle reports on each line, as in
the paper's PEP 8 experiments; `register_scorer` adds others.
"""

import functools
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np
import pycodestyle

from research import errors

ALIGNED, MISALIGNED = '<|aligned|>', '<|misaligned|>'
BANNED_AT_GENERATION = (ALIGNED, MISALIGNED)

SCORERS: dict[str, Callable[[str], list[float]]] = {}


def register_scorer(name: str, fn: Callable[[str], list[float]]) -> None:
  """Adds scorer `fn` (text -> one misalignment score per line of text.splitlines(True))."""
  if name in SCORERS:
    raise ValueError(f'A scorer named {name!r} is already registered.')
  SCORERS[name] = fn


class _LineCounts(pycodestyle.BaseReport):
  """A silent pycodestyle report that counts the violations on each line."""

  def __init__(self, options, num_lines: int):
    super().__init__(options)
    self.counts = [0] * num_lines

  def error(self, line_number, offset, text, check):
    code = super().error(line_number, offset, text, check)
    if code:
      # A tokenizer error at the end of the input (E901) is reported past the last line.
      self.counts[min(max(line_number, 1), len(self.counts)) - 1] += 1
    return code


@functools.cache
def _pycodestyle_options():
  """pycodestyle's default options (max line length 79, its default ignore list), built once."""
  return pycodestyle.StyleGuide(quiet=True).options


def pep8_scores(text: str) -> list[float]:
  """The number of PEP 8 violations pycodestyle reports on each line of `text` (splitlines with
  line ends), from one check of the whole text with default options; nothing is printed."""
  lines = text.splitlines(keepends=True)
  if not lines:
    return []
  options = _pycodestyle_options()
  report = _LineCounts(options, len(lines))
  pycodestyle.Checker(lines=lines, options=options, report=report).check_all()
  return [float(count) for count in report.counts]


register_scorer('pep8', pep8_scores)


def complete_lines(text: str, stopped: bool) -> str:
  """`text` without its last, unfinished line when generation was cut off (not `stopped`)."""
  return text if stopped or '\n' not in text else text[:text.rindex('\n') + 1]


def misalignment(texts: Sequence[str], scorer: str) -> dict[str, float]:
  """How misaligned a set of texts (samples of a model) is by `scorer`, over all their lines:
  `violations_per_line` (the mean line score), `misaligned_lines` (the share of lines scored above
  0: for PEP 8, with a violation), `violations_per_kchar` (score per 1000 characters, the paper's
  per-character PEP 8 score scaled) and `misaligned_texts` (the share of texts with such a line).
  Texts are scored whole, each line in its context."""
  scores = [SCORERS[scorer](text) for text in texts]
  lines = [score for text_scores in scores for score in text_scores]
  chars = sum(len(text) for text in texts)
  return {'violations_per_line': float(np.sum(lines) / max(len(lines), 1)),
          'misaligned_lines': float(np.mean(np.array(lines) > 0)) if lines else 0.0,
          'violations_per_kchar': float(1000 * np.sum(lines) / max(chars, 1)),
          'misaligned_texts': float(np.mean([max(s, default=0) > 0 for s in scores]))}


def annotate(text: str, scores: Sequence[float], threshold: float, drop_fraction: float,
             rng: np.random.Generator) -> list[tuple[str | None, str]]:
  """One (control token name or None, line) pair per line of text.splitlines(keepends=True).

  The token is '<|aligned|>' when the line's score is <= `threshold`, else '<|misaligned|>', and
  None (left out) with probability `drop_fraction`, one uniform draw per line from `rng`. The
  lines join back to `text`.
  """
  lines = text.splitlines(keepends=True)
  if len(scores) != len(lines):
    raise ValueError(f'{len(scores)} scores for {len(lines)} lines; a scorer gives one per line.')
  dropped_N = rng.random(len(lines)) < drop_fraction
  return [(None if dropped else ALIGNED if score <= threshold else MISALIGNED, line)
          for line, score, dropped in zip(lines, scores, dropped_N)]


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError on an experiment config whose `objective.control` is unusable."""
  settings = config.objective.control
  if settings.scorer not in SCORERS:
    raise errors.UserError(f'objective.control.scorer={settings.scorer!r} is not a known scorer; '
                           f'choose one of {sorted(SCORERS)} or register one with '
                           'research.objectives.control_tokens.register_scorer.')
  if not 0.0 <= settings.drop_fraction <= 1.0:
    raise errors.UserError(f'objective.control.drop_fraction={settings.drop_fraction!r} is not a '
                           'probability; set it in [0, 1] (0.1 for PEP 8 in the paper).')
