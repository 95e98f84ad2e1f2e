"""Vocabularies by name, the reserved control and sentinel tokens, and SentencePiece training.

Config key `data.vocabulary` names a vocabulary: 'byte' (UTF-8 bytes, `seqio.ByteVocabulary`) or
'spm:PATH' (a SentencePiece model, local or gs://, e.g. written by `python -m launch.tokenizer`).
`data.extra_ids` adds that many ids above the vocabulary's own. Every vocabulary reserves:

    0 = PAD, 1 = EOS, 2 = UNK (no BOS), as seqio and T5 expect;
    base .. vocab_size - 1: the extra ids, where base = vocab_size - extra_ids.

The reserved-token scheme. Of the extra ids,

- the lowest `len(CONTROL_TOKENS)` are the control tokens, in `CONTROL_TOKENS` order:
  control token i is id `base + i`. They are UL2's mode tokens [NLU], [NLG], [S2S] (Tay et al.
  2022, "UL2: Unifying Language Learning Paradigms", arXiv 2205.05131), Masked Thought's [MASK]
  (Chen et al. 2024, arXiv 2403.02178) and the conditional-training tokens <|aligned|> and
  <|misaligned|> (Korbak et al. 2023, "Pretraining Language Models with Human Preferences", arXiv
  2302.08582);
- the others are the sentinels of span corruption, counted down from the top exactly as T5 and
  seqio number them: sentinel k is `<extra_id_k>` = id `vocab_size - 1 - k`, for
  k < `num_sentinels` = extra_ids - len(CONTROL_TOKENS).

So the ids of the byte vocabulary (256 byte tokens at 3..258) or of the SentencePiece model are
never a control token or a sentinel; sentinels keep T5's numbering (`<extra_id_0>` first), and a
control token appended to `CONTROL_TOKENS` later leaves every existing control and sentinel id where
it was (one sentinel fewer). A vocabulary with fewer extra ids than an objective needs fails with a
UserError naming `data.extra_ids`. (seqio encodes the literal text '<extra_id_N>' in a SentencePiece
vocabulary as that extra id, as T5 does; the byte vocabulary never does.)

`train_sentencepiece` trains a lossless model: no text normalization, whitespace kept, no dummy
prefix and byte fallback, so decode(encode(text)) == text and the `token_bytes` of a text's tokens
add up to its UTF-8 length, which makes bits per byte exact.
"""

import io
import os
from collections.abc import Iterable, Iterator

import numpy as np
import seqio
import sentencepiece as spm
import tensorflow as tf
from google.protobuf import message

from research import errors

CONTROL_TOKENS = ('[NLU]', '[NLG]', '[S2S]', '[MASK]', '<|aligned|>', '<|misaligned|>')
SPM_PREFIX = 'spm:'
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
MODEL_TYPES = ('unigram', 'bpe', 'char', 'word')

_WORD_BOUNDARY = '\u2581'  # '▁', SentencePiece's marker for a space
_MAX_SENTENCE_BYTES = 4096  # SentencePiece skips training sentences over 4192 bytes
_TRAINER_SEED = 0


def _check_extra_ids(extra_ids: int) -> None:
  if isinstance(extra_ids, bool) or not isinstance(extra_ids, int) or extra_ids < 0:
    raise errors.UserError(f'data.extra_ids={extra_ids!r} must be a non-negative integer.')


def _sentencepiece_vocabulary(path: str, extra_ids: int) -> seqio.SentencePieceVocabulary:
  """The SentencePiece vocabulary of model file `path`, loaded now so a bad file fails here."""
  if not tf.io.gfile.exists(path):
    raise errors.UserError(f'data.vocabulary={SPM_PREFIX}{path}: no SentencePiece model at {path}; '
                           'give the path of a .model file (train one with python -m '
                           'launch.tokenizer).')
  vocabulary = seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)
  try:
    tokenizer = vocabulary.tokenizer
  except message.DecodeError as e:
    raise errors.UserError(f'data.vocabulary={SPM_PREFIX}{path}: {path} is not a SentencePiece '
                           'model file.') from e
  if (tokenizer.pad_id(), tokenizer.eos_id()) != (PAD_ID, EOS_ID):
    raise errors.UserError(
        f'data.vocabulary={SPM_PREFIX}{path}: the model has pad_id={tokenizer.pad_id()}, '
        f'eos_id={tokenizer.eos_id()}; seqio needs pad_id={PAD_ID}, eos_id={EOS_ID} (models from '
        'python -m launch.tokenizer have them).')
  return vocabulary


