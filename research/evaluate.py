"""Per-task evaluation: loss, accuracy, bits per byte and answer accuracy on each task's validation
split.

Bits per byte = total cross-entropy in nats / (ln 2 * UTF-8 bytes of the target text), which
compares models across vocabularies (used e.g. by Gao et al. 2020, "The Pile", arXiv 2101.00027).
`text_loss` is the mean cross-entropy over the target tokens that stand for text (one or more
bytes), leaving out EOS, control tokens and sentinels: for a denoising format it is the loss on the
missing spans themselves, which models trained with and without sentinels both have to predict.

`answer_accuracy`, on a task whose documents are a `prompt` and its `answer` (the synthetic skills
of research/data/synthetic/) in a causal format: the fraction of the validation documents in the
evaluated rows whose every answer token is the model's argmax given the true tokens before it
(teacher forcing). By induction over the answer's tokens, that is exactly whether greedy decoding
from the prompt writes the answer (the EOS after it is not scored), so the forward pass of the loss
scores it, with no decoding loop. It is also reported per `difficulty` (arithmetic: the digits;
LEGO: the chain length) as `answer_accuracy/difficulty_<d>`: exact-match accuracy by digits is how
Lee et al. 2023 ("Teaching Arithmetic to Small Transformers", arXiv 2307.03381) measure arithmetic,
and accuracy per skill is what Skill-it (Chen et al. 2023, arXiv 2307.14430) and curricula track.
`answer_loss` is the mean cross-entropy over the same answer tokens (the loss Skill-it's rule can
read, research/data/skillit.py). Accuracy is also grouped by the other `GROUP_KEYS` a task's documents
carry: by `augmented` on the biographies (`answer_accuracy/augmented_true`, `.../augmented_false`),
the split in which Allen-Zhu & Li 2023 ("Physics of Language Models: Part 3.1, Knowledge Storage
and Extraction", arXiv 2309.14316) find that only individuals with augmented biographies have
extractable attributes; by `relation` on the reversal facts (`answer_accuracy/relation_trained`,
`.../relation_reversed`: the reversal curse, Berglund et al. 2023, arXiv 2309.12288).

`span_accuracy`, in a span-denoising format (T5's span corruption, Raffel et al. 2020, arXiv
1910.10683; UL2's R and X denoisers, Tay et al. 2022, arXiv 2205.05131): the fraction of the masked
spans in the evaluated rows whose every text token is the model's argmax given the true targets
before it, which by the same induction is whether greedy decoding after the span's sentinel writes
the span (the sentinel and a span's EOS are not scored, as in `text_loss`); `span_token_accuracy`
is the fraction of those text tokens that are the argmax. A prefix (S) denoiser's targets carry no
sentinel: they are a continuation, scored by the losses, not a span, so a prefix_lm or S format
reports no span accuracy and a UL2 mixture's counts only its span denoisers' segments. Causal
formats have no spans.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import seqio
from absl import logging

from research.data import pipeline, store as store_lib, vocabularies
from research.objectives import load_balance, losses

# The document metadata that answer accuracy is grouped by (`answer_accuracy/<key>_<value>`).
from research.objectives import registry
GROUP_KEYS = ('difficulty', 'augmented', 'relation')


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """The host batches of one evaluation (a task in one example format) and the answers or masked
  spans it scores by exact match.

  On a task with answers, every batch also holds `answer_documents` ([B, L] int32): at a target
  that is an answer token, the index s of its scored document, else -1; `groups[key][s]` is that
  document's metadata `key` (None where it has none), for each of `GROUP_KEYS`. `groups` is None
  when the evaluation scores no answers. In a span-denoising format with `num_spans` > 0 spans,
  every batch also holds `spans` ([B, L] int32, `masked_spans`).
  """
  batches: list[dict[str, np.ndarray]]
  groups: dict[str, tuple] | None = None
  num_spans: int = 0

  @property
  def difficulties(self) -> tuple | None:
    """Each scored document's `difficulty`; None when the evaluation scores no answers."""
    return None if self.groups is None else self.groups['difficulty']


def _wrong(logits_BLV, targets_BL, scored_BL):
  """[B, L] bool: a scored target that is not the argmax."""
  return scored_BL & (jnp.argmax(logits_BLV, axis=-1) != targets_BL)


