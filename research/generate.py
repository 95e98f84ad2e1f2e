"""Batched generation with a key-value cache: greedy, temperature, top-k and top-p sampling.

`generate` continues a batch of prompts with the decoder-only model or the encoder-decoder
(research/model/transformer.py), one jitted program:

- **Prompts.** Left-aligned rows [B, P], right-padded, with per-row lengths: row b's prompt is
  prompts_BP[b, :lengths_B[b]] at positions 0, 1, ... A decoder's prompt starts with the start id
  the model was trained with at the start of every segment (its vocabulary's BOS, or the pad id 0:
  research/data/vocabularies.start_id, recorded as data.start_id); `encode_prompt` adds it. An
  encoder-decoder reads its prompts in `encoder_inputs_BE` (with `encoder_lengths_B`), and its
  decoder starts from that start id alone. With `bidirectional_prompt` a decoder reads its prompt
  as a bidirectional prefix, as the prefix-LM decoders of the denoising objectives are trained.
- **Cache.** One forward pass over the prompts (the encoder-decoder's encoder runs here, once)
  fills every layer's key-value cache of S = P + max_new_tokens slots, slot = position; then one
  token per step inside `jax.lax.while_loop`, each row writing its token at its own next position
  (prompt length + tokens so far) and attending its cached slots up to there. A padded prompt's
  padding slots are overwritten before any query can see them. The model computes what a full
  recompute of each row computes, so greedy decoding gives the tokens of uncached greedy decoding
  (tests/test_generate.py checks it). A mixture-of-experts layer with a capacity
  (`model.moe_capacity_factor` > 0) routes a step's single token without the competition of the
  row's other tokens, so its tokens can differ from a full recompute's; dropless layers (0) agree.
- **Prepacked prefill** (`prepack=True`, decoder-only, causal prompts): Zhao et al. 2024
  ("Prepacking: A Simple Method for Fast Prefilling and Increasing Throughput in Large Language
  Models", arXiv 2404.09529). Prompts of unequal lengths waste the padded prefill's compute on
  padding; instead `pack_prompts` bin-packs them (first fit, longest first) into rows of the
  longest prompt's length, as training packs documents (segment ids, positions restarting), and one
  forward pass fills each packed row's cache. Each prompt's keys and values are then moved to a row
  of its own at slots from 0, and decoding goes on as above: the same numbers as the padded prefill
  up to float rounding (tests/test_generate.py), from fewer prefill rows.
- **Choosing a token** (`sample`): banned ids get -inf logits first, so they are never chosen;
  temperature 0 is greedy (argmax); otherwise logits / temperature, then top-k (the k most likely),
  then top-p (nucleus sampling, Holtzman et al. 2019, "The Curious Case of Neural Text
  Degeneration", arXiv 1904.09751: the smallest set of most likely tokens whose probability reaches
  p), and a draw from what is left with the explicit key folded with the step.
- **Stopping.** A row ends at its first stop id (kept, the last token of its continuation); its
  later positions are 0, and the loop ends when every row has ended or after max_new_tokens.

Conditional training's control tokens (Korbak et al. 2023, arXiv 2302.08582;
research/objectives/control_tokens.py) condition a prompt as '<|aligned|>' in its text
(`encode_prompt`); banning `ids_to_ban` keeps them and the sentinels out of the output.
"""

import dataclasses
import functools
import re
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import seqio

from research.data import vocabularies
from research.objectives import registry


