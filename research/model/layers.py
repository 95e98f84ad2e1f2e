"""Transformer building blocks in Flax linen, every parameter with logical axis names.

Logical axes: `embed` (model dim D), `mlp` (hidden dim F), `heads` (H), `kv` (head dim K),
`vocab` (V), `layers` (the scanned layer axis). The mesh rules in config map them to mesh axes.
"""

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
  """LayerNorm with a learned scale and no bias, computed in float32 (used for qk-layernorm)."""
  eps: float = 1e-6
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    scale = self.param('scale', nn.with_logical_partitioning(nn.initializers.ones, ('kv',)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x32 - mean), axis=-1, keepdims=True)
    return ((x32 - mean) * jax.lax.rsqrt(var + self.eps) * scale).astype(self.dtype)


def rotary_tables(positions_BL, head_dim: int, base: float):
  """sin and cos tables [B, L, K/2] for rotary position embeddings.

  RoFormer (Su et al. 2021, arXiv 2104.09864). Positions restart at 0 in every packed segment.
  """
  fraction = jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim
  inv_freq = base ** -fraction
  angles_BLk = positions_BL.astype(jnp.float32)[..., None] * inv_freq
  return jnp.sin(angles_BLk), jnp.cos(angles_BLk)


def apply_rotary(x_BLHK, sin_BLk, cos_BLk):
  """Rotates the two halves of each head's vector by the position's angles (float32)."""
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


def segment_mask(query_segment_ids_BL, key_segment_ids_BS):
  """Boolean mask [B, 1, L, S]: query q may attend key k of its own segment, in either direction.

  The encoder's bidirectional self-attention and the decoder's attention to the encoder (Vaswani et
  al. 2017, arXiv 1706.03762) use it; a packed encoder-decoder example carries the same segment id
  in both rows. Padding (segment 0) attends only to padding.
  """
  return (query_segment_ids_BL[:, :, None] == key_segment_ids_BS[:, None, :])[:, None]


def weight(module: nn.Module, name: str, shape: tuple[int, ...], names: tuple[str, ...], std: float):
  """A float32 weight with logical axis names, initialised from N(0, std^2)."""
  return module.param(name, nn.with_logical_partitioning(nn.initializers.normal(std), names), shape,
                      jnp.float32)


class Attention(nn.Module):
  """Multi-head attention with optional rotary embeddings and qk-layernorm, float32 softmax.

  Self-attention by default; given `memory_BSD`, cross-attention: queries from x_BLD, keys and
  values from the memory (the encoder's output, Vaswani et al. 2017, arXiv 1706.03762). Rotary
  embeddings apply where sin and cos tables are given (self-attention only: in cross-attention the
  two sides' positions count different sequences).
  qk-layernorm normalises queries and keys per head before the dot product, which stops attention
  logit growth at high learning rates (Wortsman et al. 2023, arXiv 2309.14322; Dehghani et al. 2023).
  """
  num_heads: int
  head_dim: int
  qk_norm: bool = False
  norm_eps: float = 1e-6
  init_std: float = 0.02
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BLD, mask_B1LS, sin_BLk=None, cos_BLk=None, memory_BSD=None):
    d_model, dtype = x_BLD.shape[-1], self.dtype
    shape, names = (d_model, self.num_heads, self.head_dim), ('embed', 'heads', 'kv')
    memory_BSD = x_BLD if memory_BSD is None else memory_BSD
    kernel = lambda name: weight(self, name, shape, names, self.init_std).astype(dtype)
    proj = lambda name, y_BSD: jnp.einsum('bsd,dhk->bshk', y_BSD, kernel(name))
    q_BLHK = proj('query', x_BLD)
    k_BSHK, v_BSHK = proj('key', memory_BSD), proj('value', memory_BSD)
    if self.qk_norm:
      q_BLHK = LayerNorm(self.norm_eps, dtype, name='query_norm')(q_BLHK)
      k_BSHK = LayerNorm(self.norm_eps, dtype, name='key_norm')(k_BSHK)
    if sin_BLk is not None:
      q_BLHK = apply_rotary(q_BLHK, sin_BLk, cos_BLk)
      k_BSHK = apply_rotary(k_BSHK, sin_BLk, cos_BLk)
    q_BLHK = q_BLHK * jnp.asarray(self.head_dim ** -0.5, dtype)
    logits_BHLS = jnp.einsum('bqhk,bshk->bhqs', q_BLHK, k_BSHK, preferred_element_type=jnp.float32)
    logits_BHLS = jnp.where(mask_B1LS, logits_BHLS, jnp.finfo(jnp.float32).min)
    probs_BHLS = jax.nn.softmax(logits_BHLS, axis=-1).astype(dtype)
    out_BLHK = jnp.einsum('bhqs,bshk->bqhk', probs_BHLS, v_BSHK)
    out_BLHK = nn.with_logical_constraint(out_BLHK, ('batch', 'length', 'heads', 'kv'))
    out_HKD = weight(self, 'out', shape[1:] + shape[:1], ('heads', 'kv', 'embed'), self.init_std)
    return jnp.einsum('blhk,hkd->bld', out_BLHK, out_HKD.astype(dtype))


class SwiGLU(nn.Module):
  """Gated MLP with a SiLU gate (Shazeer 2020, "GLU Variants Improve Transformer", arXiv 2002.05202)."""
  mlp_dim: int
  init_std: float = 0.02
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x_BLD):
    d_model, dtype = x_BLD.shape[-1], self.dtype
    kernel = lambda name, shape, names: weight(self, name, shape, names, self.init_std).astype(dtype)
    gate_BLF = x_BLD @ kernel('gate', (d_model, self.mlp_dim), ('embed', 'mlp'))
    up_BLF = x_BLD @ kernel('up', (d_model, self.mlp_dim), ('embed', 'mlp'))
    hidden_BLF = nn.with_logical_constraint(nn.silu(gate_BLF) * up_BLF, ('batch', 'length', 'mlp'))
    return hidden_BLF @ kernel('down', (self.mlp_dim, d_model), ('mlp', 'embed'))