def make_eval_step(model, replicated):
  """A jitted (params, batch) -> loss sums on the validation batch; on a batch with
  `answer_documents` also the answer tokens' loss sums and `answer_wrong` ([B, L] bool: an answer
  token that is not the argmax); on a batch with `spans`, `span_wrong` (a span's text token that is
  not the argmax); with mixture-of-experts layers also `moe_counts` [M, E] and
  `moe_dropped` [M], the batch's expert assignments and dropped assignments per MoE layer."""
  def eval_step(params, batch):
    logits_BLV, variables = model.apply({'params': params}, batch, mutable=['intermediates'])
    sums = losses.token_cross_entropy(logits_BLV, batch['targets'], batch['weights'])
    text = losses.token_cross_entropy(logits_BLV, batch['targets'], batch['text_weights'])
    outputs = {**sums, 'text_cross_entropy_sum': text['cross_entropy_sum'],
               'text_weight_sum': text['weight_sum']}
    stats = load_balance.router_stats(variables.get('intermediates', {}))
    if stats is not None:
      outputs.update(moe_counts=jnp.sum(stats['counts'], axis=1),
                     moe_dropped=jnp.sum(stats['dropped'], axis=1))
    if 'answer_documents' in batch:
      answers_BL = batch['answer_documents'] >= 0
      answer = losses.token_cross_entropy(logits_BLV, batch['targets'], answers_BL)
      outputs.update(answer_cross_entropy_sum=answer['cross_entropy_sum'],
                     answer_weight_sum=answer['weight_sum'],
                     answer_wrong=_wrong(logits_BLV, batch['targets'], answers_BL))
    if 'spans' in batch:
      outputs['span_wrong'] = _wrong(logits_BLV, batch['targets'], batch['spans'] >= 0)
    return outputs
  return jax.jit(eval_step, out_shardings=replicated)


def answer_documents(store: store_lib.DocumentStore, documents_NL: np.ndarray, chunk_len: int,
                     vocabulary: seqio.Vocabulary) -> tuple[np.ndarray, dict] | None:
  """Where the answers of `store`'s documents lie in N packed rows: (answer_NL, groups).

  `documents_NL` is the store index of each target's document (-1 on padding). A document is
  scored when all its tokens are in the rows and it is at most `chunk_len` long (packing cuts only
  longer ones, so it is one segment of one row), its answer is not empty, and its tokens are
  encode(prompt) + encode(answer) + EOS: always so with bytes; a vocabulary that merges tokens
  across the prompt's end leaves the document out, with a warning. answer_NL[i, t] is the index s
  of the scored document whose answer token target (i, t) is, else -1; groups[key][s] is its
  metadata `key` (None without), for each of `GROUP_KEYS`. None when some document of the store
  lacks `prompt` or `answer` metadata, or when none in the rows is scored.
  """
  metadata = store.metadata
  if not all('prompt' in m and 'answer' in m for m in metadata):
    return None
  documents_T = documents_NL.reshape(-1)
  at_T = np.flatnonzero(documents_T >= 0)
  ids, first, counts = np.unique(documents_T[at_T], return_index=True, return_counts=True)
  lengths = np.diff(store.offsets)[ids]
  whole = (counts == lengths) & (lengths <= chunk_len)
  answer_T = np.full(documents_T.shape, -1, np.int32)
  scored, mismatched = [], 0
  for index, start, length in zip(ids[whole].tolist(), at_T[first[whole]].tolist(),
                                  lengths[whole].tolist()):
    answer = list(vocabulary.encode(metadata[index]['answer']))
    if not answer:
      continue
    if (list(vocabulary.encode(metadata[index]['prompt'])) + answer + [vocabulary.eos_id]
        != store.document(index).tolist()):
      mismatched += 1
      continue
    eos = start + length - 1
    answer_T[eos - len(answer):eos] = len(scored)
    scored.append(index)
  task = store.manifest['task']
  if mismatched or not whole.all():
    logging.warning('%s: answer accuracy leaves out %d of the %d validation documents in the '
                    'evaluated rows: %d cut across rows or beyond them, %d whose tokens are not '
                    'encode(prompt) + encode(answer) + EOS in this vocabulary.', task, len(ids)
                    - len(scored), len(ids), int(np.sum(~whole)), mismatched)
  if not scored:
    return None
  return answer_T.reshape(documents_NL.shape), {
      key: tuple(metadata[index].get(key) for index in scored) for key in GROUP_KEYS}


