"""Decoder-only Transformer: pre-norm blocks of attention and SwiGLU, scanned over layers.

The architecture follows the common LLaMA-style recipe (Touvron et al. 2023, arXiv 2302.13971):
RMSNorm before each sub-layer, rotary positions, SwiGLU MLP, no biases. Parameters are float32;
computation runs in `config.dtype` (float32 or bfloat16); logits and softmax are float32.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from research.model import layers

REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model's hyper-parameters; built from `config.model` by `from_config`."""
  vocab_size: int = 384
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  head_dim: int = 64
  mlp_dim: int = 1024
  rope_base: float = 10000.0
  qk_norm: bool = False
  tie_embeddings: bool = True
  dtype: str = 'float32'
  remat: str = 'none'
  scan_layers: bool = True
  dropout_rate: float = 0.0
  norm_eps: float = 1e-6
  init_std: float = 0.02

  @classmethod
  def from_config(cls, model_config: ml_collections.ConfigDict) -> 'ModelConfig':
    return cls(**model_config.to_dict())

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]


class Block(nn.Module):
  """One pre-norm Transformer layer. Returns (x, None) so that it can be scanned."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BLD, mask_B1LL, sin_BLk, cos_BLk, deterministic: bool):
    c, dtype = self.config, self.config.compute_dtype
    x_BLD = nn.with_logical_constraint(x_BLD, ('batch', 'length', 'embed'))
    h_BLD = layers.RMSNorm(c.norm_eps, dtype, name='attention_norm')(x_BLD)
    h_BLD = layers.Attention(c.num_heads, c.head_dim, c.qk_norm, c.norm_eps, c.init_std, dtype,
                             name='attention')(h_BLD, mask_B1LL, sin_BLk, cos_BLk)
    x_BLD = x_BLD + nn.Dropout(c.dropout_rate)(h_BLD, deterministic=deterministic)
    h_BLD = layers.RMSNorm(c.norm_eps, dtype, name='mlp_norm')(x_BLD)
    h_BLD = layers.SwiGLU(c.mlp_dim, c.init_std, dtype, name='mlp')(h_BLD)
    x_BLD = x_BLD + nn.Dropout(c.dropout_rate)(h_BLD, deterministic=deterministic)
    return x_BLD, None


def _block_class(config: ModelConfig):
  if config.remat == 'none':
    return Block
  return nn.remat(Block, policy=REMAT_POLICIES[config.remat], prevent_cse=not config.scan_layers,
                  static_argnums=(5,))


class Decoder(nn.Module):
  """Decoder-only language model: token ids [B, L] -> float32 logits [B, L, V].

  `segment_ids` keep packed documents apart (0 marks padding); `positions` restart in each
  segment; `prefix` (bool [B, L]) marks a bidirectional prefix for prefix-LM objectives.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, inputs_BL, segment_ids_BL, positions_BL, prefix_BL=None,
               deterministic: bool = True):
    c, dtype = self.config, self.config.compute_dtype
    vocab_shape, vocab_names = (c.vocab_size, c.d_model), ('vocab', 'embed')
    embedding_VD = layers.weight(self, 'embedding', vocab_shape, vocab_names, c.init_std)
    x_BLD = jnp.take(embedding_VD, inputs_BL, axis=0).astype(dtype)
    mask_B1LL = layers.attention_mask(segment_ids_BL, prefix_BL)
    sin_BLk, cos_BLk = layers.rotary_tables(positions_BL, c.head_dim, c.rope_base)

    block = _block_class(c)
    if c.scan_layers:
      stack = nn.scan(block, variable_axes={'params': 0}, split_rngs={'params': True, 'dropout': True},
                      in_axes=(nn.broadcast,) * 4, length=c.num_layers,
                      metadata_params={nn.PARTITION_NAME: 'layers'})
      x_BLD, _ = stack(c, name='layers')(x_BLD, mask_B1LL, sin_BLk, cos_BLk, deterministic)
    else:
      for i in range(c.num_layers):
        x_BLD, _ = block(c, name=f'layers_{i}')(x_BLD, mask_B1LL, sin_BLk, cos_BLk, deterministic)

    x_BLD = layers.RMSNorm(c.norm_eps, dtype, name='final_norm')(x_BLD)
    if c.tie_embeddings:
      unembed_VD = embedding_VD
    else:
      unembed_VD = layers.weight(self, 'unembedding', vocab_shape, vocab_names, c.init_std)
    # The output layer stored [V, D] with einsum 'bld,vd->blv' is the fast layout on CPU and TPU.
    logits_BLV = jnp.einsum('bld,vd->blv', x_BLD, unembed_VD.astype(dtype),
                            preferred_element_type=jnp.float32)
    return nn.with_logical_constraint(logits_BLV, ('batch', 'length', 'vocab'))


def matmul_params(config: ModelConfig) -> int:
  """Parameters that take part in a matmul per token: every layer's projections and the output layer.

  The input embedding is a lookup, not a matmul, so only one [V, D] matrix is counted.
  """
  attention = 4 * config.d_model * config.num_heads * config.head_dim
  mlp = 3 * config.d_model * config.mlp_dim
  return config.num_layers * (attention + mlp) + config.vocab_size * config.d_model


def flops_per_token(config: ModelConfig, seq_len: int, causal: bool = True) -> float:
  """Training FLOPs per token: 6 * matmul params + 12 * layers * seq * H*K, halved attention if causal.

  The forward pass costs 2 FLOPs per matmul parameter and backward twice that (6N, Kaplan et al.
  2020, arXiv 2001.08361); attention scores and values add 2 * 2 * L * H*K per layer forward, so
  12 * layers * L * H*K for training (PaLM, Chowdhery et al. 2022, arXiv 2204.02311, appendix B).
  A causal mask skips half of the score matrix, so causal attention counts at half, as MaxText does.
  """
  attention = 12 * config.num_layers * seq_len * config.num_heads * config.head_dim
  return 6 * matmul_params(config) + (attention / 2 if causal else attention)
