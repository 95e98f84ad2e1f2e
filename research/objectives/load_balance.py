"""Auxiliary losses of mixture-of-experts routers and the routing metrics.

Load-balancing loss (Switch Transformer, Fedus et al. 2021, arXiv 2101.03961), per MoE layer:
LBL = N_E * sum_i f_i * p_i, with f_i the fraction of the (token, choice) assignments routed to
expert i (a constant: no gradient) and p_i the mean router probability of expert i over the same
tokens (it carries the gradient); 1 at perfect balance. The logged and optimised value is the mean
over MoE layers, so it reads 1 at balance whatever the depth (Megatron sums the layers: scale the
coefficient by the number of MoE layers to match).

Where f is counted decides what is balanced (Qiu et al. 2025, "Demons in the Detail: On Implementing
Load Balancing Loss for Training Specialized Mixture-of-Expert Models", arXiv 2501.11873):

- `sequence`: f and p per sequence, averaged over sequences (Megatron's seq_aux_loss).
- `micro_batch`: f and p per group of `rows` consecutive rows of each gradient-accumulation
  micro-batch, averaged over groups. Megatron's aux_loss balances each device's micro-batch, which
  the default `rows` (0) reproduces: the rows one data-parallel shard holds. With 1-2 sequences per
  group it forces every sequence, a pure-code one too, to use all experts evenly.
- `global_batch`: f from the expert counts of the whole global batch: summed over the data-parallel
  shards (in this global-view program a sum over the batch axis, which XLA turns into one all-reduce
  of N_E numbers per layer) and over the micro-batches of the step so far (a running buffer that
  each optimizer step starts empty, as the paper's Megatron implementation keeps it); p stays the
  current micro-batch's. Balance is asked of the batch as a whole, so experts can specialise in
  domains.
- `none`: no balancing loss (the global-batch value is still logged).

The router z-loss (ST-MoE, Zoph et al. 2022, arXiv 2202.08906) is the mean over routed tokens of
logsumexp(router logits)^2, also averaged over MoE layers.

Both enter the step's loss as micro-batch means times the micro-batch's loss weight, so after the
step divides by the total weight each is a weighted mean over micro-batches, as cross-entropy is.
"""

import re

import jax
import jax.numpy as jnp
import ml_collections

SCOPES = ('none', 'sequence', 'micro_batch', 'global_batch')
_PER_EXPERT = ('counts', 'prob_sums')


def _natural(key: str):
  """Sort key that puts layers_2 before layers_10."""
  return [int(part) if part.isdigit() else part for part in re.split(r'(\d+)', key)]


def sown(collection, name: str) -> list:
  """Every value sown under `name` in a collection's tree, in depth order.

  Sub-modules are visited in natural key order (layers_2 before layers_10, block_0 before block_1),
  which is depth order within a stack. A value from a scanned stack carries a leading layer axis.
  """
  found = []

  def visit(tree):
    for key in sorted(tree, key=_natural):
      if key == name:
        found.extend(tree[key])  # sow keeps a tuple of the values sown
      elif hasattr(tree[key], 'keys'):
        visit(tree[key])

  visit(collection)
  return found


def router_stats(intermediates) -> dict | None:
  """The `router` statistics every MoE layer sowed (research/model/moe.py), in depth order.

  Returns {name: [M, B, E] or [M, B]} over the M MoE layers (a scanned stack sows them with a
  leading layer axis, unscanned layers one by one), or None when the model has no MoE layer.
  """
  found = sown(intermediates, 'router')
  if not found:
    return None

  def stack(name):
    trailing = 2 if name in _PER_EXPERT else 1  # [B, E] or [B]
    return jnp.concatenate([s[name].reshape(-1, *s[name].shape[-trailing:]) for s in found])
  return {name: stack(name) for name in found[0]}


def _balance(f_XE, p_XE):
  """N_E * sum_i f_i p_i for each leading index."""
  return f_XE.shape[-1] * jnp.sum(f_XE * p_XE, axis=-1)


