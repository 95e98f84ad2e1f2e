"""MeCo: source names, metadata tokens without loss, and the cooldown boundary."""

import ml_collections
import numpy as np
import pytest

from experiments import base
from research import errors
from research.objectives import metadata


@pytest.mark.parametrize('task, doc_id, doc_metadata, expected', [
    ('stdlib_code', 'json/decoder.py', {}, 'stdlib_code/json'),
    ('stdlib_code', 'os.py', {}, 'stdlib_code/os'),
    ('stdlib_prose', 'topic/assert', {}, 'stdlib_prose/topic'),
    ('stdlib_prose', 'docstrings/json/decoder.py', {}, 'stdlib_prose/json'),
    ('sums', 'arithmetic/train/7', {'skill': 'addition'}, 'sums'),
    ('c4', 'c4/12', {'url': 'https://en.wikipedia.org/wiki/Python'}, 'en.wikipedia.org'),
    ('c4', 'c4/13', {'url': 'en.wikipedia.org/wiki/Python'}, 'en.wikipedia.org'),  # no scheme
    ('c4', 'c4/14', {'url': 'http://www.example.com'}, 'www.example.com'),
    ('c4', 'c4/15', {'url': 'example.com:8080/a?b=c'}, 'example.com'),  # no scheme, a port
    ('c4', 'c4/16', {'url': 'HTTPS://user@News.Example.org:443/x'}, 'news.example.org'),
    ('c4', 'c4/17', {'url': '//cdn.example.net/lib.js'}, 'cdn.example.net'),
    ('c4', 'c4/18', {'url': 'https://[::1/x'}, 'c4'),  # no host to read: the task
])
def test_source_name(task, doc_id, doc_metadata, expected):
  assert metadata.source_name(task, doc_id, doc_metadata) == expected


def test_metadata_text_wraps_the_source():
  assert metadata.metadata_text('stdlib_code', 'json/decoder.py', {}, 'URL: ', '\n\n') == (
      'URL: stdlib_code/json\n\n')


def test_metadata_tokens_carry_no_loss_and_the_document_full_loss():
  document = np.array([10, 11, 12, 13, 1], np.int32)
  header = np.array([85, 82, 76, 58], np.int64)
  tokens, weights = metadata.with_metadata(document, header)
  np.testing.assert_array_equal(tokens, [85, 82, 76, 58, 10, 11, 12, 13, 1])
  assert tokens.dtype == np.int32 and weights.dtype == np.float32
  np.testing.assert_array_equal(weights, [0, 0, 0, 0, 1, 1, 1, 1, 1])


def test_cooldown_starts_exactly_at_the_boundary():
  # 1000 steps, last 10% without metadata: steps 0..899 conditioned, 900..999 cooldown.
  assert not metadata.in_cooldown(899, 1000, 0.1)
  assert metadata.in_cooldown(900, 1000, 0.1)
  assert metadata.in_cooldown(999, 1000, 0.1)
  # round((1 - 0.25) * 10) = 8 (7.5 rounds to even).
  assert [metadata.in_cooldown(s, 10, 0.25) for s in range(10)] == [False] * 8 + [True] * 2
  assert not any(metadata.in_cooldown(s, 100, 0.0) for s in range(100))


def test_check_config_accepts_the_defaults_and_names_bad_values():
  config = base.get_config()
  metadata.check_config(config)
  config.objective.meco.cooldown_fraction = 1.0
  with pytest.raises(errors.UserError, match=r'objective\.meco\.cooldown_fraction=1\.0'):
    metadata.check_config(config)
  config.objective.meco.cooldown_fraction = -0.1
  with pytest.raises(errors.UserError, match=r'objective\.meco\.cooldown_fraction=-0\.1'):
    metadata.check_config(config)
  loose = ml_collections.ConfigDict(
      {'objective': {'meco': {'cooldown_fraction': 0.1, 'prefix': 3, 'suffix': '\n\n'}}})
  with pytest.raises(errors.UserError, match=r'objective\.meco\.prefix=3'):
    metadata.check_config(loose)
