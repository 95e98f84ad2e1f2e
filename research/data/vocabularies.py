"""Vocabularies by name, the reserved control and sentinel tokens, and SentencePiece training.

Config key `data.vocabulary` names a vocabulary: 'byte' (UTF-8 bytes, `seqio.ByteVocabulary`),
'spm:PATH' (a SentencePiece model, local or gs://, e.g. written by `python -m launch.tokenizer`) or
'hf:PATH' (a Hugging Face `tokenizers` file, PATH/tokenizer.json, e.g. the one `python -m
launch.convert` copies from an imported checkpoint; `HuggingFaceVocabulary`).
`data.extra_ids` adds that many ids above the vocabulary's own. The byte and SentencePiece
vocabularies reserve:

    0 = PAD, 1 = EOS, 2 = UNK (no BOS), as seqio and T5 expect;
    base .. vocab_size - 1: the extra ids, where base = vocab_size - extra_ids.

A Hugging Face tokenizer keeps its own ids (a checkpoint's embedding rows follow them): EOS and UNK
are its own tokens, and id 0 is whatever token it has there (packed rows mark padding by segment
id 0, never by token id); the extra ids start above its last token, as for the others.

The start id (`start_id`) is what a decoder reads at the first position of every segment, in
training (research/objectives/causal_lm.py and the denoising layouts), scoring and generation: the
vocabulary's BOS where it has one (a Hugging Face tokenizer's bos_token, a SentencePiece model's
bos_id), else the pad id 0, which is what runs before `data.start_id` existed read (byte
vocabulary, models from `train_sentencepiece`). For an imported Llama id 0 is <unk>, and its
<s> is what it was trained to read first. Training records the start id in config.json
(`data.start_id`), so a checkpoint is generated from and scored with the one it was trained with.

The reserved-token scheme. Of the extra ids,

- the lowest `len(CONTROL_TOKENS)` are the control tokens, in `CONTROL_TOKENS` order:
  control token i is id `base + i`. They are UL2's mode tokens [NLU], [NLG], [S2S] (Tay et al.
  2022, "UL2: Unifying Language Learning Paradigms", arXiv 2205.05131), Masked Thought's [MASK]
  (Chen et al. 2024, arXiv 2403.02178), the conditional-training tokens <|aligned|> and
  <|misaligned|> (Korbak et al. 2023, "Pretraining Language Models with Human Preferences", arXiv
  2302.08582) and the fill-in-the-middle sentinels <PRE>, <SUF>, <MID> (Bavarian et al. 2022,
  "Efficient Training of Language Models to Fill in the Middle", arXiv 2207.14255). Control token
  i needs only i + 1 extra ids, so a vocabulary with fewer extra ids than control tokens still
  has the first ones;
- the others are the sentinels of span corruption, counted down from the top exactly as T5 and
  seqio number them: sentinel k is `<extra_id_k>` = id `vocab_size - 1 - k`, for
  k < `num_sentinels` = extra_ids - len(CONTROL_TOKENS).

So the ids of the byte vocabulary (256 byte tokens at 3..258) or of the SentencePiece model are
never a control token or a sentinel; sentinels keep T5's numbering (`<extra_id_0>` first), and a
control token appended to `CONTROL_TOKENS` later leaves every existing control and sentinel id where
it was (one sentinel fewer each). A vocabulary with fewer extra ids than an objective needs fails
with a UserError naming `data.extra_ids`. (seqio encodes the literal text '<extra_id_N>' in a
SentencePiece vocabulary as that extra id, as T5 does; the byte vocabulary never does.)

`train_sentencepiece` trains a lossless model: no text normalization, whitespace kept, no dummy
prefix and byte fallback, so decode(encode(text)) == text and the `token_bytes` of a text's tokens
add up to its UTF-8 length, which makes bits per byte exact.
"""

import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import seqio
import sentencepiece as spm
import tensorflow as tf
import tokenizers
from google.protobuf import message

from research import errors

CONTROL_TOKENS = ('[NLU]', '[NLG]', '[S2S]', '[MASK]', '<|aligned|>', '<|misaligned|>', '<PRE>',
                  '<SUF>', '<MID>')