def _grouped_balance(stats: dict, rows: int, top_k: int):
  """The LBL of groups of `rows` consecutive rows, averaged over the groups with tokens, [M]."""
  layers, batch, _ = stats['counts'].shape
  group = lambda x: jnp.sum(x.reshape(layers, batch // rows, rows, *x.shape[2:]), axis=2)
  counts_MGE, prob_sums_MGE, tokens_MG = (group(stats[k])
                                          for k in ('counts', 'prob_sums', 'tokens'))
  tokens = jnp.maximum(tokens_MG, 1.0)[..., None]
  value_MG = _balance(jax.lax.stop_gradient(counts_MGE) / (top_k * tokens), prob_sums_MGE / tokens)
  held = (tokens_MG > 0).astype(jnp.float32)
  return jnp.sum(value_MG * held, axis=1) / jnp.maximum(jnp.sum(held, axis=1), 1.0)


def global_balance(stats: dict, top_k: int, buffer: dict):
  """The global-batch LBL per layer [M] and the buffer with this micro-batch's counts added.

  `buffer` holds {'counts': [M, E], 'tokens': [M]} of the step's earlier micro-batches (zeros for
  the first).
  """
  buffer = {'counts': buffer['counts'] + jax.lax.stop_gradient(jnp.sum(stats['counts'], axis=1)),
            'tokens': buffer['tokens'] + jnp.sum(stats['tokens'], axis=1)}
  f_ME = buffer['counts'] / (top_k * jnp.maximum(buffer['tokens'], 1.0)[:, None])
  tokens_M = jnp.maximum(jnp.sum(stats['tokens'], axis=1), 1.0)
  p_ME = jnp.sum(stats['prob_sums'], axis=1) / tokens_M[:, None]
  return _balance(f_ME, p_ME), buffer


def group_rows(train_config: ml_collections.ConfigDict, data_parallel: int) -> int:
  """The micro_batch scope's group size: `train.moe_balance_rows`, or when 0 the rows of a
  micro-batch that one of the `data_parallel` shards holds."""
  micro_batch = train_config.batch_size // train_config.micro_batches
  return train_config.moe_balance_rows or micro_batch // data_parallel


def balance_loss(stats: dict, scope: str, rows: int, top_k: int, buffer: dict):
  """The load-balancing loss at `scope`, mean over MoE layers, and the updated global buffer.

  `rows` is the micro_batch scope's group size (`group_rows`); `sequence` groups single rows; for
  `none` the value is the global-batch one (to log; the caller does not optimise it).
  """
  global_M, buffer = global_balance(stats, top_k, buffer)
  group = {'sequence': 1, 'micro_batch': rows}.get(scope)
  if group:
    return jnp.mean(_grouped_balance(stats, group, top_k)), buffer
  return jnp.mean(global_M), buffer


def empty_buffer(layers: int, experts: int) -> dict:
  """The global-batch buffer of an optimizer step's first micro-batch: no counts yet."""
  return {'counts': jnp.zeros((layers, experts), jnp.float32),
          'tokens': jnp.zeros((layers,), jnp.float32)}


def aux_sums(stats: dict, weight_sum, train_config: ml_collections.ConfigDict, rows: int,
             top_k: int, buffer: dict):
  """The router losses of one micro-batch in sum form, with the totals the routing metrics need.

  Returns (sums, buffer): `moe_loss_sum` (what is differentiated: (lbl coefficient * LBL unless the
  scope is none + z coefficient * router z-loss) * weight_sum), `moe_lbl_sum`, `moe_z_sum`, and
  per layer `moe_counts` [M, E], `moe_tokens`, `moe_dropped`, `moe_entropy` [M], all summed over
  the micro-batch's rows.
  """
  lbl, buffer = balance_loss(stats, train_config.moe_balance, rows, top_k, buffer)
  totals = {f'moe_{name}': jnp.sum(stats[key], axis=1) for name, key in (
      ('counts', 'counts'), ('tokens', 'tokens'), ('dropped', 'dropped'),
      ('entropy', 'entropy_sums'))}
  z_loss = jnp.mean(jnp.sum(stats['z_sums'], axis=1) / jnp.maximum(totals['moe_tokens'], 1.0))
  balance_coefficient = 0.0 if train_config.moe_balance == 'none' else train_config.moe_lbl
  loss = (balance_coefficient * lbl + train_config.moe_z_loss * z_loss) * weight_sum
  return {'moe_loss_sum': loss, 'moe_lbl_sum': lbl * weight_sum, 'moe_z_sum': z_loss * weight_sum,
          **totals}, buffer


def expert_loads(counts_ME):
  """The fraction of each layer's assignments that went to each expert, [M, E] (rows sum to 1)."""
  return counts_ME / jnp.maximum(jnp.sum(counts_ME, axis=-1, keepdims=True), 1.0)


def load_entropy(counts_ME):
  """The entropy (nats) of each layer's expert-load distribution, averaged over layers: log N_E
  when every expert gets the same share, lower when the tokens concentrate on few experts."""
  loads_ME = expert_loads(counts_ME)
  return jnp.mean(-jnp.sum(loads_ME * jnp.log(jnp.maximum(loads_ME, 1e-30)), axis=-1))


def layer_loads(prefix: str, counts_ME) -> dict:
  """{`prefix`layer_<m>/expert_<e>: load} for every MoE layer m and expert e."""
  loads_ME = expert_loads(counts_ME)
  return {f'{prefix}layer_{m}/expert_{e}': loads_ME[m, e]
          for m in range(loads_ME.shape[0]) for e in range(loads_ME.shape[1])}


def assignment_metrics(prefix: str, counts_ME, dropped_M) -> dict:
  """`prefix`dropped_fraction, the share of the assignments `counts_ME` that were dropped
  (`dropped_M` of them per layer), and every expert's load per layer (`layer_loads`)."""
  return {f'{prefix}dropped_fraction': jnp.sum(dropped_M) / jnp.maximum(jnp.sum(counts_ME), 1.0),
          **layer_loads(prefix, counts_ME)}


def moe_metrics(sums: dict) -> dict:
  """The step's routing metrics from the summed `aux_sums` of its micro-batches.

  `moe/lbl` and `moe/router_z_loss` per token of loss weight (the loss terms before their
  coefficients); `moe/dropped_fraction` of the assignments; `moe/router_entropy`, the mean entropy
  of a token's router distribution (nats); `moe/max_load`, N_E times the largest expert load,
  averaged over layers (1 = balanced, N_E = one expert takes all); and the load of every expert of
  every layer.
  """
  weight = jnp.maximum(sums['weight_sum'], 1.0)
  counts_ME = sums['moe_counts']
  tokens = jnp.maximum(jnp.sum(sums['moe_tokens']), 1.0)
  return {
      'moe/lbl': sums['moe_lbl_sum'] / weight,
      'moe/router_z_loss': sums['moe_z_sum'] / weight,
      'moe/router_entropy': jnp.sum(sums['moe_entropy']) / tokens,
      'moe/max_load': jnp.mean(counts_ME.shape[-1] * jnp.max(expert_loads(counts_ME), axis=-1)),
      **assignment_metrics('moe/', counts_ME, sums['moe_dropped']),
  }
