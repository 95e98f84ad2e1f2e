"""Vocabularies by name, reserved control and sentinel ids, token bytes, SentencePiece training."""

import json
import os
import random
import re

import numpy as np
import pytest
import seqio
import sentencepiece as spm
import tokenizers

from launch import tokenizer
from research import errors
from research.data import tasks
from research.data import vocabularies
from tests import commands

_WORDS = ('the river runs under a quiet bridge while naïve café owners count über large numbers '
          'of 東京 visitors each morning before seven tired bakers open their small wooden '
          'shops near ancient stone walls').split()
# Text the model never saw in training: byte fallback, runs of spaces, tabs and newlines.
_UNSEEN = 'zebra ✓ 🙂  two  spaces\tand a tab\n\n    indented\n'


def _sentences(count: int, seed: int) -> list[str]:
  rng = random.Random(seed)
  return [' '.join(rng.choice(_WORDS) for _ in range(rng.randint(3, 15))) +
          ('\n    indented line\n' if i % 4 == 0 else '') for i in range(count)]


@pytest.fixture(scope='module')
def spm_path(tmp_path_factory) -> str:
  """A 320-piece unigram model with byte fallback, trained on 400 generated sentences."""
  prefix = str(tmp_path_factory.mktemp('spm') / 'tiny')
  return vocabularies.train_sentencepiece(_sentences(400, seed=0), 320, prefix)


def test_byte_vocabulary_by_name():
  vocabulary = vocabularies.make_vocabulary('byte', extra_ids=4)
  assert isinstance(vocabulary, seqio.ByteVocabulary)
  assert vocabulary.vocab_size == 3 + 256 + 4


@pytest.mark.parametrize('name', ['spm', 'spm:', 'bytes', 'sentencepiece:/x.model'])
def test_unknown_vocabulary_names_config_key_and_forms(name):
  with pytest.raises(errors.UserError,
                     match=rf"data\.vocabulary={re.escape(repr(name))} is not a vocabulary; use "
                           r"'byte', 'spm:PATH' .* or 'hf:PATH'"):
    vocabularies.make_vocabulary(name)


def test_missing_or_corrupt_model_file_names_the_path(tmp_path):
  missing = tmp_path / 'absent.model'
  with pytest.raises(errors.UserError, match=rf'no SentencePiece model at {re.escape(str(missing))}'):
    vocabularies.make_vocabulary(f'spm:{missing}')
  corrupt = tmp_path / 'corrupt.model'
  corrupt.write_bytes(b'not a model')
  with pytest.raises(errors.UserError, match=rf'{re.escape(str(corrupt))} is not a SentencePiece'):
    vocabularies.make_vocabulary(f'spm:{corrupt}')


def test_model_with_other_special_ids_is_refused(tmp_path):
  prefix = str(tmp_path / 'default_ids')  # SentencePiece's defaults: unk 0, bos 1, eos 2, no pad
  spm.SentencePieceTrainer.train(sentence_iterator=iter(_sentences(100, seed=1)),
                                 model_prefix=prefix, vocab_size=50, minloglevel=2)
  with pytest.raises(errors.UserError, match=r'pad_id=-1, eos_id=2; seqio needs pad_id=0, eos_id=1'):
    vocabularies.make_vocabulary(f'spm:{prefix}.model')


def test_negative_extra_ids_names_config_key():
  with pytest.raises(errors.UserError, match=r'data\.extra_ids=-1'):
    vocabularies.make_vocabulary('byte', extra_ids=-1)


def test_byte_control_and_sentinel_ids_are_distinct_in_range_and_not_bytes():
  vocabulary = vocabularies.make_vocabulary('byte', extra_ids=13)
  controls = [vocabularies.control_token_id(vocabulary, n) for n in vocabularies.CONTROL_TOKENS]
  assert controls == list(range(259, 268))
  assert vocabularies.num_sentinels(vocabulary) == 4
  sentinels = [vocabularies.sentinel_id(vocabulary, k) for k in range(4)]
  assert sentinels == [271, 270, 269, 268]  # <extra_id_0> is the top id, as in T5
  reserved = controls + sentinels
  assert len(set(reserved)) == len(reserved) == vocabulary.extra_ids
  byte_ids = set(range(3, 259))  # bytes 0..255
  assert set(vocabulary.encode('naïve → 東京 🙂\x00\x7f')) <= byte_ids
  assert not byte_ids & set(reserved) and max(reserved) < vocabulary.vocab_size


