"""Mixture-of-experts feed-forward layer: a float32 top-k router and SwiGLU experts with capacity.

A sparsely-gated MoE layer (Shazeer et al. 2017, arXiv 1701.06538) as GShard (Lepikhin et al.
2020, arXiv 2006.16668) and Switch Transformer (Fedus et al. 2021, arXiv 2101.03961) build it:

- **Router.** logits = x W_r in float32 (Switch keeps the router in float32 for stability),
  p = softmax(logits) over the E experts, and each token takes its top-k experts with gates
  g = p (Switch) or, with `normalize_gates`, the top-k probabilities renormalised to sum to 1
  (GShard's top-2, Mixtral, Qwen-MoE's norm_topk_prob).
- **Capacity.** Each sequence (row) is a group: expert e takes at most
  C = ceil(k * L * capacity_factor / E) of the row's L tokens (capacity_factor 0 = dropless,
  C = L: no expert can get more). Assignments queue slot-major (every token's first choice before
  any second choice) in position order; those past C are dropped: the token's output lacks that
  expert's share, and the residual carries it on (Switch). Padding (segment 0) is never routed.
- **Dispatch.** Index dispatch: each (token, choice) kept gets slot e * C + position, the row's
  tokens are gathered into per-expert buffers [B, E, C, D], all experts run as one batched matmul
  against weights [E, D, F] (`expert` logical axis: experts shard over the `expert` mesh axis, and
  the buffers reshard to it, an all-to-all), and each token gathers its k outputs back, weighted by
  its gates. On this repository's CPU it measured 63 ms per forward+backward at B=16, L=256,
  D=128, F=256, E=8, k=2, capacity 1.25, against 93 ms for GShard's one-hot dispatch and combine
  einsums (which spend 2 L E C D FLOPs per row on the one-hot products) and 232 ms for dropless
  sorted grouped matmuls with `jax.lax.ragged_dot` (its CPU lowering computes every expert on
  every row), so this is what runs; docs/results/moe_load_balancing.md has the numbers.

The layer sows its per-row router statistics into the `intermediates` collection (`router`): the
load-balancing and router z-losses (research/objectives/load_balance.py) and the routing metrics
are computed from them. A caller that does not ask for the collection (mutable=['intermediates'])
gets the output alone.

It also sows each row's pathway (Li, Fan & Zhou 2025, "Where to find Grokking in LLM Pretraining?
Monitor Memorization-to-Generalization without Test", arXiv 2506.21551) into a collection of its
own, `pathways` (`pathway`): the top-k expert choices of its tokens and the gate-weighted sum of the
chosen experts' router columns, from which research/pathways.py computes the pathway distance and
consistency. Only a caller that asks for that collection (mutable=['pathways']) computes them:
training and evaluation, which ask for `intermediates` alone, and initialisation pay nothing.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.model import layers

Dtype = Any


def capacity(num_experts: int, top_k: int, length: int, capacity_factor: float) -> int:
  """Slots per expert in a group of `length` tokens: ceil(k L cf / E), at least 1 and at most L; L
  when cf is 0. The quotient is rounded to 9 decimals first, so float error in k L cf (1.1 * 10 is
  11.000000000000002) adds no slot."""
  if capacity_factor <= 0:
    return length
  return min(length, max(1, math.ceil(round(top_k * length * capacity_factor / num_experts, 9))))


def _queue_positions(chosen_BLKE):
  """Each (token, choice)'s place in its expert's queue, [B, L, K]: slot-major, then position.

  `chosen_BLKE` is the one-hot of each token's choices (zero rows for tokens not routed).
  """
  batch, length, top_k, experts = chosen_BLKE.shape
  queue_BNE = chosen_BLKE.transpose(0, 2, 1, 3).reshape(batch, top_k * length, experts)
  position_BN = jnp.sum((jnp.cumsum(queue_BNE, axis=1) - 1) * queue_BNE, axis=-1)
  return position_BN.reshape(batch, top_k, length).transpose(0, 2, 1)


class MoE(nn.Module):
  """Top-k routed SwiGLU experts (see the module docstring): x [B, L, D] -> [B, L, D].

  `valid_BL` marks the tokens to route (not padding). Sows `router`: per row b, float32
  `counts` [B, E] (assignments chosen per expert, before capacity), `prob_sums` [B, E] (router
  probabilities summed over the row's tokens), `tokens` [B], `dropped` [B] (assignments past
  capacity), `z_sums` [B] (logsumexp(logits)^2 summed) and `entropy_sums` [B] (the router
  distribution's entropy summed, nats). When the `pathways` collection is mutable (and not at
  initialisation) also sows `pathway`: `choices` int32 [B, L, K] (each token's top-k experts in
  top-k order; padding's too, to be masked by `valid_BL`) and `embedding` float32 [B, D] (the sum
  over the row's valid tokens and their k choices of gate * the chosen expert's router column
  W_r[:, e], with the gates the layer applies, normalised or not, dropped assignments included).
  """
  num_experts: int
  top_k: int
  mlp_dim: int
  capacity_factor: float = 1.25
  normalize_gates: bool = False
  init_std: float = 0.02  # the router's
  dtype: Dtype = jnp.float32
  expert_init_std: float = 0.02  # the experts' (muP scales it: transformer.ModelConfig)

  @nn.compact
  def __call__(self, x_BLD, valid_BL):
    batch, length, d_model = x_BLD.shape
    experts, top_k, dtype = self.num_experts, self.top_k, self.dtype
    router_DE = layers.weight(self, 'router', (d_model, experts), ('embed', None), self.init_std)
    logits_BLE = jnp.einsum('bld,de->ble', x_BLD.astype(jnp.float32), router_DE)
    probs_BLE = jax.nn.softmax(logits_BLE, axis=-1)
    gates_BLK, choices_BLK = jax.lax.top_k(probs_BLE, top_k)
    if self.normalize_gates:
      gates_BLK = gates_BLK / jnp.sum(gates_BLK, axis=-1, keepdims=True)

    valid_BL = valid_BL.astype(bool)
    chosen_BLKE = jax.nn.one_hot(choices_BLK, experts, dtype=jnp.int32) * valid_BL[..., None, None]
    slots = capacity(experts, top_k, length, self.capacity_factor)
    position_BLK = _queue_positions(chosen_BLKE)
    kept_BLK = valid_BL[..., None] & (position_BLK < slots)
    trash = experts * slots  # the slot of dropped and unrouted assignments, cut off below
    slot_BLK = jnp.where(kept_BLK, choices_BLK * slots + position_BLK, trash)

    # The token each expert slot holds; L (a row of zeros) where the slot is empty.
    token_BLK = jnp.broadcast_to(jnp.arange(length)[None, :, None], slot_BLK.shape)
    fill = lambda slot_N, token_N: jnp.full((trash + 1,), length).at[slot_N].set(token_N)
    source_BS = jax.vmap(fill)(slot_BLK.reshape(batch, -1), token_BLK.reshape(batch, -1))[:, :trash]
    padded_BLD = jnp.concatenate([x_BLD, jnp.zeros((batch, 1, d_model), x_BLD.dtype)], axis=1)
    dispatched_BSD = jnp.take_along_axis(padded_BLD, source_BS[..., None], axis=1)
    x_BECD = nn.with_logical_constraint(dispatched_BSD.reshape(batch, experts, slots, d_model),
                                        ('expert_batch', 'expert', None, 'embed'))

    def expert_weight(name, shape, names):
      return layers.weight(self, name, (experts, *shape), ('expert', *names),
                           self.expert_init_std).astype(dtype)
    gate_EDF = expert_weight('gate', (d_model, self.mlp_dim), ('embed', 'mlp'))
    up_EDF = expert_weight('up', (d_model, self.mlp_dim), ('embed', 'mlp'))
    down_EFD = expert_weight('down', (self.mlp_dim, d_model), ('mlp', 'embed'))
    hidden_BECF = (nn.silu(jnp.einsum('becd,edf->becf', x_BECD, gate_EDF))
                   * jnp.einsum('becd,edf->becf', x_BECD, up_EDF))
    hidden_BECF = nn.with_logical_constraint(hidden_BECF, ('expert_batch', 'expert', None, 'mlp'))
    y_BECD = jnp.einsum('becf,efd->becd', hidden_BECF, down_EFD)
    y_BECD = nn.with_logical_constraint(y_BECD, ('expert_batch', 'expert', None, 'embed'))

    y_BSD = jnp.concatenate([y_BECD.reshape(batch, trash, d_model),
                             jnp.zeros((batch, 1, d_model), y_BECD.dtype)], axis=1)
    y_BSD = nn.with_logical_constraint(y_BSD, ('batch', None, 'embed'))
    y_BLKD = jnp.take_along_axis(y_BSD, slot_BLK.reshape(batch, -1)[..., None], axis=1).reshape(
        batch, length, top_k, d_model)
    out_BLD = jnp.einsum('blkd,blk->bld', y_BLKD, (gates_BLK * kept_BLK).astype(dtype))

    valid_f = valid_BL.astype(jnp.float32)
    log_z_BL = jax.nn.logsumexp(logits_BLE, axis=-1)
    entropy_BL = -jnp.sum(probs_BLE * jnp.log(jnp.maximum(probs_BLE, 1e-30)), axis=-1)
    self.sow('intermediates', 'router', {
        'counts': jnp.sum(chosen_BLKE, axis=(1, 2)).astype(jnp.float32),
        'prob_sums': jnp.einsum('ble,bl->be', probs_BLE, valid_f),
        'tokens': jnp.sum(valid_f, axis=1),
        'dropped': jnp.sum(valid_BL[..., None] & ~kept_BLK, axis=(1, 2)).astype(jnp.float32),
        'z_sums': jnp.sum(jnp.square(log_z_BL) * valid_f, axis=1),
        'entropy_sums': jnp.sum(entropy_BL * valid_f, axis=1),
    })
    if self.is_mutable_collection('pathways') and not self.is_initializing():
      weight_BE = jnp.einsum('blke,blk->be', chosen_BLKE.astype(jnp.float32), gates_BLK)
      self.sow('pathways', 'pathway', {
          'choices': choices_BLK.astype(jnp.int32),
          'embedding': jnp.einsum('be,de->bd', weight_BE, router_DE),
      })
    return out_BLD.astype(dtype)
