"""EleutherAI's lm-evaluation-harness (`lm_eval`) on a checkpoint: its three requests answered by
the project's scoring (research/analysis/scores.py) and generation (research/generate.py).

`CheckpointLM` is an `lm_eval.api.model.LM`, so any decoder checkpoint of launch.train (finished
or in progress) or launch.convert runs lm-eval tasks (launch/lm_eval.py is the command):

- **loglikelihood** (context, continuation): the sum of the continuation's token log-probabilities
  and whether each is the model's argmax. The pair is split into ids as lm-eval's own models split
  it (TemplateLM): the context's trailing spaces move to the continuation, and the continuation's
  ids are those the whole text's encoding has after the context's. The model reads the run's start
  id, then the context and the continuation, as `launch.score` reads a document: when they exceed
  data.seq_len, the context's first tokens are left out (the trained context length).
- **loglikelihood_rolling** (text): the sum of the log-probabilities of the text's tokens (no EOS),
  each predicted once in windows of data.seq_len tokens from the start id, as training and
  `launch.score` cut a document (its nll times its length). lm-eval's own models give the last
  window of a long text the full preceding context instead; a text within data.seq_len scores the
  same.
- **generate_until** (context, gen_kwargs): `generate.generate` from the start id and the context
  (its last data.seq_len - 1 tokens), up to `max_gen_toks` new tokens (lm-eval's default 256) or
  EOS, greedy unless `do_sample` (then `temperature`, `top_k`, `top_p`); the text is cut at the
  first of the `until` strings. Control tokens and sentinels are never written. A denoising run's
  decoder reads the context as a bidirectional prefix, as launch.generate does.

Everything runs on one device (as launch.generate), `batch_size` rows at a time: scoring packs the
requests' windows into rows of data.seq_len; generation pads each batch of prompts to a power of
two, so few shapes compile.
"""

import itertools
import json

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval.api import model as lm_eval_model

from research import finished, generate

from research.data import vocabularies, windows
from research.objectives import losses, registry

DEFAULT_MAX_GEN_TOKS = 256  # lm-eval's default for generate_until


