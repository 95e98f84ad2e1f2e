"""Decoder-only and encoder-decoder Transformers: pre-norm blocks of attention and SwiGLU.

The decoder follows the common LLaMA-style recipe (Touvron et al. 2023, arXiv 2302.13971):
RMSNorm before each sub-layer, rotary positions, SwiGLU MLP, no biases. Switches in the config
reach the other families Hugging Face checkpoints come in (research/interop/hf_checkpoint.py): grouped-query
attention (`num_kv_heads`), LayerNorm with a bias (`norm`), biases (`attention_bias`, `mlp_bias`), a
GELU MLP (`mlp`), GPT-NeoX's parallel residual and partial rotary (`parallel_residual`,
`rotary_fraction`; Black et al. 2022, "GPT-NeoX-20B", arXiv 2204.06745) and an untied output layer
(`tie_embeddings`); their defaults are the recipe above. The encoder-decoder
(Vaswani et al. 2017, arXiv 1706.03762) is laid out as in T5 (Raffel et al. 2020, arXiv 1910.10683):
pre-norm, a final norm on each stack, one embedding shared by encoder, decoder and output layer;
it is built from the same blocks, with rotary positions in both self-attentions where T5 has a
relative bias. With `mup_base_width` > 0 the model is in the Maximal Update Parametrization
(muP; Yang et al. 2022, "Tensor Programs V", arXiv 2203.03466): see `ModelConfig.mup_multiplier`.
Both take one batch dict (`make_model` picks by `config.architecture`, `dummy_batch`
makes one to initialise with). Parameters are float32; computation runs in `config.dtype` (float32
or bfloat16); logits and softmax are float32. With `moe_experts` > 0, every `moe_every`-th layer's
MLP is a mixture of experts (research/model/moe.py; GShard and Switch replace every other one).
"""

import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from research import errors
from research.model import layers, moe

