"""Transformer building blocks in Flax linen, every parameter with logical axis names.

Logical axes: `embed` (model dim D), `mlp` (hidden dim F), `heads` (H), `kv` (head dim K),
`kv_heads` (G, the key and value heads of grouped-query attention when fewer than the query heads),
`vocab` (V), `layers` (the scanned layer axis). The mesh rules in config map them to mesh axes (a
logical axis without a rule is replicated).
"""

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class RMSNorm(nn.Module):
  """Root-mean-square layer norm (Zhang & Sennrich 2019, arXiv 1910.07467), computed in float32."""
  eps: float = 1e-6
  dtype: Dtype = jnp.float32
  axis_name: str | None = 'embed'

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (x32 * scale).astype(self.dtype)


class LayerNorm(nn.Module):
  """LayerNorm (Ba et al. 2016, arXiv 1607.06450) with a learned scale, computed in float32.

  Without a bias over the head dim `kv` for qk-layernorm (the default); with `use_bias` over `embed`
  as GPT-NeoX's pre-norms (`model.norm='layernorm'`).
  """
  eps: float = 1e-6
  dtype: Dtype = jnp.float32
  axis_name: str | None = 'kv'
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, (self.axis_name,)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    y32 = (x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale
    if self.use_bias:
      y32 = y32 + bias(self, 'bias', (x.shape[-1],), (self.axis_name,))
    return y32.astype(self.dtype)


def rotary_tables(positions_BL, head_dim: int, base: float):
  """sin and cos tables [B, L, K/2] for rotary position embeddings.

  RoFormer (Su et al. 2021, arXiv 2104.09864). Positions restart at 0 in every packed segment.
  """
  fraction = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  inv_freq = base ** -fraction
  angles_BLk = positions_BL.astype(jnp.float32)[..., None] * inv_freq
  return jnp.sin(angles_BLk), jnp.cos(angles_BLk)


def apply_rotary(x_BLHK, sin_BLk, cos_BLk):
  """Rotates the two halves of each head's vector by the position's angles (float32).

  The "rotate half" layout of GPT-NeoX and Hugging Face's Llama: dimension i pairs with i + R/2 of
  the R = 2 * k rotated dimensions. With tables for fewer dimensions than the head's (partial rotary,
  GPT-NeoX's rotary_pct), only the first R dimensions rotate and the rest pass unchanged.
  """
  rotary_dim = 2 * sin_BLk.shape[-1]
  if rotary_dim < x_BLHK.shape[-1]:
    rotated = apply_rotary(x_BLHK[..., :rotary_dim], sin_BLk, cos_BLk)
    return jnp.concatenate([rotated, x_BLHK[..., rotary_dim:]], axis=-1)
  x1, x2 = jnp.split(x_BLHK.astype(jnp.float32), 2, axis=-1)
  sin, cos = sin_BLk[:, :, None, :], cos_BLk[:, :, None, :]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BLHK.dtype)


def attention_mask(segment_ids_BL, prefix_BL=None):
  """Boolean mask [B, 1, L, L]: query q may attend key k.

  Causal, restricted to the same packed segment (documents never see each other). Where `prefix_BL`
  is true the tokens form a bidirectional prefix (prefix LM, Raffel et al. 2020, arXiv 1910.10683):
  prefix tokens see the whole prefix of their segment; later tokens see the prefix and what precedes.
  Padding (segment 0) attends only to padding, so no row is empty.
  """
  length = segment_ids_BL.shape[1]
  causal_LL = jnp.arange(length)[:, None] >= jnp.arange(length)[None, :]
  allowed_BLL = causal_LL[None]
  if prefix_BL is not None:
    allowed_BLL = allowed_BLL | (prefix_BL[:, :, None] & prefix_BL[:, None, :])
  return allowed_BLL[:, None] & segment_mask(segment_ids_BL, segment_ids_BL)


def cache_mask(positions_BL, cache_length: int, prefix_BL=None):
  """Boolean mask [B, 1, L, S] of queries over a key-value cache of S slots: query q may attend
  slot s <= its position (slot s holds the row's token at position s).

  The decoding counterpart of `attention_mask` for one sequence a row, fed a few tokens at a time
  (a prompt, then one token per step). Where `prefix_BL` is true (at the prompt), queries also see
  the whole prefix, the row's first sum(prefix_BL) slots: a bidirectional prefix as above.
  """
  allowed_BLS = jnp.arange(cache_length)[None, None, :] <= positions_BL[:, :, None]
  if prefix_BL is not None:
    prefix_length_B = jnp.sum(prefix_BL, axis=1)
    in_prefix_BS = jnp.arange(cache_length)[None, :] < prefix_length_B[:, None]
    allowed_BLS = allowed_BLS | (prefix_BL[:, :, None] & in_prefix_BS[:, None, :])
  return allowed_BLS[:, None]