def masked_spans(targets_NL: np.ndarray, segment_ids_NL: np.ndarray, weights_NL: np.ndarray,
                 sentinel_ids, token_bytes: np.ndarray) -> tuple[np.ndarray, int]:
  """Where the masked spans of N packed denoising rows lie: (span_NL, num_spans).

  A span denoiser's targets list each span after its sentinel (`<0> B <1> D E`,
  research/objectives/denoising.py), in either layout: the weighted targets of a decoder row's
  segment, or of a decoder row of the encoder-decoder. A span runs from its sentinel to the next
  sentinel or its segment's end. span_NL[i, t] is the index of the span whose text token (one with
  `token_bytes` > 0: never a sentinel or an EOS) target (i, t) is, else -1. Targets before a
  segment's first sentinel (all of a prefix denoiser's) are in no span; a span without text tokens
  (only an EOS) is left out, so the indices count the spans with text, 0 .. num_spans - 1.
  """
  shape = targets_NL.shape
  targets_T = targets_NL.reshape(-1)
  weighted_T = weights_NL.reshape(-1) > 0
  sentinel_T = weighted_T & np.isin(targets_T, np.asarray(sentinel_ids))
  span_T = np.cumsum(sentinel_T) - 1  # the last sentinel at or before each target
  # A target is in that sentinel's span when both are in one segment of one row.
  segment_T = (np.arange(shape[0])[:, None] * (np.max(segment_ids_NL, initial=0) + 1)
               + segment_ids_NL).reshape(-1)
  text_T = weighted_T & (token_bytes[targets_T] > 0) & (span_T >= 0)
  text_T[text_T] = segment_T[text_T] == segment_T[np.flatnonzero(sentinel_T)[span_T[text_T]]]
  spans, index_T = np.unique(span_T[text_T], return_inverse=True)
  span_T[:] = -1
  span_T[text_T] = index_T
  return span_T.reshape(shape).astype(np.int32), len(spans)


def eval_set(data_config: ml_collections.ConfigDict, task: str, batch_size: int, num_batches: int,
             objective: registry.Objective, vocabulary: seqio.Vocabulary) -> EvalSet:
  """`task`'s evaluation batches in `objective`'s format (pipeline.eval_batches) and what they
  score by exact match, found once here, not at each evaluation: in a causal format of a task with
  answers, the answers; in a denoising format (which rewrites the targets, so it scores no
  answers), the masked spans."""
  store = pipeline.eval_store(data_config, task, batch_size, num_batches, objective)
  if objective.denoising:
    batches = pipeline.pack_eval(store, batch_size, num_batches, objective)
    span_NL, num_spans = masked_spans(
        *(np.concatenate([b[k] for b in batches]) for k in ('targets', 'segment_ids', 'weights')),
        objective.sentinel_ids, vocabularies.token_bytes(vocabulary))
    if not num_spans:
      return EvalSet(batches)
    for i, batch in enumerate(batches):
      batch['spans'] = span_NL[i * batch_size:(i + 1) * batch_size]
    return EvalSet(batches, num_spans=num_spans)
  batches = pipeline.pack_eval(store, batch_size, num_batches, objective, documents=True)
  answers = answer_documents(store, np.concatenate([b.pop('documents') for b in batches]),
                             objective.chunk_len, vocabulary)
  if answers is None:
    return EvalSet(batches)
  answer_NL, groups = answers
  for i, batch in enumerate(batches):
    batch['answer_documents'] = answer_NL[i * batch_size:(i + 1) * batch_size]
  return EvalSet(batches, groups)


def _exact_matches(batches: list[dict[str, np.ndarray]], key: str, wrong: list[np.ndarray],
                   count: int) -> np.ndarray:
  """bool [count]: whether none of the targets of unit s (where batch[key] == s) is wrong."""
  wrong_S = sum(np.bincount(batch[key][wrong_BL], minlength=count)
                for batch, wrong_BL in zip(batches, wrong))
  return wrong_S == 0


def _group_value(value) -> str:
  """A metadata value as a metric name shows it: True -> 'true', 3 -> '3'."""
  return str(value).lower() if isinstance(value, bool) else str(value)