REMAT_POLICIES = {
    'none': None,
    'full': jax.checkpoint_policies.nothing_saveable,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
ARCHITECTURES = ('decoder', 'encoder_decoder')
NORMS = ('rmsnorm', 'layernorm')
MLPS = ('swiglu', 'gelu', 'gelu_tanh')


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model's hyper-parameters; built from `config.model` by `from_config`.

  `num_layers` counts the decoder's layers; an encoder-decoder's encoder has `num_encoder_layers`
  (0 = num_layers). research/defaults.py documents every field (`config.model`). A bad value of a
  switch raises a UserError naming its `model.` key when the config is built.
  """
  architecture: str = 'decoder'
  vocab_size: int = 384
  d_model: int = 256
  num_layers: int = 4
  num_encoder_layers: int = 0
  num_heads: int = 4
  num_kv_heads: int = 0
  head_dim: int = 64
  mlp_dim: int = 1024
  mlp: str = 'swiglu'
  norm: str = 'rmsnorm'
  attention_bias: bool = False
  mlp_bias: bool = False
  parallel_residual: bool = False
  rope_base: float = 10000.0
  rotary_fraction: float = 1.0
  qk_norm: bool = False
  tie_embeddings: bool = True
  dtype: str = 'float32'
  remat: str = 'dots_no_batch'
  scan_layers: bool = True
  dropout_rate: float = 0.0
  norm_eps: float = 1e-6
  init_std: float = 0.02
  moe_experts: int = 0
  moe_top_k: int = 2
  moe_capacity_factor: float = 1.25
  moe_every: int = 1
  moe_mlp_dim: int = 0
  moe_normalize_gates: bool = False
  quant: str = 'none'
  mup_base_width: int = 0
  mup_base_head_dim: int = 0

  def __post_init__(self):
    if self.norm not in NORMS:
      raise errors.UserError(f'model.norm={self.norm!r} is not a norm; choose one of {list(NORMS)}.')
    if self.quant not in layers.QUANTS:
      raise errors.UserError(f'model.quant={self.quant!r} is not a quantisation; choose one of '
                             f'{list(layers.QUANTS)}.')
    if self.mlp not in MLPS:
      raise errors.UserError(f'model.mlp={self.mlp!r} is not an MLP kind; choose one of {list(MLPS)}.')
    if self.num_kv_heads < 0 or self.num_kv_heads and self.num_heads % self.num_kv_heads:
      raise errors.UserError(f'model.num_kv_heads={self.num_kv_heads} must divide model.num_heads='
                             f'{self.num_heads} (0 = as many as num_heads).')
    if not 0 <= self.rotary_fraction <= 1 or self.rotary_dim % 2:
      raise errors.UserError(
          f'model.rotary_fraction={self.rotary_fraction} must be in [0, 1] and rotate an even number '
          f'of the head_dim={self.head_dim} dimensions (int(head_dim * rotary_fraction) = '
          f'{self.rotary_dim}).')
    if self.moe_experts < 0 or self.moe_experts and not 1 <= self.moe_top_k <= self.moe_experts:
      raise errors.UserError(f'model.moe_top_k={self.moe_top_k} must be between 1 and '
                             f'model.moe_experts={self.moe_experts} (0 experts = a dense model).')
    if self.moe_every < 1 or self.num_layers % self.moe_every or (
        self.architecture == 'encoder_decoder' and self.encoder_layers % self.moe_every):
      raise errors.UserError(f'model.moe_every={self.moe_every} must be >= 1 and divide the number '
                             f'of layers of each stack (num_layers={self.num_layers}).')
    if self.moe_capacity_factor < 0 or self.moe_mlp_dim < 0:
      raise errors.UserError(f'model.moe_capacity_factor={self.moe_capacity_factor} and '
                             f'model.moe_mlp_dim={self.moe_mlp_dim} must be >= 0 (0 = dropless; '
                             '0 = model.mlp_dim).')
    if not 0 <= self.mup_base_width <= self.d_model:
      raise errors.UserError(f'model.mup_base_width={self.mup_base_width} must be 0 (muP off) or '
                             f'the base width d0 of muP, 1 <= d0 <= model.d_model={self.d_model}.')
    if self.mup_base_head_dim and not (self.mup_base_width
                                       and 1 <= self.mup_base_head_dim <= self.head_dim):
      raise errors.UserError(f'model.mup_base_head_dim={self.mup_base_head_dim} must be 0 (= '
                             f'model.head_dim) or in [1, model.head_dim={self.head_dim}], and only '
                             'with muP on (model.mup_base_width > 0).')

  @classmethod
  def from_config(cls, model_config: ml_collections.ConfigDict) -> 'ModelConfig':
    return cls(**model_config.to_dict())

  @property
  def kv_heads(self) -> int:
    """Key and value heads: `num_kv_heads`, or num_heads when 0."""
    return self.num_kv_heads or self.num_heads

  @property
  def rotary_dim(self) -> int:
    """The leading dimensions of each head that rotary embeddings rotate (GPT-NeoX's rotary_ndims)."""
    return int(self.head_dim * self.rotary_fraction)

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def encoder_layers(self) -> int:
    return self.num_encoder_layers or self.num_layers

  @property
  def expert_dim(self) -> int:
    """Each expert's hidden size: `moe_mlp_dim`, or mlp_dim when 0."""
    return self.moe_mlp_dim or self.mlp_dim

  @property
  def mup_multiplier(self) -> float | None:
    """muP's width multiplier m = d_model / mup_base_width, None when muP is off (Yang et al. 2022,
    "Tensor Programs V", arXiv 2203.03466, Table 3 for Adam, in the equivalent form with an output
    multiplier that the authors' mup library implements). Under muP, against the base model of
    width d0 = mup_base_width: the hidden matrices (attention and MLP projections, MoE experts)
    start from N(0, init_std^2 / m) (variance proportional to 1 / fan_in: `hidden_init_std`) and
    Adam moves them at the learning rate / m (research/optimizers.py `mup_lr_multipliers`); the
    embedding, the output layer, norms and biases keep init_std and the learning rate; the output
    logits are divided by m (`output_logits`; with tied embeddings on the logits, not on the shared
    embedding's init); attention scores take `attention_scale`. The hidden widths (num_heads *
    head_dim, mlp_dim) are taken to grow with d_model by the same m. At m = 1 the model is the
    standard one, exactly. The MoE router keeps the standard parametrization."""
    return self.d_model / self.mup_base_width if self.mup_base_width else None

  @property
  def hidden_init_std(self) -> float:
    """The init std of the hidden matrices: init_std, over sqrt(m) under muP (`mup_multiplier`)."""
    return self.init_std / math.sqrt(self.mup_multiplier or 1.0)

  @property
  def attention_scale(self) -> float:
    """The attention scores' factor: 1 / sqrt(head_dim), or under muP sqrt(K0) / head_dim with K0 =
    `mup_base_head_dim` (0 = head_dim): muP's 1 / head_dim attention (Yang et al. 2022, arXiv
    2203.03466), times sqrt(K0) so that it is the standard factor at the base head_dim.
    Written 1 / sqrt(head_dim) * sqrt(K0 / head_dim), exactly 1 / sqrt(head_dim) when K0 = head_dim:
    widening by heads at a fixed head_dim (K0 = head_dim) keeps the standard factor."""
    base = self.mup_base_head_dim or self.head_dim
    return self.head_dim ** -0.5 * math.sqrt(base / self.head_dim)

  def is_moe(self, layer: int) -> bool:
    """Whether layer `layer` (from 0) of a stack has a mixture-of-experts MLP: the last of every
    `moe_every` layers."""
    return self.moe_experts > 0 and (layer + 1) % self.moe_every == 0

  def moe_layers_of(self, num_layers: int) -> int:
    """How many of a stack's `num_layers` layers have a mixture-of-experts MLP."""
    return sum(self.is_moe(i) for i in range(num_layers))


def _norm(config: ModelConfig, name: str) -> nn.Module:
  """The configured norm over `embed`: RMSNorm, or LayerNorm with a bias (GPT-NeoX)."""
  if config.norm == 'layernorm':
    return layers.LayerNorm(config.norm_eps, config.compute_dtype, 'embed', use_bias=True, name=name)
  return layers.RMSNorm(config.norm_eps, config.compute_dtype, name=name)


def _mlp(config: ModelConfig) -> nn.Module:
  """The configured MLP, module `mlp`: SwiGLU or a GELU MLP (GPT-NeoX)."""
  if config.mlp == 'swiglu':
    return layers.SwiGLU(config.mlp_dim, config.hidden_init_std, config.compute_dtype,
                         config.mlp_bias, quant=config.quant, name='mlp')
  return layers.GeluMLP(config.mlp_dim, config.hidden_init_std, config.compute_dtype,
                        config.mlp_bias, approximate=config.mlp == 'gelu_tanh', quant=config.quant,
                        name='mlp')


def moe_mlp(config: ModelConfig, name: str | None = None) -> moe.MoE:
  """The mixture-of-experts MLP the `model.moe_*` switches describe."""
  return moe.MoE(config.moe_experts, config.moe_top_k, config.expert_dim,
                 config.moe_capacity_factor, config.moe_normalize_gates, config.init_std,
                 config.compute_dtype, expert_init_std=config.hidden_init_std, name=name)


class Block(nn.Module):
  """One pre-norm Transformer layer. Returns (x, None) so that it can be scanned.

  Self-attention under `mask_B1LL` (causal in a decoder, bidirectional in the encoder), then, with
  `cross_attention`, attention to the encoder's output `encoded_BED` under `cross_mask_B1LE`
  (without rotary embeddings), then the MLP (with `moe`, module `moe`: experts routed over the
  tokens `valid_BL` marks); each sub-layer has its norm and a residual. With
  `parallel_residual` every sub-layer reads the layer's input and their outputs add up, as in
  GPT-J and GPT-NeoX (arXiv 2204.06745): x + attention(norm_1(x)) + mlp(norm_2(x)).
  Given `cache_index_B`, the self-attention decodes with its key-value cache (layers.Attention).
  """
  config: ModelConfig
  cross_attention: bool = False
  moe: bool = False

  @nn.compact
  def __call__(self, x_BLD, mask_B1LL, sin_BLk, cos_BLk, deterministic: bool, valid_BL,
               encoded_BED=None, cross_mask_B1LE=None, cache_index_B=None):
    c, dtype = self.config, self.config.compute_dtype
    attention = functools.partial(layers.Attention, c.num_heads, c.head_dim, c.qk_norm, c.norm_eps,
                                  c.hidden_init_std, dtype, c.num_kv_heads, c.attention_bias,
                                  c.quant, c.attention_scale)
    x_BLD = nn.with_logical_constraint(x_BLD, ('batch', 'length', 'embed'))
    input_BLD = x_BLD
    sublayer_input = lambda: input_BLD if c.parallel_residual else x_BLD
    h_BLD = _norm(c, 'attention_norm')(x_BLD)
    h_BLD = attention(name='attention')(h_BLD, mask_B1LL, sin_BLk, cos_BLk,
                                        cache_index_B=cache_index_B)
    x_BLD = x_BLD + nn.Dropout(c.dropout_rate)(h_BLD, deterministic=deterministic)
    if self.cross_attention:
      h_BLD = _norm(c, 'cross_attention_norm')(sublayer_input())
      h_BLD = attention(name='cross_attention')(h_BLD, cross_mask_B1LE, memory_BSD=encoded_BED)
      # A query whose segment has no encoder token (decoder padding beside a full encoder row) would
      # attend uniformly to the whole row; it gets nothing instead.
      h_BLD = jnp.where(jnp.any(cross_mask_B1LE, axis=-1)[:, 0, :, None], h_BLD, 0)
      x_BLD = x_BLD + nn.Dropout(c.dropout_rate)(h_BLD, deterministic=deterministic)
    h_BLD = _norm(c, 'mlp_norm')(sublayer_input())
    if self.moe:
      h_BLD = moe_mlp(c, name='moe')(h_BLD, valid_BL)
    else:
      h_BLD = _mlp(c)(h_BLD)
    x_BLD = x_BLD + nn.Dropout(c.dropout_rate)(h_BLD, deterministic=deterministic)
    return x_BLD, None


def _block_class(config: ModelConfig):
  if config.remat == 'none':
    return Block
  return nn.remat(Block, policy=REMAT_POLICIES[config.remat], prevent_cse=not config.scan_layers,
                  static_argnums=(5,))


class BlockGroup(nn.Module):
  """`config.moe_every` layers, the last with a mixture of experts: the unit a stack scans over when
  MoE layers alternate with dense ones. Modules `block_0`, `block_1`, ..."""
  config: ModelConfig
  cross_attention: bool = False

  @nn.compact
  def __call__(self, x_BLD, *args):
    block = _block_class(self.config)
    for i in range(self.config.moe_every):
      x_BLD, _ = block(self.config, self.cross_attention, self.config.is_moe(i),
                       name=f'block_{i}')(x_BLD, *args)
    return x_BLD, None


def _stack(config: ModelConfig, num_layers: int, name: str, cross_attention: bool, x_BLD, *args):
  """`num_layers` Blocks applied to x_BLD; `args` are the Block's arguments after x_BLD.

  Called inside a compact method, whose module owns the layers: one module `name` scanned over a
  leading `layers` axis when `config.scan_layers` (over BlockGroups of `moe_every` layers when MoE
  layers alternate with dense ones), else modules `name_0`, `name_1`, ... A decoding cache (the
  `cache` collection) and what the layers sow (`intermediates`, `pathways`, `monitors`) are stacked
  over the scanned layers like the parameters.
  """
  if config.scan_layers:
    grouped = config.moe_experts > 0 and config.moe_every > 1
    unit = BlockGroup if grouped else _block_class(config)
    extra = () if grouped else (config.is_moe(0),)
    stack = nn.scan(unit,
                    variable_axes={'params': 0, 'intermediates': 0, 'cache': 0, 'pathways': 0,
                                   'monitors': 0},
                    split_rngs={'params': True, 'dropout': True},
                    in_axes=(nn.broadcast,) * len(args),
                    length=num_layers // config.moe_every if grouped else num_layers,
                    metadata_params={nn.PARTITION_NAME: 'layers'})
    return stack(config, cross_attention, *extra, name=name)(x_BLD, *args)[0]
  block = _block_class(config)
  for i in range(num_layers):
    x_BLD, _ = block(config, cross_attention, config.is_moe(i), name=f'{name}_{i}')(x_BLD, *args)
  return x_BLD


def _embedding(module: nn.Module, config: ModelConfig):
  """The input embedding [V, D] (also the output layer when tied)."""
  return layers.weight(module, 'embedding', (config.vocab_size, config.d_model), ('vocab', 'embed'),
                       config.init_std)


def _final(module: nn.Module, config: ModelConfig, x_BLD, embedding_VD):
  """The final norm's output [B, L, D] and the output layer's weights [V, D] (the input embedding
  when tied): what `output_logits` turns into logits."""
  x_BLD = _norm(config, 'final_norm')(x_BLD)
  if config.tie_embeddings:
    return x_BLD, embedding_VD
  return x_BLD, layers.weight(module, 'unembedding', (config.vocab_size, config.d_model),
                              ('vocab', 'embed'), config.init_std)


def output_logits(config: ModelConfig, x_BLD, unembed_VD):
  """The output layer: float32 logits [B, L, V] of the final norm's output x_BLD, divided by muP's
  width multiplier m under muP (its readout multiplier 1 / m, `ModelConfig.mup_multiplier`)."""
  # The output layer stored [V, D] ('nd,vd->nv') is the fast layout on CPU and TPU; the rows are
  # flattened to 2-D as in layers.project.
  logits_NV = jnp.einsum('nd,vd->nv', x_BLD.reshape(-1, config.d_model),
                         unembed_VD.astype(config.compute_dtype),
                         preferred_element_type=jnp.float32)
  if config.mup_multiplier is not None:
    logits_NV = logits_NV / config.mup_multiplier
  logits_BLV = logits_NV.reshape(*x_BLD.shape[:-1], config.vocab_size)
  return nn.with_logical_constraint(logits_BLV, ('batch', 'length', 'vocab'))


def _rotary_tables(config: ModelConfig, positions_BL):
  """sin and cos [B, L, rotary_dim / 2] for the rotated dimensions, or (None, None) if none rotate.

  The frequencies count the rotated dimensions only (base^(-2i / rotary_dim)), as GPT-NeoX does.
  """
  if not config.rotary_dim:
    return None, None
  return layers.rotary_tables(positions_BL, config.rotary_dim, config.rope_base)


class Decoder(nn.Module):
  """Decoder-only language model: a batch of token ids [B, L] -> float32 logits [B, L, V].

  Reads `inputs`, `segment_ids` (packed documents stay apart; 0 marks padding), `positions` (they
  restart in each segment) and optionally `prefix` (bool [B, L]: a bidirectional prefix for
  prefix-LM objectives).

  With `cache_length` S > 0 it decodes (research/generate.py): each row is one sequence whose
  tokens at `positions` enter every layer's key-value cache of S slots (`cache` collection, to be
  passed mutable) at slots = positions, contiguous in each row, and attend the row's cached slots
  up to their own (`layers.cache_mask`); `segment_ids` then only marks padding.
  A batch with `prepacked` (any value) instead holds several prompts a row, packed as in training
  (`segment_ids`, `positions` restarting): they attend within their segment and fill the row's
  cache slot by slot, for research/generate.py to unpack into one row a prompt.

  With `hidden` it returns the final norm's output [B, L, D] and the output layer's weights [V, D]
  instead of logits (`output_logits` makes them), for a loss that takes the logits a chunk at a time
  (losses.chunked_token_cross_entropy).
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, batch: dict, deterministic: bool = True, cache_length: int = 0,
               hidden: bool = False):
    c = self.config
    embedding_VD = _embedding(self, c)
    x_BLD = jnp.take(embedding_VD, batch['inputs'], axis=0).astype(c.compute_dtype)
    sin_BLk, cos_BLk = _rotary_tables(c, batch['positions'])
    args = (deterministic, batch['segment_ids'] > 0)
    if cache_length and 'prepacked' not in batch:
      mask_B1LS = layers.cache_mask(batch['positions'], cache_length, batch.get('prefix'))
      args += (None, None, batch['positions'][:, 0])
    else:
      mask_B1LS = layers.attention_mask(batch['segment_ids'], batch.get('prefix'))
      if cache_length:  # prepacked prompts: each row's keys and values fill its cache slot by slot
        length = mask_B1LS.shape[-1]
        mask_B1LS = jnp.pad(mask_B1LS, ((0, 0), (0, 0), (0, 0), (0, cache_length - length)))
        args += (None, None, jnp.zeros(batch['inputs'].shape[:1], jnp.int32))
    x_BLD = _stack(c, c.num_layers, 'layers', False, x_BLD, mask_B1LS, sin_BLk, cos_BLk, *args)
    x_BLD, unembed_VD = _final(self, c, x_BLD, embedding_VD)
    return (x_BLD, unembed_VD) if hidden else output_logits(c, x_BLD, unembed_VD)


class EncoderDecoder(nn.Module):
  """Encoder-decoder model: encoder ids [B, E] and decoder ids [B, L] -> float32 logits [B, L, V].

  Vaswani et al. 2017 (arXiv 1706.03762) in T5's pre-norm layout (Raffel et al. 2020, arXiv
  1910.10683). Reads `encoder_inputs`, `encoder_segment_ids`, `encoder_positions` [B, E] and the
  decoder's `inputs`, `segment_ids`, `positions` [B, L]. The encoder attends bidirectionally within
  a segment; the decoder causally within a segment and, in each layer, to the encoder tokens of its
  own segment: a packed row numbers its examples alike on both sides (0 = padding).

  With `cache_length` S > 0 the decoder decodes as `Decoder` does. A batch with `encoder_inputs`
  runs the encoder and keeps its output and segment ids in the `cache` collection (`encoded`,
  `encoder_segment_ids`); a batch without (a decoding step) reads them from there, so the encoder
  runs once per generation. The cross-attention keys and values are recomputed from them each step.
  `hidden` returns the decoder's final hidden states and output weights, as `Decoder` does.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, batch: dict, deterministic: bool = True, cache_length: int = 0,
               hidden: bool = False):
    c = self.config
    embedding_VD = _embedding(self, c)
    if cache_length and 'encoder_inputs' not in batch:  # a decoding step: the encoder has run
      encoded_BED = self.get_variable('cache', 'encoded')
      encoder_segment_ids_BE = self.get_variable('cache', 'encoder_segment_ids')
    else:
      encoder_segment_ids_BE = batch['encoder_segment_ids']
      x_BED = jnp.take(embedding_VD, batch['encoder_inputs'], axis=0).astype(c.compute_dtype)
      mask_B1EE = layers.segment_mask(encoder_segment_ids_BE, encoder_segment_ids_BE)
      sin_BEk, cos_BEk = _rotary_tables(c, batch['encoder_positions'])
      x_BED = _stack(c, c.encoder_layers, 'encoder_layers', False, x_BED, mask_B1EE, sin_BEk,
                     cos_BEk, deterministic, encoder_segment_ids_BE > 0)
      encoded_BED = _norm(c, 'encoder_norm')(x_BED)
      if cache_length:
        self.put_variable('cache', 'encoded', encoded_BED)
        self.put_variable('cache', 'encoder_segment_ids', encoder_segment_ids_BE)

    x_BLD = jnp.take(embedding_VD, batch['inputs'], axis=0).astype(c.compute_dtype)
    cross_mask_B1LE = layers.segment_mask(batch['segment_ids'], encoder_segment_ids_BE)
    sin_BLk, cos_BLk = _rotary_tables(c, batch['positions'])
    args = (deterministic, batch['segment_ids'] > 0, encoded_BED, cross_mask_B1LE)
    if cache_length:
      mask_B1LS = layers.cache_mask(batch['positions'], cache_length)
      args += (batch['positions'][:, 0],)
    else:
      mask_B1LS = layers.attention_mask(batch['segment_ids'])
    x_BLD = _stack(c, c.num_layers, 'decoder_layers', True, x_BLD, mask_B1LS, sin_BLk, cos_BLk,
                   *args)
    x_BLD, unembed_VD = _final(self, c, x_BLD, embedding_VD)
    return (x_BLD, unembed_VD) if hidden else output_logits(c, x_BLD, unembed_VD)