class CheckpointLM(lm_eval_model.LM):
  """lm-eval's model interface over the decoder checkpoint at `path` (a workdir: its latest
  checkpoint; WORKDIR/checkpoints/<step>: that one; or a launch.convert output), `batch_size` rows
  per forward pass (0: the run's eval.batch_size). `flag` names `path` in errors."""

  def __init__(self, path: str, batch_size: int = 0, flag: str = '--checkpoint'):
    super().__init__()
    config = finished.checkpoint_config(path, flag)
    self.loaded = finished.load_checkpoint(path, config, jax.local_devices()[:1], flag=flag)
    self.vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
    self.batch_size = batch_size or config.eval.batch_size
    model = self.loaded.model

    def statistics(params, batch):
      logits_BLV = model.apply({'params': params}, batch)
      return {'log_prob': losses.token_statistics(logits_BLV, batch['targets'])['log_prob'],
              'greedy': jnp.argmax(logits_BLV, axis=-1) == batch['targets']}

    self._statistics = self.loaded.jit(statistics)

  @property
  def step(self) -> int:
    return self.loaded.step

  def get_model_info(self) -> dict:
    """What lm-eval records in its results' `config`: the checkpoint and its step."""
    return {'checkpoint': self.loaded.path, 'step': self.loaded.step}

  def _token_statistics(self, sequences: list[list[int]]) -> tuple[dict, np.ndarray]:
    """({'log_prob': float32 [T], 'greedy': bool [T]}, offsets [N + 1]) of every token of the N
    `sequences`, concatenated: sequence n is tokens offsets[n]:offsets[n + 1], each predicted from
    the start id and the tokens before it in its window (windows.window_batches)."""
    offsets = np.cumsum([0] + [len(s) for s in sequences])
    tokens = np.fromiter(itertools.chain.from_iterable(sequences), np.int32, offsets[-1])
    statistics = {'log_prob': np.empty(offsets[-1], np.float32),
                  'greedy': np.empty(offsets[-1], bool)}
    for first, _, _, batches in windows.window_batches(tokens, offsets, self.loaded.seq_len,
                                                      self.batch_size, windows.GROUP_TOKENS,
                                                      self.loaded.start_id):
      pending = [self.loaded.apply(self._statistics, batch) for batch in batches]
      for batch, fetched in zip(batches, jax.device_get(pending)):
        real = batch['token_index'] >= 0
        for name, values in statistics.items():
          values[offsets[first] + batch['token_index'][real]] = fetched[name][real]
    return statistics, offsets

  def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids), split as lm-eval's TemplateLM splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
      context, continuation = context[:-spaces], context[-spaces:] + continuation
    context_ids = list(self.vocabulary.encode(context))
    return context_ids, list(self.vocabulary.encode(context + continuation))[len(context_ids):]

  def loglikelihood(self, requests) -> list[tuple[float, bool]]:
    pairs = [self._encode_pair(*request.args) for request in requests]
    seq_len = self.loaded.seq_len
    sequences = [(c + k)[max(0, min(len(c), len(c) + len(k) - seq_len)):] for c, k in pairs]
    statistics, offsets = self._token_statistics(sequences)
    results = []
    for (_, continuation), end in zip(pairs, offsets[1:]):
      scored = slice(end - len(continuation), end)
      results.append((float(statistics['log_prob'][scored].sum(dtype=np.float64)),
                      bool(statistics['greedy'][scored].all())))
    return results

  def loglikelihood_rolling(self, requests) -> list[float]:
    texts = [list(self.vocabulary.encode(request.args[0])) for request in requests]
    statistics, offsets = self._token_statistics(texts)
    return [float(statistics['log_prob'][start:end].sum(dtype=np.float64))
            for start, end in zip(offsets[:-1], offsets[1:])]

  def _prompt(self, context: str) -> list[int]:
    """The start id and the last data.seq_len - 1 ids of `context`."""
    start, *ids = generate.encode_prompt(context, self.vocabulary, self.loaded.start_id)
    return [start] + ids[max(0, len(ids) - self.loaded.seq_len + 1):]

  def _continuations(self, contexts: list[str], max_new_tokens: int,
                     sampling: generate.Sampling, key) -> list[str]:
    """The decoded continuations of at most batch_size `contexts` (EOS left out)."""
    config, eos = self.loaded.config, self.vocabulary.eos_id
    prompts = [self._prompt(context) for context in contexts]
    rows_BP, lengths_B = generate.pad_prompts(  # the same shapes for every batch
        prompts + prompts[:1] * (self.batch_size - len(prompts)))
    width = int(windows.power_of_two_ceiling(rows_BP.shape[1]))
    tokens_BN, new_lengths_B = jax.device_get(generate.generate(
        self.loaded.model, self.loaded.params,
        np.pad(rows_BP, [(0, 0), (0, width - rows_BP.shape[1])]), lengths_B, key, max_new_tokens,
        sampling, (eos,), generate.ids_to_ban(self.vocabulary, config.model.vocab_size),
        bidirectional_prompt=registry.bidirectional_prompt(config)))
    texts = []
    for row, length in zip(tokens_BN[:len(contexts)], new_lengths_B):
      ids = row[:length].tolist()
      texts.append(self.vocabulary.decode(ids[:-1] if ids and ids[-1] == eos else ids))
    return texts

  def generate_until(self, requests) -> list[str]:
    by_kwargs = {}  # requests with the same gen_kwargs are generated together
    for i, request in enumerate(requests):
      by_kwargs.setdefault(json.dumps(request.args[1], sort_keys=True), []).append(i)
    results = [''] * len(requests)
    for indices in by_kwargs.values():
      kwargs = requests[indices[0]].args[1]
      until = kwargs.get('until', [])
      until = [until] if isinstance(until, str) else until
      sampling = generate.Sampling()  # greedy
      if kwargs.get('do_sample'):
        sampling = generate.Sampling(float(kwargs.get('temperature', 1.0)),
                                     int(kwargs.get('top_k') or 0), float(kwargs.get('top_p') or 1))
      for start in range(0, len(indices), self.batch_size):
        chunk = indices[start:start + self.batch_size]
        texts = self._continuations([requests[i].args[0] for i in chunk],
                                    int(kwargs.get('max_gen_toks', DEFAULT_MAX_GEN_TOKS)), sampling,
                                    jax.random.key(start))
        for i, text in zip(chunk, texts):
          for stop in filter(None, until):
            text = text.split(stop)[0]
          results[i] = text
    return results
