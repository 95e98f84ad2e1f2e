"""Per-task evaluation: loss, accuracy and bits per byte on each task's validation split.

Bits per byte = total cross-entropy in nats / (ln 2 * UTF-8 bytes of the target text), which
compares models across vocabularies (used e.g. by Gao et al. 2020, "The Pile", arXiv 2101.00027).
`text_loss` is the mean cross-entropy over the target tokens that stand for text (one or more
bytes), leaving out EOS, control tokens and sentinels: for a denoising format it is the loss on the
missing spans themselves, which models trained with and without sentinels both have to predict.
"""

import math

import jax
import numpy as np

from research.objectives import losses


def make_eval_step(model, replicated):
  """A jitted (params, batch) -> loss sums on the validation batch."""
  def eval_step(params, batch):
    logits_BLV = model.apply({'params': params}, batch)
    sums = losses.token_cross_entropy(logits_BLV, batch['targets'], batch['weights'])
    text = losses.token_cross_entropy(logits_BLV, batch['targets'], batch['text_weights'])
    return {**sums, 'text_cross_entropy_sum': text['cross_entropy_sum'],
            'text_weight_sum': text['weight_sum']}
  return jax.jit(eval_step, out_shardings=replicated)


def evaluate(eval_step, params, task_batches: dict, token_bytes: np.ndarray, place_batch) -> dict:
  """`eval/<task>/{loss,accuracy,bits_per_byte,text_loss}` over each task's list of host batches.

  `place_batch` turns a host batch into device arrays; `token_bytes[id]` is the number of UTF-8
  bytes token `id` stands for.
  """
  results = {}
  for task, batches in task_batches.items():
    sums = [eval_step(params, place_batch(
        {**b, 'text_weights': b['weights'] * (token_bytes[b['targets']] > 0)})) for b in batches]
    total = jax.tree.map(lambda *xs: float(np.sum(xs)), *jax.device_get(sums))
    text_bytes = sum(float(np.sum(token_bytes[b['targets']] * b['weights'])) for b in batches)
    weight = max(total['weight_sum'], 1.0)
    results[f'eval/{task}/loss'] = total['cross_entropy_sum'] / weight
    results[f'eval/{task}/accuracy'] = total['correct_sum'] / weight
    results[f'eval/{task}/text_loss'] = (total['text_cross_entropy_sum']
                                         / max(total['text_weight_sum'], 1.0))
    if text_bytes > 0:
      results[f'eval/{task}/bits_per_byte'] = total['cross_entropy_sum'] / (math.log(2) * text_bytes)
  return results