def make_model(config: ModelConfig) -> nn.Module:
  """The model `config.architecture` names."""
  if config.architecture not in ARCHITECTURES:
    raise ValueError(f'architecture={config.architecture!r} is not one of {ARCHITECTURES}.')
  return Decoder(config) if config.architecture == 'decoder' else EncoderDecoder(config)


def unscan_params(params: dict, config: ModelConfig) -> dict:
  """Parameters of the scanned model of `config` as its unscanned model (`scan_layers=False`) names
  them: each stack's leading `layers` axis becomes modules NAME_0, NAME_1, ... (with BlockGroups of
  `moe_every` layers, group g's block_j is layer g * moe_every + j). Boxed leaves (nn.Partitioned)
  lose the `layers` axis name with it."""
  def take(i):
    def leaf(x):
      if isinstance(x, nn.Partitioned):
        return x.replace(value=x.value[i], names=x.names[1:])
      return x[i]
    return lambda tree: jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))

  grouped = config.moe_experts > 0 and config.moe_every > 1
  unscanned = {}
  for name, value in params.items():
    if name not in ('layers', 'encoder_layers', 'decoder_layers'):
      unscanned[name] = value
      continue
    groups = jax.tree.leaves(value)[0].shape[0]
    for g in range(groups):
      if grouped:
        for j in range(config.moe_every):
          unscanned[f'{name}_{g * config.moe_every + j}'] = take(g)(value[f'block_{j}'])
      else:
        unscanned[f'{name}_{g}'] = take(g)(value)
  return unscanned