def answer_accuracy(task: str, eval_set: EvalSet, answer_wrong: list[np.ndarray]) -> dict:
  """`eval/<task>/answer_accuracy` and, for each metadata value v of each of `GROUP_KEYS` that the
  scored documents carry, `eval/<task>/answer_accuracy/<key>_<v>` (`difficulty_2`,
  `augmented_true`), from each batch's `answer_wrong` (make_eval_step): a document is right when
  none of its answer tokens is wrong."""
  right_S = _exact_matches(eval_set.batches, 'answer_documents', answer_wrong,
                           len(eval_set.difficulties))
  results = {f'eval/{task}/answer_accuracy': float(np.mean(right_S))}
  for key, values in eval_set.groups.items():
    value_S = np.array(values, object)
    for value in sorted(set(values) - {None}):
      results[f'eval/{task}/answer_accuracy/{key}_{_group_value(value)}'] = float(
          np.mean(right_S[value_S == value]))
  return results


def span_accuracy(task: str, eval_set: EvalSet, span_wrong: list[np.ndarray]) -> dict:
  """`eval/<task>/span_accuracy` (a span is right when none of its text tokens is wrong) and
  `eval/<task>/span_token_accuracy` from each batch's `span_wrong` (make_eval_step)."""
  right_S = _exact_matches(eval_set.batches, 'spans', span_wrong, eval_set.num_spans)
  tokens = sum(int(np.sum(batch['spans'] >= 0)) for batch in eval_set.batches)
  wrong = sum(int(np.sum(wrong_BL)) for wrong_BL in span_wrong)
  return {f'eval/{task}/span_accuracy': float(np.mean(right_S)),
          f'eval/{task}/span_token_accuracy': 1.0 - wrong / tokens}


def evaluate(eval_step, params, eval_sets: dict[str, EvalSet], token_bytes: np.ndarray,
             place_batch) -> dict:
  """`eval/<task>/{loss,accuracy,bits_per_byte,text_loss}` over each task's EvalSet, its
  `answer_loss` and `answer_accuracy` (overall and by `GROUP_KEYS`) where it scores answers, and
  its `span_accuracy` and `span_token_accuracy` where it scores masked spans.

  A model with mixture-of-experts layers also reports how the task's tokens are routed (expert
  specialisation by domain, Qiu et al. 2025, arXiv 2501.11873): `moe/layer_<m>/expert_<e>`, the
  share of the task's assignments in MoE layer m that go to expert e; `moe/load_entropy`, the
  entropy of those shares averaged over layers (log N_E = spread evenly, lower = concentrated);
  `moe/dropped_fraction`.

  `place_batch` turns a host batch into device arrays; `token_bytes[id]` is the number of UTF-8
  bytes token `id` stands for.
  """
  results = {}
  for task, eval_set in eval_sets.items():
    batches = eval_set.batches
    outputs = jax.device_get([eval_step(params, place_batch(
        {**b, 'text_weights': b['weights'] * (token_bytes[b['targets']] > 0)})) for b in batches])
    answer_wrong = [o.pop('answer_wrong', None) for o in outputs]
    span_wrong = [o.pop('span_wrong', None) for o in outputs]
    routing = [(o.pop('moe_counts'), o.pop('moe_dropped')) for o in outputs if 'moe_counts' in o]
    total = jax.tree.map(lambda *xs: float(np.sum(xs)), *outputs)
    text_bytes = sum(float(np.sum(token_bytes[b['targets']] * b['weights'])) for b in batches)
    weight = max(total['weight_sum'], 1.0)
    results[f'eval/{task}/loss'] = total['cross_entropy_sum'] / weight
    results[f'eval/{task}/accuracy'] = total['correct_sum'] / weight
    results[f'eval/{task}/text_loss'] = (total['text_cross_entropy_sum']
                                         / max(total['text_weight_sum'], 1.0))
    if text_bytes > 0:
      results[f'eval/{task}/bits_per_byte'] = (total['cross_entropy_sum']
                                               / (math.log(2) * text_bytes))
    if eval_set.groups is not None:
      results[f'eval/{task}/answer_loss'] = (total['answer_cross_entropy_sum']
                                             / max(total['answer_weight_sum'], 1.0))
      results.update(answer_accuracy(task, eval_set, answer_wrong))
    if eval_set.num_spans:
      results.update(span_accuracy(task, eval_set, span_wrong))
    if routing:
      counts_ME, dropped_M = (np.sum(parts, axis=0) for parts in zip(*routing))
      results.update({k: float(v) for k, v in load_balance.assignment_metrics(
          f'eval/{task}/moe/', counts_ME, dropped_M).items()})
      results[f'eval/{task}/moe/load_entropy'] = float(load_balance.load_entropy(counts_ME))
  return results