def make_vocabulary(name: str, extra_ids: int = 0) -> seqio.Vocabulary:
  """The vocabulary `name` (config `data.vocabulary`) with `extra_ids` (`data.extra_ids`)."""
  _check_extra_ids(extra_ids)
  if name == 'byte':
    return seqio.ByteVocabulary(extra_ids=extra_ids)
  if isinstance(name, str) and name.startswith(SPM_PREFIX) and len(name) > len(SPM_PREFIX):
    return _sentencepiece_vocabulary(name[len(SPM_PREFIX):], extra_ids)
  raise errors.UserError(f"data.vocabulary={name!r} is not a vocabulary; use 'byte' or "
                         f"'{SPM_PREFIX}PATH' (PATH: a SentencePiece .model file).")


def _base_size(vocabulary: seqio.Vocabulary) -> int:
  """The number of ids below the extra ids."""
  return vocabulary.vocab_size - vocabulary.extra_ids


def _require_extra_ids(vocabulary: seqio.Vocabulary, needed: int, purpose: str) -> None:
  if vocabulary.extra_ids < needed:
    raise errors.UserError(f'data.extra_ids={vocabulary.extra_ids} is too few for {purpose}; set '
                           f'data.extra_ids to at least {needed} (the first '
                           f'{len(CONTROL_TOKENS)} are the control tokens {list(CONTROL_TOKENS)}, '
                           'the rest sentinels).')


def control_token_id(vocabulary: seqio.Vocabulary, name: str) -> int:
  """The id of control token `name` (one of `CONTROL_TOKENS`): base + its index."""
  if name not in CONTROL_TOKENS:
    raise errors.UserError(f'{name!r} is not a control token; use one of {list(CONTROL_TOKENS)}.')
  _require_extra_ids(vocabulary, len(CONTROL_TOKENS), f'the control token {name}')
  return _base_size(vocabulary) + CONTROL_TOKENS.index(name)


def num_sentinels(vocabulary: seqio.Vocabulary) -> int:
  """How many sentinels denoising objectives may use: the extra ids the control tokens leave."""
  return max(0, vocabulary.extra_ids - len(CONTROL_TOKENS))


def sentinel_id(vocabulary: seqio.Vocabulary, k: int) -> int:
  """The id of sentinel k (k >= 0), `<extra_id_k>` = vocab_size - 1 - k."""
  if k < 0:
    raise ValueError(f'Sentinel index {k} is negative.')
  _require_extra_ids(vocabulary, len(CONTROL_TOKENS) + k + 1, f'sentinel {k}')
  return vocabulary.vocab_size - 1 - k


def _sentencepiece_piece_bytes(tokenizer: spm.SentencePieceProcessor, piece_id: int) -> int:
  """The UTF-8 bytes piece `piece_id` stands for ('▁' is one space; a byte piece is 1 byte)."""
  special = (tokenizer.is_control, tokenizer.is_unknown, tokenizer.is_unused)
  if any(is_special(piece_id) for is_special in special):
    return 0
  if tokenizer.is_byte(piece_id):
    return 1
  piece = tokenizer.id_to_piece(piece_id).replace(_WORD_BOUNDARY, ' ')
  return len(piece.encode('utf-8'))


def token_bytes(vocabulary: seqio.Vocabulary) -> np.ndarray:
  """int32 [vocab_size]: the number of UTF-8 bytes each token id stands for.

  Byte vocabulary: 1 per byte token, 0 for PAD, EOS, UNK and the extra ids. SentencePiece: the
  UTF-8 length of the piece with '▁' counted as one space byte, 1 for a byte-fallback piece
  <0x..>, 0 for control, unknown and unused pieces and the extra ids. For models that normalize
  text or add a dummy '▁' prefix (e.g. T5's), the lengths are those of the normalized text and
  each encoded text counts one byte more; models from `train_sentencepiece` do neither.
  """
  table = np.zeros(vocabulary.vocab_size, np.int32)
  if isinstance(vocabulary, seqio.ByteVocabulary):
    table[UNK_ID + 1:UNK_ID + 1 + 256] = 1
  elif isinstance(vocabulary, seqio.SentencePieceVocabulary):
    tokenizer = vocabulary.tokenizer
    table[:_base_size(vocabulary)] = [_sentencepiece_piece_bytes(tokenizer, i)
                                      for i in range(_base_size(vocabulary))]
  else:
    raise TypeError(f'No token byte table for {type(vocabulary).__name__}.')
  return table