def test_control_ids_stay_put_when_extra_ids_grow():
  small, large = (vocabularies.make_vocabulary('byte', extra_ids=n) for n in (6, 100))
  for name in vocabularies.CONTROL_TOKENS[:6]:  # a vocabulary of 6 extra ids has the first 6
    assert vocabularies.control_token_id(small, name) == vocabularies.control_token_id(large, name)
  assert vocabularies.num_sentinels(small) == 0
  assert vocabularies.sentinel_id(large, 0) == large.vocab_size - 1


def test_too_few_extra_ids_names_config_key():
  vocabulary = vocabularies.make_vocabulary('byte', extra_ids=8)
  with pytest.raises(errors.UserError, match=r'data\.extra_ids=8 is too few .* at least 12'):
    vocabularies.sentinel_id(vocabulary, 2)
  with pytest.raises(errors.UserError, match=r'data\.extra_ids=0 is too few .* at least 1'):
    vocabularies.control_token_id(vocabularies.make_vocabulary('byte'), '[NLU]')
  with pytest.raises(errors.UserError, match=r'data\.extra_ids=8 is too few .* <MID>.* at least 9'):
    vocabularies.control_token_id(vocabulary, '<MID>')
  with pytest.raises(errors.UserError, match=r"'\[XYZ\]' is not a control token"):
    vocabularies.control_token_id(vocabulary, '[XYZ]')


def test_byte_token_bytes_counts_utf8_bytes():
  vocabulary = vocabularies.make_vocabulary('byte', extra_ids=5)
  table = vocabularies.token_bytes(vocabulary)
  assert table.dtype == np.int32 and table.shape == (264,)
  assert table[:3].tolist() == [0, 0, 0] and table[3:259].tolist() == [1] * 256
  assert table[259:].tolist() == [0] * 5
  text = 'naïve → bytes 🙂'
  assert table[vocabulary.encode(text)].sum() == len(text.encode('utf-8'))


def test_sentencepiece_model_has_t5_special_ids_and_no_bos(spm_path):
  vocabulary = vocabularies.make_vocabulary(f'spm:{spm_path}')
  tokenizer = vocabulary.tokenizer
  assert (tokenizer.pad_id(), tokenizer.eos_id(), tokenizer.unk_id(), tokenizer.bos_id()) == (
      0, 1, 2, -1)
  assert vocabulary.vocab_size == 320


def test_sentencepiece_round_trip_is_lossless(spm_path):
  vocabulary = vocabularies.make_vocabulary(f'spm:{spm_path}', extra_ids=8)
  for text in _sentences(20, seed=5) + [_UNSEEN]:
    ids = vocabulary.encode(text)
    assert vocabulary.decode(ids) == text
    assert max(ids) < 320  # never an extra id
  assert len(vocabulary.encode(' '.join(_WORDS))) < len(' '.join(_WORDS)) / 2  # words merged


def test_sentencepiece_token_bytes_sum_to_utf8_length(spm_path):
  vocabulary = vocabularies.make_vocabulary(f'spm:{spm_path}', extra_ids=8)
  table = vocabularies.token_bytes(vocabulary)
  assert table.shape == (328,) and table[:3].tolist() == [0, 0, 0]
  assert table[320:].tolist() == [0] * 8
  tokenizer = vocabulary.tokenizer
  byte_pieces = [i for i in range(320) if tokenizer.is_byte(i)]
  assert len(byte_pieces) == 256 and set(table[byte_pieces]) == {1}
  for text in _sentences(20, seed=6) + [_UNSEEN]:
    assert table[vocabulary.encode(text)].sum() == len(text.encode('utf-8'))


