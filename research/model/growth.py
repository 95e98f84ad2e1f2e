"""Function-preserving growth of a decoder's parameters into a larger decoder's (`init.grow`).

bert2BERT (Chen et al. 2022, "bert2BERT: Towards Reusable Pretrained Language Models", arXiv
2110.07143) starts a large model from a small pretrained one by function-preserving initialisation
(FPI), the widening of Net2Net (Chen et al. 2016, "Net2Net: Accelerating Learning via Knowledge
Transfer", arXiv 1511.05641): a new unit copies an old unit's incoming weights, and the outgoing
weights of the old unit and its copies are divided by their number, so the layer's output is
unchanged. Here:

- MLP width (`mlp_dim` F -> F'): new hidden units copy old units' columns of `gate` and `up` (and
  their biases); the `down` rows of every copied unit are divided by its number of copies. Exact
  for any elementwise activation, SwiGLU's silu(gate) * up included.
- Heads (`num_heads` H -> H', `head_dim` fixed): new query heads copy old heads' `query` weights
  and the `out` rows of each copied head are divided likewise. Key and value heads are copied with
  their query heads when there are as many (num_kv_heads=0 on both sides); with a fixed number G
  of key and value heads (grouped-query attention), each group's query heads grow from that
  group's own heads, so every head still reads its key and value head.
- Depth (`num_layers` L -> L'): bert2BERT stacks copies of the small model's layers; the
  function-preserving variant used here inserts copies whose attention `out` and MLP `down`
  projections (and their biases) are zero, so each adds nothing to the residual stream at first.
  The new layers are interleaved: old layer l is followed by its own copies, the L' - L copies
  spread evenly over the old layers (new copy j belongs to old layer floor(j * L / (L' - L))).
  Their inner weights (norms, query, key, value, gate, up) are the old layer's, so they are not
  dead: the zero projections get a gradient from the first step.

The copied units are drawn with numpy's generator seeded by the run's seed, one draw shared by all
layers: every old unit is copied equally often and the remainder is a random choice without
repetition. A caveat of FPI that Net2Net notes: a unit and its copies have equal incoming and
equal outgoing weights, hence equal gradients and equal Adam updates, so they stay copies unless
something breaks the symmetry. `noise` (init.grow_noise) does it as Net2Net does: each copy's
incoming weights (not the original unit's) get Gaussian noise of `noise` times that parameter's
standard deviation, so the function is kept only approximately (exactly at 0, the default).
bert2BERT's AKI (new units' weights from the next layer) is not implemented.

d_model cannot grow here: every norm averages over it, so no copy of embedding dimensions keeps
the function. Everything is on parameter trees (a decoder's, scanned `layers` or unscanned
`layers_0`, `layers_1`, ...); `source_config` reads the small model's sizes from a checkpoint.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from research import errors
from research.model import transformer

GROWN = ('num_layers', 'num_heads', 'mlp_dim')
_ZEROED = {'attention': ('out', 'out_bias'), 'mlp': ('down', 'down_bias')}


def source_config(saved: dict, config: transformer.ModelConfig, where: str
                  ) -> transformer.ModelConfig:
  """`config` with the layers, heads, key and value heads, MLP width and layer layout of `saved`
  (a checkpoint's parameters as (shape, dtype) leaves, research/checkpoint.saved_shapes): the
  model it holds, which `grow` grows into `config`. Raises UserError naming the model.* key where
  the checkpoint is not a smaller model of the same kind."""
  scanned = 'layers' in saved
  count = sum(name.startswith('layers_') for name in saved)
  if not (scanned or count) or 'embedding' not in saved:
    raise errors.UserError(f'{where} holds no decoder (no layers); init.grow grows a decoder '
                           "(model.architecture='decoder') into a larger decoder.")
  block = saved['layers' if scanned else 'layers_0']
  try:
    vocab, d_model = saved['embedding'][0]
    *_, heads, head_dim = block['attention']['query'][0]
    kv_heads = block['attention']['key'][0][-2]
    mlp_dim = block['mlp']['up'][0][-1]
  except (KeyError, TypeError, ValueError) as error:  # another architecture's tree
    raise errors.UserError(f'{where} holds no dense decoder (its layers lack {error}); init.grow '
                           'grows a decoder without mixture-of-experts layers.') from error
  sizes = {'vocab_size': vocab, 'd_model': d_model, 'head_dim': head_dim,
           'num_layers': block['attention']['query'][0][0] if scanned else count,
           'num_heads': heads, 'mlp_dim': mlp_dim}
  grows = ', '.join(f'model.{key}' for key in GROWN)
  for key, size in sizes.items():
    now = getattr(config, key)
    if key not in GROWN and size != now:
      why = (' (every norm averages over d_model, so growing it cannot keep the function)'
             if key == 'd_model' else '')
      raise errors.UserError(f'{where}: model.{key} is {size} in the checkpoint but {now} in the '
                             f'config; init.grow grows {grows} only{why}. Set model.{key}={size}.')
    if size > now:
      raise errors.UserError(f'{where}: model.{key} is {size} in the checkpoint but {now} in the '
                             f'config; init.grow grows a model, it does not shrink one.')
  if not (kv_heads == heads and config.kv_heads == config.num_heads
          or kv_heads == config.kv_heads):
    raise errors.UserError(
        f'{where}: the checkpoint has {kv_heads} key and value heads for {heads} query heads, the '
        f'config {config.kv_heads} for {config.num_heads} (model.num_kv_heads='
        f'{config.num_kv_heads}); init.grow grows num_heads with the key and value heads either '
        'as many as the query heads on both sides (num_kv_heads=0) or unchanged.')
  return dataclasses.replace(config, num_layers=sizes['num_layers'], num_heads=heads,
                             num_kv_heads=0 if kv_heads == heads else kv_heads,
                             mlp_dim=sizes['mlp_dim'], scan_layers=scanned)


def copies(old: int, new: int, rng: np.random.Generator) -> np.ndarray:
  """The old unit each of `new` units copies: units 0..old-1 themselves, then every old unit
  equally often, the remainder chosen at random without repetition."""
  extra = new - old
  return np.concatenate([np.tile(np.arange(old), 1 + extra // old),
                         rng.choice(old, extra % old, replace=False)])


def widen(tree: dict, names: dict, sources: np.ndarray, split: tuple[str, int], noise: float = 0.0,
          key=None) -> dict:
  """Net2Net's widening of one module's parameters (any leading axes, e.g. the scanned layers):
  `names` maps each incoming parameter to the axis that indexes the units, which take
  `sources`; the outgoing parameter `split` (name, axis) takes them too, divided by each source's
  number of copies. Parameters named in neither are kept. With `noise` > 0 each copy's incoming
  weights (every unit but a source's first occurrence) get N(0, (noise std(param))^2) from `key`."""
  counts = np.bincount(sources)[sources]
  is_copy = np.ones(len(sources), bool)
  is_copy[np.unique(sources, return_index=True)[1]] = False
  name, axis = split
  shape = [1] * tree[name].ndim
  shape[axis] = len(sources)
  grown = {}
  for i, (param, value) in enumerate(sorted(tree.items())):
    if param not in names:
      grown[param] = value
      continue
    value = jnp.take(value, sources, axis=names[param])
    if noise:
      mask = np.moveaxis(is_copy.reshape(-1, *[1] * (value.ndim - 1)), 0, names[param])
      draw = jax.random.normal(jax.random.fold_in(key, i), value.shape, value.dtype)
      value = value + noise * jnp.std(tree[param]) * draw * mask
    grown[param] = value
  grown[name] = jnp.take(tree[name], sources, axis=axis) / counts.reshape(shape)
  return grown


def head_copies(old: transformer.ModelConfig, new: transformer.ModelConfig,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(the old query head each new query head copies, the old key and value head each new one
  copies). With a fixed number G of key and value heads the query heads grow within each group
  (query head h reads key head h // (H / G), layers.Attention)."""
  if old.kv_heads == new.kv_heads:
    group, grown = old.num_heads // old.kv_heads, new.num_heads // new.kv_heads
    query = np.concatenate([g * group + copies(group, grown, rng) for g in range(old.kv_heads)])
    return query, np.arange(old.kv_heads)
  query = copies(old.num_heads, new.num_heads, rng)
  return query, query


def widen_block(block: dict, old: transformer.ModelConfig, new: transformer.ModelConfig,
                seed: int, noise: float = 0.0) -> dict:
  """A layer's parameters (or a stack's, layers first) with `new`'s heads and MLP width: FPI, the
  copies' incoming weights perturbed by `noise` (`widen`)."""
  rng = np.random.default_rng(seed)
  query, kv = head_copies(old, new, rng)
  hidden = copies(old.mlp_dim, new.mlp_dim, rng)
  attention_key, mlp_key = jax.random.split(jax.random.key(seed))
  attention = widen(block['attention'], {'query': -2, 'query_bias': -2}, query, ('out', -3),
                    noise, attention_key)
  attention.update({name: jnp.take(attention[name], kv, axis=-2)
                    for name in ('key', 'value', 'key_bias', 'value_bias') if name in attention})
  mlp = widen(block['mlp'], {'gate': -1, 'up': -1, 'gate_bias': -1, 'up_bias': -1}, hidden,
              ('down', -2), noise, mlp_key)
  return {**block, 'attention': attention, 'mlp': mlp}


def layer_copies(old: int, new: int) -> tuple[np.ndarray, np.ndarray]:
  """(the old layer each of `new` layers copies, whether it is a new one): each old layer followed
  by its copies, the new - old copies spread evenly over the old layers."""
  owners = np.arange(new - old) * old // (new - old) if new > old else np.zeros(0, int)
  sources = np.repeat(np.arange(old), 1 + np.bincount(owners, minlength=old))
  return sources, np.concatenate([[False], sources[1:] == sources[:-1]])


def deepen(stack: dict, old: int, new: int) -> dict:
  """A scanned stack of `old` layers as `new`: copies interleaved (`layer_copies`), each with its
  attention `out` and MLP `down` projections zero, so it passes the residual stream through."""
  sources, added = layer_copies(old, new)

  def layer(path, x):
    x = jnp.take(x, sources, axis=0)
    module, name = (getattr(key, 'key', None) for key in path[-2:])
    if name in _ZEROED.get(module, ()):
      x = jnp.where(added.reshape(-1, *[1] * (x.ndim - 1)), 0, x)
    return x
  return jax.tree_util.tree_map_with_path(layer, stack)


def grow(params: dict, old: transformer.ModelConfig, new: transformer.ModelConfig,
         seed: int, noise: float = 0.0) -> dict:
  """The parameters of decoder `old` grown into decoder `new`'s (same vocabulary, d_model and
  head_dim; more or as many layers, heads and MLP units), computing the same function: widened by
  FPI (`widen_block`, the copies perturbed by `noise`), deepened by zero-output copies
  (`deepen`). `params` are in `old`'s layout
  (scanned or not), the result in `new`'s."""
  if old.scan_layers:
    stack = params['layers']
  else:
    stack = jax.tree.map(lambda *layers: jnp.stack(layers),
                         *[params[f'layers_{i}'] for i in range(old.num_layers)])
  stack = deepen(widen_block(stack, old, new, seed, noise), old.num_layers, new.num_layers)
  rest = {name: value for name, value in params.items() if not name.startswith('layers')}
  grown = {**rest, 'layers': stack}
  return grown if new.scan_layers else transformer.unscan_params(grown, new)