SPM_PREFIX = 'spm:'
HF_PREFIX = 'hf:'
# End-of-sequence tokens by name, for a tokenizer.json without a tokenizer_config.json beside it.
HF_EOS_TOKENS = ('</s>', '<|endoftext|>', '<|end_of_text|>', '<eos>')
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


def _read_json(path: str):
  with tf.io.gfile.GFile(path, 'r') as f:
    return json.load(f)


def _token_content(token) -> str | None:
  """A special token as tokenizer_config.json writes it: a string or {'content': ...}."""
  return token.get('content') if isinstance(token, dict) else token


class HuggingFaceVocabulary(seqio.Vocabulary):
  """A Hugging Face `tokenizers` tokenizer (a tokenizer.json) as a seqio vocabulary; no download.

  Ids are the tokenizer's own. `encode` adds no special tokens (no BOS; seqio's tasks append EOS);
  `decode` stops at the first EOS and drops special tokens. The EOS token is the `eos_token` of a
  tokenizer_config.json (or special_tokens_map.json) beside the tokenizer.json, else the first of
  `HF_EOS_TOKENS` the tokenizer has; UNK is its model's unk_token, if any. BOS is their
  `bos_token`, else the special token the tokenizer.json's TemplateProcessing post-processor puts
  first (as Llama's adds <s>), else none.
  """

  def __init__(self, path: str, extra_ids: int = 0):
    name = f'data.vocabulary={HF_PREFIX}{path}'
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
      raise errors.UserError(f'{name}: no tokenizer file at {path}; give the path of a Hugging Face '
                             'tokenizer.json (python -m launch.convert copies it into the checkpoint).')
    with tf.io.gfile.GFile(path, 'r') as f:
      text = f.read()
    try:
      self._tokenizer = tokenizers.Tokenizer.from_str(text)
      self._spec = json.loads(text)
    except Exception as e:  # the tokenizers library raises a bare Exception on a bad file
      raise errors.UserError(f'{name}: {path} is not a Hugging Face tokenizer.json ({e}).') from e
    self._path = path
    self._base_size = self._tokenizer.get_vocab_size(with_added_tokens=True)
    self._eos = self._find_eos(name)
    self._bos = self._configured_token('bos_token')
    if self._bos is None:
      self._bos = self._template_first_token()
    unk = (self._spec.get('model') or {}).get('unk_token')
    self._unk = self._tokenizer.token_to_id(unk) if isinstance(unk, str) else None
    super().__init__(extra_ids=extra_ids)

  def _configured_token(self, key: str) -> int | None:
    """The id of special token `key` ('eos_token', 'bos_token') as the tokenizer_config.json or
    special_tokens_map.json beside the tokenizer.json names it, if it does and the token exists."""
    directory = os.path.dirname(self._path)
    for config_name in ('tokenizer_config.json', 'special_tokens_map.json'):
      config_path = os.path.join(directory, config_name)
      if tf.io.gfile.exists(config_path):
        token = _token_content(_read_json(config_path).get(key))
        if isinstance(token, str) and self._tokenizer.token_to_id(token) is not None:
          return self._tokenizer.token_to_id(token)
    return None

  def _template_first_token(self) -> int | None:
    """The id of the special token the post-processor's single-sequence template starts with."""
    processor = self._spec.get('post_processor') or {}
    for part in [processor] + list(processor.get('processors') or []):
      single = part.get('single') if part.get('type') == 'TemplateProcessing' else None
      if single and 'SpecialToken' in single[0]:
        return self._tokenizer.token_to_id(single[0]['SpecialToken']['id'])
    return None

  def _find_eos(self, name: str) -> int:
    eos = self._configured_token('eos_token')
    if eos is not None:
      return eos
    for token in HF_EOS_TOKENS:
      if self._tokenizer.token_to_id(token) is not None:
        return self._tokenizer.token_to_id(token)
    raise errors.UserError(
        f'{name}: the tokenizer has no end-of-sequence token (none of {list(HF_EOS_TOKENS)}, and no '
        'tokenizer_config.json with eos_token beside it); put a tokenizer_config.json with '
        '{"eos_token": "..."} next to the tokenizer.json.')

  @property
  def tokenizer(self) -> tokenizers.Tokenizer:
    return self._tokenizer

  @property
  def spec(self) -> dict:
    """The parsed tokenizer.json."""
    return self._spec

  @property
  def eos_id(self) -> int:
    return self._eos

  @property
  def unk_id(self) -> int | None:
    return self._unk

  @property
  def bos_id(self) -> int | None:
    """The beginning-of-sequence token's id (see the class docstring), None if there is none."""
    return self._bos

  @property
  def _base_vocab_size(self) -> int:
    return self._base_size

  def _encode(self, s: str) -> Sequence[int]:
    return self._tokenizer.encode(s, add_special_tokens=False).ids

  def _decode(self, ids) -> str:
    ids = [int(i) for i in ids]
    if self._eos in ids:
      ids = ids[:ids.index(self._eos)]
    return self._tokenizer.decode([i for i in ids if 0 <= i < self._base_size],
                                  skip_special_tokens=True)

  def _encode_tf(self, s: tf.Tensor) -> tf.Tensor:
    ids = tf.py_function(lambda t: np.asarray(self._encode(t.numpy().decode('utf-8')), np.int32),
                         [s], tf.int32)
    ids.set_shape([None])
    return ids

  def _decode_tf(self, ids: tf.Tensor) -> tf.Tensor:
    text = tf.py_function(lambda t: self._decode(t.numpy().tolist()).encode('utf-8'), [ids],
                          tf.string)
    text.set_shape([])
    return text

  def __eq__(self, other) -> bool:
    return (isinstance(other, HuggingFaceVocabulary) and self._path == other._path
            and self.extra_ids == other.extra_ids)

  def __hash__(self) -> int:
    return hash((self._path, self.extra_ids))