@dataclasses.dataclass(frozen=True)
class Sampling:
  """How `sample` chooses each token: `temperature` 0 is greedy; `top_k` 0 and `top_p` 1 keep every
  token."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0


def top_k_mask(logits_BV, k: int):
  """Boolean [B, V]: the k highest logits of each row (ties: the lower ids first); all if k is 0."""
  if not k or k >= logits_BV.shape[-1]:
    return jnp.ones(logits_BV.shape, bool)
  _, ids_BK = jax.lax.top_k(logits_BV, k)
  rows_B1 = jnp.arange(logits_BV.shape[0])[:, None]
  return jnp.zeros(logits_BV.shape, bool).at[rows_B1, ids_BK].set(True)


def top_p_mask(logits_BV, p: float):
  """Boolean [B, V]: the nucleus of each row (Holtzman et al. 2019, arXiv 1904.09751), the smallest
  set of most likely tokens whose softmax probability reaches p: the tokens in descending order
  while the probability of those before them is below p (the most likely always)."""
  order_BV = jnp.argsort(-logits_BV, axis=-1, stable=True)
  probs_BV = jnp.take_along_axis(jax.nn.softmax(logits_BV, axis=-1), order_BV, axis=-1)
  before_BV = jnp.concatenate([jnp.zeros_like(probs_BV[:, :1]),
                               jnp.cumsum(probs_BV, axis=-1)[:, :-1]], axis=-1)
  kept_in_order_BV = before_BV < p
  return jnp.take_along_axis(kept_in_order_BV, jnp.argsort(order_BV, axis=-1), axis=-1)


def sample(logits_BV, key, sampling: Sampling = Sampling(), banned_ids: Sequence[int] = ()):
  """The next token [B] of each row from its float logits [B, V] (see the module docstring)."""
  logits_BV = jnp.asarray(logits_BV, jnp.float32)
  if banned_ids:
    logits_BV = logits_BV.at[:, jnp.asarray(banned_ids, jnp.int32)].set(-jnp.inf)
  if sampling.temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  logits_BV = logits_BV / sampling.temperature
  logits_BV = jnp.where(top_k_mask(logits_BV, sampling.top_k), logits_BV, -jnp.inf)
  if sampling.top_p < 1:
    logits_BV = jnp.where(top_p_mask(logits_BV, sampling.top_p), logits_BV, -jnp.inf)
  return jax.random.categorical(key, logits_BV, axis=-1).astype(jnp.int32)


def generate(model, params, prompts_BP, prompt_lengths_B, key, max_new_tokens: int,
             sampling: Sampling = Sampling(), stop_ids: Sequence[int] = (vocabularies.EOS_ID,),
             banned_ids: Sequence[int] = (), encoder_inputs_BE=None, encoder_lengths_B=None,
             bidirectional_prompt: bool = False, prepack: bool = False):
  """(tokens [B, max_new_tokens] int32, lengths [B] int32): row b's continuation of its prompt is
  tokens[b, :lengths[b]], ending with a stop id if it stopped; later positions are 0.

  `model` is a transformer.Decoder or EncoderDecoder and `params` its parameters; the prompts and
  the rest are as the module docstring says (every prompt length >= 1; for an encoder-decoder,
  prompts_BP is usually [[start id]] * B with lengths 1). Jitted: one compilation per model, shapes,
  sampling and id lists.
  """
  if max_new_tokens < 1 or np.min(prompt_lengths_B) < 1:
    raise ValueError(f'max_new_tokens={max_new_tokens} and every prompt length '
                     f'({np.asarray(prompt_lengths_B).tolist()}) must be at least 1.')
  encoder = packed = None
  if encoder_inputs_BE is not None:
    encoder = (jnp.asarray(encoder_inputs_BE, jnp.int32), jnp.asarray(encoder_lengths_B, jnp.int32))
  if prepack:
    if encoder is not None or bidirectional_prompt:
      raise ValueError('prepack=True packs the causal prompts of a decoder-only model, not an '
                       "encoder-decoder's or bidirectional ones.")
    packed = pack_prompts(np.asarray(prompts_BP), np.asarray(prompt_lengths_B))
  return _generate(model, params, jnp.asarray(prompts_BP, jnp.int32),
                   jnp.asarray(prompt_lengths_B, jnp.int32), key, encoder, max_new_tokens,
                   sampling, tuple(int(i) for i in stop_ids), tuple(int(i) for i in banned_ids),
                   bidirectional_prompt, packed)


def pack_prompts(prompts_BP: np.ndarray, lengths_B: np.ndarray) -> dict:
  """The prompts bin-packed into rows of P tokens, first fit, longest first (Prepacking, arXiv
  2404.09529): `inputs`, `segment_ids` (1, 2, ... in a row; 0 = padding), `positions` (from 0 in
  each prompt) [R, P], and each prompt's `row` and `offset` [B]."""
  length = prompts_BP.shape[1]
  row_B, offset_B, filled = np.zeros_like(lengths_B), np.zeros_like(lengths_B), []
  for b in sorted(range(len(lengths_B)), key=lambda b: -lengths_B[b]):
    row = next((r for r, used in enumerate(filled) if used + lengths_B[b] <= length), len(filled))
    if row == len(filled):
      filled.append(0)
    row_B[b], offset_B[b] = row, filled[row]
    filled[row] += lengths_B[b]
  rows = {name: np.zeros((len(filled), length), np.int32)
          for name in ('inputs', 'segment_ids', 'positions')}
  for b, (row, offset, n) in enumerate(zip(row_B, offset_B, lengths_B)):
    rows['inputs'][row, offset:offset + n] = prompts_BP[b, :n]
    rows['segment_ids'][row, offset:offset + n] = 1 + np.sum((row_B == row) & (offset_B < offset))
    rows['positions'][row, offset:offset + n] = np.arange(n)
  return {**rows, 'row': row_B.astype(np.int32), 'offset': offset_B.astype(np.int32)}