def dummy_batch(config: ModelConfig, batch_size: int, seq_len: int, target_len: int) -> dict:
  """A batch of the keys and shapes `make_model(config)` reads, to initialise it with.

  Token ids 0, one segment, positions 0, 1, ...: rows [B, seq_len] for a decoder; for an
  encoder-decoder, encoder rows [B, seq_len] and decoder rows [B, target_len].
  """
  def rows(length):
    shape = (batch_size, length)
    return {'inputs': jnp.zeros(shape, jnp.int32), 'segment_ids': jnp.ones(shape, jnp.int32),
            'positions': jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), shape)}
  if config.architecture == 'decoder':
    return rows(seq_len)
  return {**{f'encoder_{k}': v for k, v in rows(seq_len).items()}, **rows(target_len)}


def moe_layers(config: ModelConfig) -> int:
  """How many mixture-of-experts layers the model has (an encoder-decoder's encoder's too)."""
  stacks = [config.num_layers] + ([config.encoder_layers]
                                  if config.architecture == 'encoder_decoder' else [])
  return sum(config.moe_layers_of(num_layers) for num_layers in stacks)


def matmul_params(config: ModelConfig) -> int:
  """Parameters that take part in a matmul: every layer's projections and the output layer.

  The input embedding is a lookup, not a matmul, so only one [V, D] matrix is counted, the output
  layer's (the unembedding, or the embedding matrix itself when tied), and biases and norms are no
  matmuls. Grouped-query attention has smaller key and value projections; a GELU MLP has two
  matrices where SwiGLU has three. A mixture-of-experts layer counts what one token
  meets: its top-k experts and the router (the active parameters). An
  encoder-decoder counts its encoder layers and its decoder layers with their cross-attention
  projections; not every token meets all of them (see `flops_per_token`).
  """
  attention = _attention_params(config)
  total = (config.num_layers * attention + _mlp_params(config, config.num_layers)
           + config.vocab_size * config.d_model)
  if config.architecture == 'encoder_decoder':
    total += (config.encoder_layers * attention + _mlp_params(config, config.encoder_layers)
              + config.num_layers * attention)
  return total