def segment_mask(query_segment_ids_BL, key_segment_ids_BS):
  """Boolean mask [B, 1, L, S]: query q may attend key k of its own segment, in either direction.

  The encoder's bidirectional self-attention and the decoder's attention to the encoder (Vaswani et
  al. 2017, arXiv 1706.03762) use it; a packed encoder-decoder example carries the same segment id
  in both rows. Padding (segment 0) attends only to padding.
  """
  return (query_segment_ids_BL[:, :, None] == key_segment_ids_BS[:, None, :])[:, None]


QUANTS = ('none', 'int8', 'fp8')  # model.quant
_FP8_MAX = float(jnp.finfo(jnp.float8_e4m3fn).max)  # 448


def fake_quant(x, quant: str, axis: int):
  """x rounded to `quant`'s grid with one scale per slice along `axis` (the contracted axis), so
  the forward pass computes what an int8 / fp8 matmul would, and the gradient is x's
  (straight-through estimator). Quantisation-aware training as AQT does it (Abdolrashidi et al.
  2021, "Pareto-Optimal Quantized ResNet Is Mostly 4-bit", arXiv 2105.03536; the AQT library):
  int8 is symmetric, round(x / s) clipped to [-127, 127] times s with s = max|x| / 127; fp8 is
  E4M3 (Micikevicius et al. 2022, "FP8 Formats for Deep Learning", arXiv 2209.05433) with max|x|
  scaled to its largest value, 448."""
  if quant == 'none':
    return x
  top = jnp.max(jnp.abs(x), axis=axis, keepdims=True).astype(jnp.float32)
  grid_max = 127.0 if quant == 'int8' else _FP8_MAX
  scale = jnp.where(top > 0, top / grid_max, 1.0)
  scaled = x.astype(jnp.float32) / scale
  if quant == 'int8':
    rounded = jnp.clip(jnp.round(scaled), -127, 127)
  else:
    rounded = scaled.astype(jnp.float8_e4m3fn).astype(jnp.float32)
  quantised = (rounded * scale).astype(x.dtype)
  return x + jax.lax.stop_gradient(quantised - x)


def project(x, kernel, contract: int = 1, preferred_element_type=None, quant: str = 'none'):
  """x [..., I_1..I_c] times kernel [I_1..I_c, O_1..O_m] -> [..., O_1..O_m], as one 2-D matmul.

  The leading dimensions (batch, length) are flattened into the matmul's rows. The same product as
  an einsum over 3-D operands ('bld,df->blf') makes XLA:CPU copy the activation gradient into a
  transposed layout for every weight gradient, element by element with a large stride: on this
  repository's CPU the tiny benchmark's SwiGLU took 148 ms forward and backward that way and 61 ms
  as 2-D matmuls (docs/benchmarks.md). `quant` (model.quant) fake-quantises both operands first,
  a scale per row of x and per output column of the kernel (`fake_quant`).
  """
  lead, inner = x.shape[:x.ndim - contract], kernel.shape[:contract]
  rows_NI = fake_quant(x.reshape(-1, math.prod(inner)), quant, axis=1)
  kernel_IO = fake_quant(kernel.reshape(math.prod(inner), -1), quant, axis=0)
  out_NO = jnp.matmul(rows_NI, kernel_IO, preferred_element_type=preferred_element_type)
  return out_NO.reshape(*lead, *kernel.shape[contract:])


def weight(module: nn.Module, name: str, shape: tuple[int, ...], names: tuple[str, ...], std: float):
  """A float32 weight with logical axis names, initialised from N(0, std^2)."""
  return module.param(name, nn.with_logical_partitioning(nn.initializers.normal(std), names), shape,
                      jnp.float32)


def bias(module: nn.Module, name: str, shape: tuple[int, ...], names: tuple[str, ...]):
  """A float32 bias with logical axis names, initialised to zeros."""
  return module.param(name, nn.with_logical_partitioning(nn.initializers.zeros, names), shape,
                      jnp.float32)