def _unpacked(cache, row_B, offset_B):
  """A packed prefill's cache ([..., R, S, G, K] leaves) as one row a prompt, its slots from 0.
  Slots past a prompt hold its row's later keys: never seen, as each decoding step overwrites its
  slot before any query reaches it."""
  def unpack(x):
    slots = x.shape[-3]
    index_BS = jnp.minimum(offset_B[:, None] + jnp.arange(slots)[None, :], slots - 1)
    x = jnp.take(x, row_B, axis=x.ndim - 4)
    return jnp.take_along_axis(x, index_BS.reshape(*(1,) * (x.ndim - 4), *index_BS.shape, 1, 1),
                               axis=x.ndim - 3)
  return jax.tree.map(unpack, cache)


def _rows(tokens_BL, lengths_B) -> dict:
  """`inputs`, `segment_ids` (1, 0 on padding) and `positions` of left-aligned rows."""
  batch_size, length = tokens_BL.shape
  valid_BL = jnp.arange(length)[None, :] < lengths_B[:, None]
  positions_BL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch_size, length))
  return {'inputs': jnp.where(valid_BL, tokens_BL, 0), 'segment_ids': valid_BL.astype(jnp.int32),
          'positions': positions_BL}


@functools.partial(jax.jit, static_argnums=(0, 6, 7, 8, 9, 10))
def _generate(model, params, prompts_BP, lengths_B, key, encoder, max_new_tokens, sampling,
              stop_ids, banned_ids, bidirectional_prompt, packed):
  batch_size, prompt_len = prompts_BP.shape
  cache_length = prompt_len + max_new_tokens

  def apply(batch, cache):
    variables = {'params': params} if cache is None else {'params': params, 'cache': cache}
    logits_BLV, mutated = model.apply(variables, batch, cache_length=cache_length,
                                      mutable=['cache'])
    return logits_BLV, mutated['cache']

  if packed is None:
    prompt = _rows(prompts_BP, lengths_B)
    if bidirectional_prompt:
      prompt['prefix'] = prompt['segment_ids'] > 0
    if encoder is not None:
      prompt.update({f'encoder_{k}': v for k, v in _rows(*encoder).items()})
    logits_BPV, cache = apply(prompt, None)
    last_BV = jnp.take_along_axis(logits_BPV, (lengths_B - 1)[:, None, None], axis=1)[:, 0]
  else:
    row_B, offset_B = packed['row'], packed['offset']
    rows = {name: packed[name] for name in ('inputs', 'segment_ids', 'positions')}
    logits_RPV, cache = apply({**rows, 'prepacked': True}, None)
    cache = _unpacked(cache, row_B, offset_B)
    last_BV = logits_RPV[row_B, offset_B + lengths_B - 1]
  choose = functools.partial(sample, sampling=sampling, banned_ids=banned_ids)
  stop_S = jnp.asarray(stop_ids, jnp.int32).reshape(-1)

  def record(t, token_B, tokens_BN, length_B, done_B):
    token_B = jnp.where(done_B, 0, token_B)
    tokens_BN = jax.lax.dynamic_update_index_in_dim(tokens_BN, token_B, t, axis=1)
    return tokens_BN, length_B + ~done_B, done_B | jnp.isin(token_B, stop_S)

  def keep_going(state):
    t, _, _, done_B, _ = state
    return (t < max_new_tokens) & ~jnp.all(done_B)

  def step(state):
    t, tokens_BN, length_B, done_B, cache = state
    batch = {'inputs': jax.lax.dynamic_index_in_dim(tokens_BN, t - 1, axis=1),
             'segment_ids': jnp.ones((batch_size, 1), jnp.int32),
             'positions': (lengths_B + t - 1)[:, None]}
    logits_B1V, cache = apply(batch, cache)
    token_B = choose(logits_B1V[:, 0], jax.random.fold_in(key, t))
    return (t + 1, *record(t, token_B, tokens_BN, length_B, done_B), cache)

  empty = (jnp.zeros((batch_size, max_new_tokens), jnp.int32), jnp.zeros(batch_size, jnp.int32),
           jnp.zeros(batch_size, bool))
  first = record(0, choose(last_BV, jax.random.fold_in(key, 0)), *empty)
  _, tokens_BN, length_B, _, _ = jax.lax.while_loop(keep_going, step, (jnp.int32(1), *first, cache))
  return tokens_BN, length_B