def make_vocabulary(name: str, extra_ids: int = 0) -> seqio.Vocabulary:
  """The vocabulary `name` (config `data.vocabulary`) with `extra_ids` (`data.extra_ids`)."""
  _check_extra_ids(extra_ids)
  if name == 'byte':
    return seqio.ByteVocabulary(extra_ids=extra_ids)
  if isinstance(name, str) and name.startswith(SPM_PREFIX) and len(name) > len(SPM_PREFIX):
    return _sentencepiece_vocabulary(name[len(SPM_PREFIX):], extra_ids)
  if isinstance(name, str) and name.startswith(HF_PREFIX) and len(name) > len(HF_PREFIX):
    return HuggingFaceVocabulary(name[len(HF_PREFIX):], extra_ids)
  raise errors.UserError(f"data.vocabulary={name!r} is not a vocabulary; use 'byte', "
                         f"'{SPM_PREFIX}PATH' (PATH: a SentencePiece .model file) or "
                         f"'{HF_PREFIX}PATH' (PATH: a Hugging Face tokenizer.json).")


def vocabulary_in(name: str, directory: str) -> str:
  """`name` (data.vocabulary of the config.json in `directory`) with a relative file path read
  from `directory`: launch.convert names a checkpoint's own tokenizer 'hf:tokenizer.json', so the
  checkpoint keeps it wherever the directory moves. Other names are returned as they are."""
  for prefix in (SPM_PREFIX, HF_PREFIX):
    path = name[len(prefix):] if isinstance(name, str) and name.startswith(prefix) else ''
    if path and '://' not in path and not os.path.isabs(path):
      return prefix + os.path.join(directory, path)
  return name


def start_id(vocabulary: seqio.Vocabulary, configured: int = -1) -> int:
  """The id a decoder reads at the start of every segment (see the module docstring):
  `configured` (config data.start_id) unless it is -1, else the vocabulary's BOS where it has one,
  else PAD_ID."""
  if isinstance(configured, bool) or not isinstance(configured, int) or not (
      -1 <= configured < vocabulary.vocab_size):
    raise errors.UserError(f"data.start_id={configured!r} must be -1 (the vocabulary's BOS, else "
                           f"{PAD_ID}) or a token id below the vocabulary's "
                           f'{vocabulary.vocab_size}.')
  if configured >= 0:
    return configured
  if isinstance(vocabulary, HuggingFaceVocabulary):
    bos = vocabulary.bos_id
  elif isinstance(vocabulary, seqio.SentencePieceVocabulary):
    bos = vocabulary.tokenizer.bos_id()
  else:
    bos = None
  return PAD_ID if bos is None or bos < 0 else int(bos)