def _short_lines(text: str, max_chars: int) -> Iterator[str]:
  """The lines of `text`, line ends kept, each cut into pieces of at most `max_chars`."""
  for line in text.splitlines(keepends=True):
    for start in range(0, len(line), max_chars):
      yield line[start:start + max_chars]


def training_sentences(texts: Iterable[str], max_bytes: int) -> Iterator[str]:
  """Each text cut at line ends into runs of whole lines of at most `max_bytes` UTF-8 bytes.

  A line longer than that is cut into pieces of `max_bytes // 4` characters (a character takes at
  most 4 bytes). The pieces of a text concatenate back to the text.
  """
  for text in texts:
    chunk, size = [], 0
    for line in _short_lines(text, max_bytes // 4):
      line_bytes = len(line.encode('utf-8'))
      if chunk and size + line_bytes > max_bytes:
        yield ''.join(chunk)
        chunk, size = [], 0
      chunk.append(line)
      size += line_bytes
    if chunk:
      yield ''.join(chunk)


def _write_atomically(path: str, data: bytes) -> None:
  """Writes `data` to a temporary sibling of `path` (local or gs://), then renames it into place."""
  directory = os.path.dirname(path)
  tmp_path = f'{path}.tmp-{os.getpid()}'
  try:
    if directory:
      tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(tmp_path, 'wb') as f:
      f.write(data)
    tf.io.gfile.rename(tmp_path, path, overwrite=True)
  except tf.errors.OpError as e:
    if tf.io.gfile.exists(tmp_path):
      tf.io.gfile.remove(tmp_path)
    raise errors.UserError(f'Cannot write {path} ({e.message}); give a model prefix in a writable '
                           'directory.') from e


class _CountedSentences:
  """Iterates `sentences`, counting them and keeping the exception that ended them, if any.

  SentencePiece turns an exception inside its sentence iterator into a RuntimeError; this keeps the
  original (e.g. a UserError from a document source) so that it can be re-raised as it was.
  """

  def __init__(self, sentences: Iterable[str]):
    self._sentences = sentences
    self.count = 0
    self.error: Exception | None = None

  def __iter__(self) -> Iterator[str]:
    try:
      for sentence in self._sentences:
        self.count += 1
        yield sentence
    except Exception as e:
      self.error = e
      raise


def train_sentencepiece(texts: Iterable[str], vocab_size: int, model_prefix: str,
                        model_type: str = 'unigram', character_coverage: float = 1.0,
                        byte_fallback: bool = True, max_sentences: int = 1_000_000) -> str:
  """Trains a SentencePiece model on `texts` and writes `<model_prefix>.model`; returns that path.

  Ids: PAD 0, EOS 1, UNK 2, no BOS (seqio/T5). The texts are cut at line ends into training
  sentences of at most 4 KiB; when there are more than `max_sentences`, the trainer keeps a
  seeded uniform sample of that many. Training is lossless (see the module docstring); with
  `byte_fallback` the vocabulary holds the 256 byte pieces, so `vocab_size` must exceed 259.
  """
  if model_type not in MODEL_TYPES:
    raise errors.UserError(f'model_type={model_type!r} is not a SentencePiece model type; use one '
                           f'of {list(MODEL_TYPES)}.')
  sentences = _CountedSentences(training_sentences(texts, _MAX_SENTENCE_BYTES))
  spm.set_random_generator_seed(_TRAINER_SEED)
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_writer=model, vocab_size=vocab_size,
        model_type=model_type, character_coverage=character_coverage,
        byte_fallback=byte_fallback, input_sentence_size=max_sentences,
        shuffle_input_sentence=True, pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        normalization_rule_name='identity', remove_extra_whitespaces=False,
        add_dummy_prefix=False, allow_whitespace_only_pieces=True, minloglevel=2)
  except RuntimeError as e:
    if sentences.error is not None:
      raise sentences.error from None
    if not sentences.count:
      raise errors.UserError('No text to train SentencePiece on: every text is empty.') from e
    raise errors.UserError(f'SentencePiece training failed with vocab_size={vocab_size}, '
                           f'model_type={model_type!r}: {e}') from e
  path = f'{model_prefix}.model'
  _write_atomically(path, model.getvalue())
  return path