def pad_prompts(prompts: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
  """(int32 [B, P] left-aligned rows padded with 0 to the longest, int32 [B] lengths)."""
  lengths_B = np.array([len(p) for p in prompts], np.int32)
  rows_BP = np.zeros((len(prompts), max(1, int(lengths_B.max(initial=0)))), np.int32)
  for row, prompt in zip(rows_BP, prompts):
    row[:len(prompt)] = prompt
  return rows_BP, lengths_B


def encode_prompt(text: str, vocabulary: seqio.Vocabulary, start_id: int | None) -> list[int]:
  """The ids of `text`, with `start_id` first unless it is None (a decoder's prompt starts with
  the run's start id; an encoder's has none). The names of the control tokens the vocabulary has
  (the first data.extra_ids of CONTROL_TOKENS) in the text, such as '<|aligned|>' or '<PRE>', are
  those tokens; the others are text like the rest."""
  ids = [] if start_id is None else [start_id]
  names = vocabularies.CONTROL_TOKENS[:vocabulary.extra_ids]
  if not names:
    return ids + list(vocabulary.encode(text))
  for piece in re.split('(' + '|'.join(map(re.escape, names)) + ')', text):
    if piece in names:
      ids.append(vocabularies.control_token_id(vocabulary, piece))
    elif piece:
      ids.extend(vocabulary.encode(piece))
  return ids


def ids_to_ban(vocabulary: seqio.Vocabulary, model_vocab_size: int,
               control_tokens: bool = True) -> tuple[int, ...]:
  """The ids a model of `model_vocab_size` outputs should never write: those past the vocabulary's
  (embedding rows of no token) and, with `control_tokens`, its extra ids, the control tokens and
  sentinels (research/data/vocabularies.py)."""
  first = vocabulary.vocab_size - (vocabulary.extra_ids if control_tokens else 0)
  return tuple(range(first, model_vocab_size))


def continue_texts(loaded, texts: Sequence[str], key, max_new_tokens: int,
                   sampling: Sampling = Sampling(), stop_ids: Sequence[int] | None = None,
                   ban_control_tokens: bool = True, allowed_ids: Sequence[int] = (),
                   prepack: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """`generate` for text prompts with a loaded checkpoint (`loaded`: research/finished.py's
  LoadedCheckpoint, its model, params and run config): (tokens [B, max_new_tokens], lengths [B]) on
  the host, row b continuing texts[b].

  A decoder reads the run's start id and the prompt, as a bidirectional prefix when the run trained
  with a denoising objective (prefix LM, UL2); an encoder-decoder's encoder reads the prompt and its
  decoder starts from the start id. `stop_ids` None stops at the vocabulary's EOS; the ids past the
  vocabulary's, and with `ban_control_tokens` its extra ids but `allowed_ids`, are never written
  (`ids_to_ban`). `prepack` packs a causal decoder's prompts for the prefill (`pack_prompts`).
  """
  config = loaded.config
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  start_id = vocabularies.start_id(vocabulary, config.data.start_id)
  encoder_decoder = config.model.architecture == 'encoder_decoder'
  if encoder_decoder:
    encoder_inputs, encoder_lengths = pad_prompts([encode_prompt(t, vocabulary, None)
                                                   for t in texts])
    prompts, prompt_lengths = pad_prompts([[start_id]] * len(texts))
  else:
    encoder_inputs = encoder_lengths = None
    prompts, prompt_lengths = pad_prompts([encode_prompt(t, vocabulary, start_id) for t in texts])
  return jax.device_get(generate(
      loaded.model, loaded.params, prompts, prompt_lengths, key, max_new_tokens, sampling,
      (vocabulary.eos_id,) if stop_ids is None else stop_ids,
      tuple(i for i in ids_to_ban(vocabulary, config.model.vocab_size, ban_control_tokens)
            if i not in allowed_ids),
      encoder_inputs, encoder_lengths,
      bidirectional_prompt=registry.bidirectional_prompt(config), prepack=prepack))