def _attention_params(config: ModelConfig) -> int:
  """One attention's projections: query and output H*K*D each, key and value G*K*D each (GQA)."""
  return 2 * config.d_model * config.head_dim * (config.num_heads + config.kv_heads)


def _mlp_params(config: ModelConfig, num_layers: int) -> int:
  """The MLP matrices a token meets in a stack of `num_layers`: gate, up and down for SwiGLU, up
  and down for a GELU MLP; in a MoE layer the router and its top-k SwiGLU experts."""
  routed_layers = config.moe_layers_of(num_layers)
  dense = (3 if config.mlp == 'swiglu' else 2) * config.d_model * config.mlp_dim
  routed = config.d_model * (config.moe_experts + 3 * config.moe_top_k * config.expert_dim)
  return (num_layers - routed_layers) * dense + routed_layers * routed


def flops_per_token(config: ModelConfig, seq_len: int, causal: bool = True,
                    target_len: int = 0) -> float:
  """Training FLOPs per token: 6 * matmul params + 12 * layers * L * H*K, causal attention halved.

  The forward pass costs 2 FLOPs per matmul parameter and backward twice that (6N, Kaplan et al.
  2020, arXiv 2001.08361); attention scores and values add 2 * 2 * L * H*K per layer forward, so
  12 * layers * L * H*K for training (PaLM, Chowdhery et al. 2022, arXiv 2204.02311, appendix B),
  H the query heads (with grouped-query attention too: every query head scores every key).
  A causal mask skips half of the score matrix, so causal attention counts at half, as MaxText does.

  Only matmuls count. The input embedding is a lookup (a gather, and a scatter-add backward), not
  a matmul, and is not counted; the output layer (the unembedding [V, D], the embedding matrix
  itself when tied) is a matmul and is counted, once, in `matmul_params`. Norms, rotary embeddings,
  the softmax, the loss and the optimizer update are not counted either. The model computes the
  full score matrix and masks it, so XLA's count of the whole compiled train step (`cost_analysis`)
  compares with causal=False: 1.5% above it for launch/bench.py's `tiny` preset (4 layers of
  d_model 256, 256 tokens; tests/test_bench.py checks it within 10%).

  An encoder-decoder counts per decoder token: the FLOPs of a row of E = `seq_len` encoder and
  L = `target_len` (0 = seq_len) decoder tokens, over L. Encoder layers and the cross-attention key
  and value projections run on the E encoder tokens; decoder layers, the cross-attention query and
  output projections and the output layer on the L decoder tokens. Per layer, encoder
  self-attention adds 12 * E * H*K per encoder token (bidirectional: never halved), decoder
  self-attention 12 * L * H*K per decoder token (halved if causal) and cross-attention 12 * E * H*K
  per decoder token.
  """
  heads = config.num_heads * config.head_dim
  if config.architecture == 'decoder':
    attention = 12 * config.num_layers * seq_len * heads
    return 6 * matmul_params(config) + (attention / 2 if causal else attention)
  encoder_len, decoder_len = seq_len, target_len or seq_len
  cross_kv = 2 * config.d_model * config.head_dim * config.kv_heads
  encoder_params = (config.encoder_layers * _attention_params(config)
                    + _mlp_params(config, config.encoder_layers) + config.num_layers * cross_kv)
  decoder_params = matmul_params(config) - encoder_params
  self_attention = 12 * config.num_layers * decoder_len * heads
  row = (6 * encoder_params * encoder_len
         + 12 * config.encoder_layers * encoder_len * heads * encoder_len
         + 6 * decoder_params * decoder_len
         + (self_attention / 2 if causal else self_attention) * decoder_len
         + 12 * config.num_layers * encoder_len * heads * decoder_len)
  return row / decoder_len