def data_start_id(data_config) -> int:
  """`start_id` of a run's `config.data` (or the dict of a config.json's 'data', where one written
  before data.start_id existed has none: -1)."""
  vocabulary = make_vocabulary(data_config.get('vocabulary', 'byte'),
                               data_config.get('extra_ids', 0))
  return start_id(vocabulary, data_config.get('start_id', -1))


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
  _require_extra_ids(vocabulary, CONTROL_TOKENS.index(name) + 1, f'the control token {name}')
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


_BYTE_FALLBACK_PIECE = re.compile(r'<0x[0-9A-Fa-f]{2}>')


def _components(spec: dict | None) -> list[dict]:
  """A tokenizer.json component (decoder, pre_tokenizer, ...) and, for a Sequence, its parts."""
  if not spec:
    return []
  parts = spec.get('decoders') or spec.get('pretokenizers') or []
  return [spec] + [p for part in parts for p in _components(part)]


def _huggingface_token_bytes(vocabulary: HuggingFaceVocabulary) -> list[int]:
  """The UTF-8 bytes of each of the tokenizer's tokens (see `token_bytes`)."""
  spec, tokenizer = vocabulary.spec, vocabulary.tokenizer
  kinds = {c.get('type') for key in ('decoder', 'pre_tokenizer') for c in _components(spec.get(key))}
  byte_level = 'ByteLevel' in kinds
  byte_fallback = 'ByteFallback' in kinds or (spec.get('model') or {}).get('byte_fallback', False)
  byte_chars = set(tokenizers.pre_tokenizers.ByteLevel.alphabet())
  added = {t['id']: t for t in spec.get('added_tokens', [])}
  sizes = []
  for i in range(_base_size(vocabulary)):
    token = tokenizer.id_to_token(i)
    if token is None or added.get(i, {}).get('special'):
      sizes.append(0)
    elif i in added:
      sizes.append(len(added[i]['content'].encode('utf-8')))
    elif byte_level:
      sizes.append(sum(1 if ch in byte_chars else len(ch.encode('utf-8')) for ch in token))
    elif byte_fallback and _BYTE_FALLBACK_PIECE.fullmatch(token):
      sizes.append(1)
    else:
      sizes.append(len(token.replace(_WORD_BOUNDARY, ' ').encode('utf-8')))
  return sizes


def token_bytes(vocabulary: seqio.Vocabulary) -> np.ndarray:
  """int32 [vocab_size]: the number of UTF-8 bytes each token id stands for.

  Byte vocabulary: 1 per byte token, 0 for PAD, EOS, UNK and the extra ids. SentencePiece: the
  UTF-8 length of the piece with '▁' counted as one space byte, 1 for a byte-fallback piece
  <0x..>, 0 for control, unknown and unused pieces and the extra ids. For models that normalize
  text or add a dummy '▁' prefix (e.g. T5's), the lengths are those of the normalized text and
  each encoded text counts one byte more; models from `train_sentencepiece` do neither.
  Hugging Face tokenizer: 0 for special tokens and the extra ids; a byte-level BPE token (GPT-2,
  GPT-NeoX, Llama 3) counts one byte per character of its byte alphabet; otherwise as
  SentencePiece ('▁' one space, a <0x..> piece of a byte-fallback model one byte: Llama 2's
  tokenizer, which prepends '▁', counts one byte more per text), and a WordLevel or WordPiece
  token its own characters.
  """
  table = np.zeros(vocabulary.vocab_size, np.int32)
  if isinstance(vocabulary, seqio.ByteVocabulary):
    table[UNK_ID + 1:UNK_ID + 1 + 256] = 1
  elif isinstance(vocabulary, seqio.SentencePieceVocabulary):
    tokenizer = vocabulary.tokenizer
    table[:_base_size(vocabulary)] = [_sentencepiece_piece_bytes(tokenizer, i)
                                      for i in range(_base_size(vocabulary))]
  elif isinstance(vocabulary, HuggingFaceVocabulary):
    table[:_base_size(vocabulary)] = _huggingface_token_bytes(vocabulary)
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
