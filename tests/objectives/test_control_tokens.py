"""Conditional training: control tokens by threshold, dropped tokens, the PEP 8 scorer."""

import numpy as np
import pytest

from experiments import base
from research import errors
from research.objectives import control_tokens

_SNIPPET = ('import os\n'
            'x=1\n'
            'y = 2\n'
            "z = '" + 'a' * 90 + "'\n")


def test_control_token_is_chosen_by_threshold():
  text = 'a\nb\nc\nd\n'
  pairs = control_tokens.annotate(text, [-1.0, 0.5, 0.5000001, 3.0], 0.5, 0.0,
                                  np.random.default_rng(0))
  assert pairs == [('<|aligned|>', 'a\n'), ('<|aligned|>', 'b\n'), ('<|misaligned|>', 'c\n'),
                   ('<|misaligned|>', 'd\n')]


def test_drop_fraction_is_realised():
  text = ''.join(f'line {i}\n' for i in range(10_000))
  scores = [float(i % 3) for i in range(10_000)]
  pairs = control_tokens.annotate(text, scores, 0.0, 0.1, np.random.default_rng(1))
  dropped = np.array([token is None for token, _ in pairs])
  assert abs(dropped.mean() - 0.1) < 0.02
  kept = [(token, score) for (token, _), score in zip(pairs, scores) if token is not None]
  assert all((token == '<|aligned|>') == (score <= 0.0) for token, score in kept)
  assert all(token is None for token, _ in control_tokens.annotate(
      text, scores, 0.0, 1.0, np.random.default_rng(2)))


@pytest.mark.parametrize('text', [_SNIPPET, 'no newline at the end', 'a\r\nb\n\n\nc', ''])
def test_lines_join_back_to_the_text(text):
  scores = control_tokens.SCORERS['pep8'](text)
  pairs = control_tokens.annotate(text, scores, 0.0, 0.3, np.random.default_rng(3))
  assert ''.join(line for _, line in pairs) == text
  assert len(pairs) == len(text.splitlines(keepends=True))


def test_pep8_scorer_counts_violations_per_line_silently(capsys):
  # Line 2 lacks whitespace around '=' (E225); line 4 is 96 characters long (E501).
  assert control_tokens.SCORERS['pep8'](_SNIPPET) == [0.0, 1.0, 0.0, 1.0]
  # E302 (expected 2 blank lines) on the def, E111 (indent of 2) on the body.
  assert control_tokens.pep8_scores('import os\ndef f():\n  return os\n') == [0.0, 1.0, 1.0]
  # An unterminated bracket is a tokenizer error pycodestyle places after the end: the last line.
  assert control_tokens.pep8_scores('x = 1\ny = (\n')[0] == 0.0
  assert control_tokens.pep8_scores('x = 1\ny = (\n')[1] >= 1.0
  assert capsys.readouterr() == ('', '')


def test_misalignment_of_samples_counts_lines_characters_and_texts():
  # _SNIPPET: 4 lines, 2 violations; the second text: E302 and E111, 3 lines; the third: clean.
  texts = [_SNIPPET, 'import os\ndef f():\n  return os\n', 'x = 1\n']
  chars = sum(len(text) for text in texts)
  assert control_tokens.misalignment(texts, 'pep8') == pytest.approx({
      'violations_per_line': 4 / 8, 'misaligned_lines': 4 / 8,
      'violations_per_kchar': 1000 * 4 / chars, 'misaligned_texts': 2 / 3})


def test_a_cut_off_sample_loses_its_unfinished_last_line():
  assert control_tokens.complete_lines('a = 1\nb = (', stopped=False) == 'a = 1\n'
  assert control_tokens.complete_lines('a = 1\nb = 2', stopped=True) == 'a = 1\nb = 2'
  assert control_tokens.complete_lines('b = (', stopped=False) == 'b = ('


def test_both_annotation_tokens_are_banned_at_generation():
  pairs = control_tokens.annotate('a\nb\n', [0.0, 1.0], 0.0, 0.0, np.random.default_rng(4))
  assert {token for token, _ in pairs} == set(control_tokens.BANNED_AT_GENERATION)


def test_registered_scorer_passes_check_config(monkeypatch):
  monkeypatch.setattr(control_tokens, 'SCORERS', dict(control_tokens.SCORERS))
  control_tokens.register_scorer('length', lambda text: [float(len(line)) for line in
                                                         text.splitlines(keepends=True)])
  config = base.get_config()
  config.objective.control.scorer = 'length'
  control_tokens.check_config(config)
  with pytest.raises(ValueError, match='already registered'):
    control_tokens.register_scorer('length', len)


def test_check_config_names_the_bad_key():
  config = base.get_config()
  control_tokens.check_config(config)
  config.objective.control.scorer = 'toxicity'
  with pytest.raises(errors.UserError, match=r"objective\.control\.scorer='toxicity'.*\['pep8'\]"):
    control_tokens.check_config(config)
  config.objective.control.scorer = 'pep8'
  config.objective.control.drop_fraction = 1.5
  with pytest.raises(errors.UserError, match=r'objective\.control\.drop_fraction=1\.5'):
    control_tokens.check_config(config)