class Attention(nn.Module):
  """Multi-head attention with optional rotary embeddings and qk-layernorm, float32 softmax.

  Self-attention by default; given `memory_BSD`, cross-attention: queries from x_BLD, keys and
  values from the memory (the encoder's output, Vaswani et al. 2017, arXiv 1706.03762). Rotary
  embeddings apply where sin and cos tables are given (self-attention only: in cross-attention the
  two sides' positions count different sequences).
  qk-layernorm normalises queries and keys per head before the dot product, which stops attention
  logit growth at high learning rates (Wortsman et al. 2023, arXiv 2309.14322; Dehghani et al. 2023).
  With `num_kv_heads` G < `num_heads` H, grouped-query attention (Ainslie et al. 2023, "GQA",
  arXiv 2305.13245): G key and value heads, query head h reading head h // (H / G) (as Hugging
  Face's Llama repeats them). `use_bias` adds biases to the four projections (GPT-NeoX).

  A caller that asks for the `monitors` collection (mutable=['monitors']) gets, per call, the
  largest attention logit q.k * `scale` over the batch, heads and attended positions
  (`attention_logit_max`): the attention-logit growth that precedes divergence at high learning
  rates (Wortsman et al. 2023, arXiv 2309.14322). Other callers compute nothing for it.

  Decoding (given `cache_index_B`): a key-value cache, the `cache` collection's `key` and `value`
  [B, S, G, K], S the key length of `mask_B1LS` (`cache_mask`), zeros when first made. The L new
  keys and values of row b are written at slots cache_index_B[b] ... + L - 1 and the queries attend
  the whole cache under the mask; keys are cached after rotary embeddings and qk-layernorm.
  """
  num_heads: int
  head_dim: int
  qk_norm: bool = False
  norm_eps: float = 1e-6
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  num_kv_heads: int = 0  # 0 = num_heads
  use_bias: bool = False
  quant: str = 'none'  # fake-quantised projections (`fake_quant`)
  scale: float | None = None  # the scores' factor; None = 1 / sqrt(head_dim) (muP: transformer.py)

  @nn.compact
  def __call__(self, x_BLD, mask_B1LS, sin_BLk=None, cos_BLk=None, memory_BSD=None,
               cache_index_B=None):
    d_model, dtype = x_BLD.shape[-1], self.dtype
    heads, kv_heads = self.num_heads, self.num_kv_heads or self.num_heads
    # Key and value heads shard like the query heads when there are as many.
    kv_name = 'heads' if kv_heads == heads else 'kv_heads'
    memory_BSD = x_BLD if memory_BSD is None else memory_BSD

    def proj(name, y_BSD, num, heads_name):
      kernel = weight(self, name, (d_model, num, self.head_dim), ('embed', heads_name, 'kv'),
                      self.init_std)
      out_BSNK = project(y_BSD, kernel.astype(dtype), quant=self.quant)
      if self.use_bias:
        out_BSNK = out_BSNK + bias(self, f'{name}_bias', (num, self.head_dim),
                                   (heads_name, 'kv')).astype(dtype)
      return out_BSNK

    q_BLHK = proj('query', x_BLD, heads, 'heads')
    k_BSGK = proj('key', memory_BSD, kv_heads, kv_name)
    v_BSGK = proj('value', memory_BSD, kv_heads, kv_name)
    if self.qk_norm:
      q_BLHK = LayerNorm(self.norm_eps, dtype, name='query_norm')(q_BLHK)
      k_BSGK = LayerNorm(self.norm_eps, dtype, name='key_norm')(k_BSGK)
    if sin_BLk is not None:
      q_BLHK = apply_rotary(q_BLHK, sin_BLk, cos_BLk)
      k_BSGK = apply_rotary(k_BSGK, sin_BLk, cos_BLk)
    if cache_index_B is not None:
      k_BSGK = _cached(self, 'key', k_BSGK, cache_index_B, mask_B1LS.shape[-1])
      v_BSGK = _cached(self, 'value', v_BSGK, cache_index_B, mask_B1LS.shape[-1])
    scale = self.head_dim ** -0.5 if self.scale is None else self.scale
    q_BLHK = q_BLHK * jnp.asarray(scale, dtype)
    # Heads before positions ([B, H, L, K]), so both products are plain batched matmuls: XLA:CPU
    # runs them about 20% faster forward and backward than the einsums over [B, L, H, K].
    batch, length = q_BLHK.shape[:2]
    q_BGRLK = q_BLHK.transpose(0, 2, 1, 3).reshape(batch, kv_heads, heads // kv_heads, length,
                                                   self.head_dim)
    k_BG1SK, v_BG1SK = (x_BSGK.transpose(0, 2, 1, 3)[:, :, None] for x_BSGK in (k_BSGK, v_BSGK))
    # Query head h = g * R + r reads key and value head g (grouped-query attention).
    logits_BHLS = jnp.matmul(q_BGRLK, k_BG1SK.swapaxes(-1, -2),
                             preferred_element_type=jnp.float32).reshape(batch, heads, length, -1)
    if self.is_mutable_collection('monitors') and not self.is_initializing():
      self.sow('monitors', 'attention_logit_max',
               jnp.max(jnp.where(mask_B1LS, logits_BHLS, -jnp.inf)))
    logits_BHLS = jnp.where(mask_B1LS, logits_BHLS, jnp.finfo(jnp.float32).min)
    probs_BGRLS = jax.nn.softmax(logits_BHLS, axis=-1).astype(dtype).reshape(
        batch, kv_heads, heads // kv_heads, length, -1)
    out_BLHK = jnp.matmul(probs_BGRLS, v_BG1SK).reshape(batch, heads, length, -1).transpose(
        0, 2, 1, 3)
    out_BLHK = nn.with_logical_constraint(out_BLHK, ('batch', 'length', 'heads', 'kv'))
    out_HKD = weight(self, 'out', (heads, self.head_dim, d_model), ('heads', 'kv', 'embed'),
                     self.init_std)
    out_BLD = project(out_BLHK, out_HKD.astype(dtype), contract=2, quant=self.quant)
    if self.use_bias:
      out_BLD = out_BLD + bias(self, 'out_bias', (d_model,), ('embed',)).astype(dtype)
    return out_BLD


def _cached(module: nn.Module, name: str, new_BLGK, index_B, length: int):
  """The cache `name` [B, length, G, K] of `module` with row b's new entries written at slots
  index_B[b] ... index_B[b] + L - 1."""
  batch, _, *rest = new_BLGK.shape
  cache = module.variable('cache', name, jnp.zeros, (batch, length, *rest), new_BLGK.dtype)
  write = jax.vmap(lambda cache_SGK, new_LGK, index: jax.lax.dynamic_update_slice_in_dim(
      cache_SGK, new_LGK, index, axis=0))
  cache.value = write(cache.value, new_BLGK, index_B)
  return cache.value


class SwiGLU(nn.Module):
  """Gated MLP with a SiLU gate (Shazeer 2020, "GLU Variants Improve Transformer", arXiv 2002.05202).

  `use_bias` adds biases to its three projections (Hugging Face Llama's mlp_bias).
  """
  mlp_dim: int
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  use_bias: bool = False
  quant: str = 'none'  # fake-quantised projections (`fake_quant`)

  @nn.compact
  def __call__(self, x_BLD):
    d_model = x_BLD.shape[-1]
    dense = functools.partial(_dense, self, use_bias=self.use_bias)
    gate_BLF = dense('gate', x_BLD, (d_model, self.mlp_dim), ('embed', 'mlp'))
    up_BLF = dense('up', x_BLD, (d_model, self.mlp_dim), ('embed', 'mlp'))
    hidden_BLF = nn.with_logical_constraint(nn.silu(gate_BLF) * up_BLF, ('batch', 'length', 'mlp'))
    return dense('down', hidden_BLF, (self.mlp_dim, d_model), ('mlp', 'embed'))


class GeluMLP(nn.Module):
  """Two-layer MLP with a GELU (Hendrycks & Gimpel 2016, arXiv 1606.08415), as in GPT-NeoX.

  `approximate` takes GELU's tanh approximation (Hugging Face's gelu_new) for the exact erf form.
  """
  mlp_dim: int
  init_std: float = 0.02
  dtype: Dtype = jnp.float32
  use_bias: bool = True
  approximate: bool = False
  quant: str = 'none'  # fake-quantised projections (`fake_quant`)

  @nn.compact
  def __call__(self, x_BLD):
    d_model = x_BLD.shape[-1]
    dense = functools.partial(_dense, self, use_bias=self.use_bias)
    hidden_BLF = nn.gelu(dense('up', x_BLD, (d_model, self.mlp_dim), ('embed', 'mlp')),
                         approximate=self.approximate)
    hidden_BLF = nn.with_logical_constraint(hidden_BLF, ('batch', 'length', 'mlp'))
    return dense('down', hidden_BLF, (self.mlp_dim, d_model), ('mlp', 'embed'))


def _dense(module, name: str, x_BLI, shape: tuple[int, int], names: tuple[str, str], use_bias: bool):
  """x_BLI @ the [I, O] weight `name` (+ the bias `name`_bias [O]), in the module's dtype."""
  dtype = module.dtype
  y_BLO = project(x_BLI, weight(module, name, shape, names, module.init_std).astype(dtype),
                  quant=module.quant)
  if use_bias:
    y_BLO = y_BLO + bias(module, f'{name}_bias', shape[1:], names[1:]).astype(dtype)
  return y_BLO