def test_sentencepiece_control_and_sentinel_ids(spm_path):
  vocabulary = vocabularies.make_vocabulary(f'spm:{spm_path}', extra_ids=11)
  assert vocabularies.control_token_id(vocabulary, '[S2S]') == 322
  assert vocabularies.num_sentinels(vocabulary) == 2
  assert [vocabularies.sentinel_id(vocabulary, k) for k in range(2)] == [330, 329]
  assert vocabulary.tokenizer.id_to_piece(330) == '▁<extra_id_0>'  # seqio's own sentinel 0


def test_start_id_is_the_bos_of_a_sentencepiece_model_that_has_one(tmp_path, spm_path):
  prefix = str(tmp_path / 'with_bos')
  spm.SentencePieceTrainer.train(sentence_iterator=iter(_sentences(100, seed=2)),
                                 model_prefix=prefix, vocab_size=60, pad_id=0, eos_id=1, unk_id=2,
                                 bos_id=3, minloglevel=2)
  assert vocabularies.start_id(vocabularies.make_vocabulary(f'spm:{prefix}.model')) == 3
  assert vocabularies.data_start_id({'vocabulary': f'spm:{prefix}.model'}) == 3
  # No BOS: the pad id 0, as runs read before data.start_id (byte, launch.tokenizer's models).
  assert vocabularies.start_id(vocabularies.make_vocabulary(f'spm:{spm_path}')) == 0
  assert vocabularies.start_id(vocabularies.make_vocabulary('byte')) == 0


def llama_like_tokenizer(directory, template: bool = True) -> str:
  """DIRECTORY/tokenizer.json (returned): whitespace-separated words 'a' to 'j' (ids 3 to 12) and
  Llama's special ids, <unk> 0, <s> 1, </s> 2; with `template` its post-processor puts <s> first,
  as Llama's does (no tokenizer_config.json is written)."""
  words = {'<unk>': 0, '<s>': 1, '</s>': 2, **{w: i for i, w in enumerate('abcdefghij', 3)}}
  tokenizer = tokenizers.Tokenizer(tokenizers.models.WordLevel(words, unk_token='<unk>'))
  tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  if template:
    tokenizer.post_processor = tokenizers.processors.TemplateProcessing(
        single='<s> $A', special_tokens=[('<s>', 1)])
  os.makedirs(directory, exist_ok=True)
  tokenizer.save(os.path.join(directory, 'tokenizer.json'))
  return os.path.join(directory, 'tokenizer.json')


def test_start_id_of_a_hugging_face_tokenizer_is_its_bos(tmp_path):
  plain = vocabularies.make_vocabulary(f'hf:{llama_like_tokenizer(tmp_path / "plain", False)}')
  templated = vocabularies.make_vocabulary(f'hf:{llama_like_tokenizer(tmp_path / "template")}')
  assert list(templated.encode('b a j')) == [4, 3, 12]  # encode adds no BOS
  assert (plain.bos_id, vocabularies.start_id(plain)) == (None, 0)
  assert (templated.bos_id, vocabularies.start_id(templated)) == (1, 1)
  # tokenizer_config.json's bos_token names it first.
  (tmp_path / 'plain' / 'tokenizer_config.json').write_text(
      json.dumps({'bos_token': {'content': '<s>'}, 'eos_token': '</s>'}))
  configured = vocabularies.make_vocabulary(f'hf:{tmp_path}/plain/tokenizer.json', extra_ids=2)
  assert (configured.bos_id, configured.eos_id, vocabularies.start_id(configured)) == (1, 2, 1)
  # A recorded data.start_id wins; it must be -1 or an id of the vocabulary.
  assert vocabularies.start_id(configured, 4) == 4
  for bad in (15, -2, 1.0):
    with pytest.raises(errors.UserError, match=rf'^data\.start_id={bad!r} must be -1 .* below '
                                               r"the vocabulary's 15\.$"):
      vocabularies.start_id(configured, bad)


