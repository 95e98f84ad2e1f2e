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
read, research/skillit.py).
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import seqio
from absl import logging

from research.data import pipeline, store as store_lib
from research.objectives import examples, load_balance, losses


@dataclasses.dataclass(frozen=True)
class EvalSet:
  """The host batches of one evaluation (a task in one example format) and the answers it scores.

  On a task with answers, every batch also holds `answer_documents` ([B, L] int32): at a target
  that is an answer token, the index of its document in `difficulties`, else -1. `difficulties`
  holds each scored document's `difficulty` metadata (None where it has none); it is None itself
  when the evaluation scores no answers.
  """
  batches: list[dict[str, np.ndarray]]
  difficulties: tuple | None = None


def make_eval_step(model, replicated):
  """A jitted (params, batch) -> loss sums on the validation batch; on a batch with
  `answer_documents` also the answer tokens' loss sums and `answer_wrong` ([B, L] bool: an answer
  token that is not the argmax); with mixture-of-experts layers also `moe_counts` [M, E] and
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
      wrong_BL = answers_BL & (jnp.argmax(logits_BLV, axis=-1) != batch['targets'])
      outputs.update(answer_cross_entropy_sum=answer['cross_entropy_sum'],
                     answer_weight_sum=answer['weight_sum'], answer_wrong=wrong_BL)
    return outputs
  return jax.jit(eval_step, out_shardings=replicated)


def answer_documents(store: store_lib.DocumentStore, documents_NL: np.ndarray, chunk_len: int,
                     vocabulary: seqio.Vocabulary) -> tuple[np.ndarray, tuple] | None:
  """Where the answers of `store`'s documents lie in N packed rows: (answer_NL, difficulties).

  `documents_NL` is the store index of each target's document (-1 on padding). A document is
  scored when all its tokens are in the rows and it is at most `chunk_len` long (packing cuts only
  longer ones, so it is one segment of one row), its answer is not empty, and its tokens are
  encode(prompt) + encode(answer) + EOS: always so with bytes; a vocabulary that merges tokens
  across the prompt's end leaves the document out, with a warning. answer_NL[i, t] is the index s
  of the scored document whose answer token target (i, t) is, else -1; difficulties[s] is its
  `difficulty` metadata (None without). None when some document of the store lacks `prompt` or
  `answer` metadata, or when none in the rows is scored.
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
  difficulties, mismatched = [], 0
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
    answer_T[eos - len(answer):eos] = len(difficulties)
    difficulties.append(metadata[index].get('difficulty'))
  task = store.manifest['task']
  if mismatched or not whole.all():
    logging.warning('%s: answer accuracy leaves out %d of the %d validation documents in the '
                    'evaluated rows: %d cut across rows or beyond them, %d whose tokens are not '
                    'encode(prompt) + encode(answer) + EOS in this vocabulary.', task, len(ids)
                    - len(difficulties), len(ids), int(np.sum(~whole)), mismatched)
  if not difficulties:
    return None
  return answer_T.reshape(documents_NL.shape), tuple(difficulties)


def eval_set(data_config: ml_collections.ConfigDict, task: str, batch_size: int, num_batches: int,
             objective: examples.Objective, vocabulary: seqio.Vocabulary) -> EvalSet:
  """`task`'s evaluation batches in `objective`'s format (pipeline.eval_batches) and, in a causal
  format of a task with answers, the answers they score: found once here, not at each evaluation.
  A denoising format rewrites the targets, so it scores no answers."""
  if objective.denoising:
    return EvalSet(pipeline.eval_batches(data_config, task, batch_size, num_batches, objective))
  batches = pipeline.eval_batches(data_config, task, batch_size, num_batches, objective,
                                  documents=True)
  store = store_lib.load_store(task, 'validation', data_config.vocabulary, data_config.cache_dir)
  answers = answer_documents(store, np.concatenate([b.pop('documents') for b in batches]),
                             objective.chunk_len, vocabulary)
  if answers is None:
    return EvalSet(batches)
  answer_NL, difficulties = answers
  for i, batch in enumerate(batches):
    batch['answer_documents'] = answer_NL[i * batch_size:(i + 1) * batch_size]
  return EvalSet(batches, difficulties)


def answer_accuracy(task: str, eval_set: EvalSet, answer_wrong: list[np.ndarray]) -> dict:
  """`eval/<task>/answer_accuracy` and `eval/<task>/answer_accuracy/difficulty_<d>` from each
  batch's `answer_wrong` (make_eval_step): a document is right when none of its tokens is wrong."""
  difficulty_S = np.array(eval_set.difficulties, object)
  wrong_S = sum(np.bincount(batch['answer_documents'][wrong_BL], minlength=len(difficulty_S))
                for batch, wrong_BL in zip(eval_set.batches, answer_wrong))
  right_S = wrong_S == 0
  results = {f'eval/{task}/answer_accuracy': float(np.mean(right_S))}
  for difficulty in sorted(set(eval_set.difficulties) - {None}):
    accuracy = float(np.mean(right_S[difficulty_S == difficulty]))
    results[f'eval/{task}/answer_accuracy/difficulty_{difficulty}'] = accuracy
  return results


def evaluate(eval_step, params, eval_sets: dict[str, EvalSet], token_bytes: np.ndarray,
             place_batch) -> dict:
  """`eval/<task>/{loss,accuracy,bits_per_byte,text_loss}` over each task's EvalSet, and its
  `answer_loss` and `answer_accuracy` (overall and by difficulty) where it scores answers.

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
    if eval_set.difficulties is not None:
      results[f'eval/{task}/answer_loss'] = (total['answer_cross_entropy_sum']
                                             / max(total['answer_weight_sum'], 1.0))
      results.update(answer_accuracy(task, eval_set, answer_wrong))
    if routing:
      counts_ME = np.sum([counts for counts, _ in routing], axis=0)
      results.update({k: float(v) for k, v in load_balance.layer_loads(
          f'eval/{task}/moe/', counts_ME).items()})
      results[f'eval/{task}/moe/load_entropy'] = float(load_balance.load_entropy(counts_ME))
      results[f'eval/{task}/moe/dropped_fraction'] = float(
          np.sum([dropped for _, dropped in routing]) / max(np.sum(counts_ME), 1.0))
  return results