def test_a_relative_vocabulary_path_is_read_from_the_run_directory():
  assert vocabularies.vocabulary_in('hf:tokenizer.json', '/ckpt') == 'hf:/ckpt/tokenizer.json'
  assert vocabularies.vocabulary_in('spm:tok/a.model', 'gs://b/run') == 'spm:gs://b/run/tok/a.model'
  for name in ('byte', 'hf:/abs/tokenizer.json', 'spm:gs://b/a.model'):
    assert vocabularies.vocabulary_in(name, '/ckpt') == name


def test_training_sentences_cut_at_line_ends_and_concatenate_back():
  text = 'short line\n' * 50 + 'é' * 700 + '\nlast'
  pieces = list(vocabularies.training_sentences([text, ''], max_bytes=200))
  assert ''.join(pieces) == text
  assert all(len(p.encode('utf-8')) <= 200 for p in pieces)
  assert pieces[0] == 'short line\n' * 18  # 18 lines of 11 bytes fit in 200


def test_training_rewrites_the_model_atomically_and_deterministically(tmp_path, spm_path):
  prefix = str(tmp_path / 'again')
  assert vocabularies.train_sentencepiece(_sentences(400, seed=0), 320, prefix) == f'{prefix}.model'
  with open(spm_path, 'rb') as a, open(f'{prefix}.model', 'rb') as b:
    assert a.read() == b.read()
  vocabularies.train_sentencepiece(_sentences(400, seed=1), 300, prefix)  # overwrites in place
  assert os.listdir(tmp_path) == ['again.model']
  assert vocabularies.make_vocabulary(f'spm:{prefix}.model').vocab_size == 300


def test_training_errors_are_user_errors(tmp_path):
  prefix = str(tmp_path / 'm')
  with pytest.raises(errors.UserError, match=r'vocab_size=5000,.*Vocabulary size too high'):
    vocabularies.train_sentencepiece(_sentences(50, seed=0), 5000, prefix)
  with pytest.raises(errors.UserError, match=r'No text to train SentencePiece on'):
    vocabularies.train_sentencepiece(['', ''], 300, prefix)
  with pytest.raises(errors.UserError, match=r"model_type='wordpiece'"):
    vocabularies.train_sentencepiece(['a'], 300, prefix, model_type='wordpiece')

  def failing_texts():
    yield 'one text'
    raise errors.UserError('data.tasks.web.pattern is broken')

  with pytest.raises(errors.UserError, match=r'^data\.tasks\.web\.pattern is broken$'):
    vocabularies.train_sentencepiece(failing_texts(), 300, prefix)
  assert not os.listdir(tmp_path)


def test_tokenizer_command_trains_on_a_task(tmp_path):
  out = str(tmp_path / 'prose')
  printed = commands.run_main(tokenizer.main, task='stdlib_prose', vocab_size=400, out=out,
                             max_documents=50)
  assert f'Wrote {out}.model' in printed
  assert f'--config.data.vocabulary=spm:{out}.model' in printed
  vocabulary = vocabularies.make_vocabulary(f'spm:{out}.model')
  assert vocabulary.vocab_size == 400
  _, text = tasks.split_documents('stdlib_prose', 'train')[0]
  assert vocabulary.decode(vocabulary.encode(text)) == text


@pytest.mark.parametrize('overrides, message', [
    ({'task': 'stdlib_pros'}, r"error: --task=stdlib_pros is not a registered task; use one of "
                              r"\[.*'stdlib_prose'.*\]"),
    ({'vocab_size': 0}, r'error: --vocab_size=0 must be positive'),
    ({'max_documents': 0}, r'error: --max_documents=0 must be positive'),
    ({'vocab_size': 100_000}, r'error: SentencePiece training failed with vocab_size=100000'),
])
def test_tokenizer_command_errors_name_the_flag(tmp_path, overrides, message):
  values = {'task': 'stdlib_prose', 'vocab_size': 400, 'out': str(tmp_path / 'm'),
            'max_documents': 5, **overrides}
  with pytest.raises(SystemExit, match=message):
    commands.run_main(tokenizer.main, **values)
  assert not os.listdir(tmp_path)
