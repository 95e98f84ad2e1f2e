"""The supported Hugging Face architectures: their configs and tensor layouts against ours.

Pure functions, no files: `architecture` picks the supported architecture a config.json names,
`model_keys` and `data_keys` turn its config into our `config.model` and `config.data` keys and
`hf_config` ours into its, `params_from_hf` and `hf_from_params` move parameters between the two
layouts (research/interop/hf_checkpoint.py reads and writes the directories).

Tensor layouts. A torch Linear weight is [out, in]; ours are [in, ...out]: query [D, H, K], key and
value [D, G, K], out [H, K, D], MLP [D, F] and [F, D]; embeddings and the output layer are [V, D] on
both sides. GPT-NeoX fuses query, key and value into one [H * 3 * K, D] matrix, head by head.
Rotary embeddings match without a permutation: Hugging Face's Llama and GPT-NeoX rotate the two
halves of the first rotary_ndims dimensions (rotate_half), as research/model/layers.py does.
Every conversion is a transpose, a reshape or a stack, so export then import is lossless.
"""

from collections.abc import Callable

import jax
import numpy as np

from research import errors
from research.model import transformer

LLAMA, GPT_NEOX = 'llama', 'gpt_neox'
# Hugging Face architecture (config.json "architectures") -> the family of tensor names it uses.
ARCHITECTURES = {'LlamaForCausalLM': LLAMA, 'MistralForCausalLM': LLAMA,
                 'GPTNeoXForCausalLM': GPT_NEOX}
_MODEL_TYPES = {'llama': 'LlamaForCausalLM', 'mistral': 'MistralForCausalLM',
                'gpt_neox': 'GPTNeoXForCausalLM'}
_GELU = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh',
         'gelu_fast': 'gelu_tanh'}


def architecture(hf_config: dict, where: str) -> str:
  """The supported architecture `hf_config` names, or a UserError naming it and the supported ones."""
  names = hf_config.get('architectures') or [_MODEL_TYPES.get(hf_config.get('model_type'),
                                                              hf_config.get('model_type'))]
  for name in names:
    if name in ARCHITECTURES:
      return name
  raise errors.UserError(f'{where}: architecture {", ".join(map(str, names))} is not supported; '
                         f'supported: {", ".join(ARCHITECTURES)}.')


def _rope(hf_config: dict, theta_key: str, fraction_key: str | None, default_fraction: float):
  """(rope_theta, rotary fraction) from the transformers 5 `rope_parameters` or the older keys."""
  rope = hf_config.get('rope_parameters') or hf_config.get('rope_scaling') or {}
  rope_type = rope.get('rope_type', rope.get('type', 'default'))
  if rope_type != 'default':
    raise errors.UserError(f'config.json: rope_type={rope_type!r} (RoPE scaling) is not supported; '
                           'only default rotary embeddings are.')
  theta = rope.get('rope_theta', hf_config.get(theta_key, 10000.0))
  fraction = rope.get('partial_rotary_factor',
                      hf_config.get(fraction_key, default_fraction) if fraction_key else 1.0)
  return float(theta), float(fraction)


def model_keys(hf_config: dict, name: str) -> dict:
  """Our `config.model` keys for the Hugging Face config of architecture `name`."""
  c = hf_config
  heads = c['num_attention_heads']
  common = dict(architecture='decoder', vocab_size=c['vocab_size'], d_model=c['hidden_size'],
                num_layers=c['num_hidden_layers'], num_heads=heads, mlp_dim=c['intermediate_size'],
                tie_embeddings=bool(c.get('tie_word_embeddings', False)), qk_norm=False,
                init_std=float(c.get('initializer_range', 0.02)), dropout_rate=0.0)
  act = c.get('hidden_act', 'silu' if ARCHITECTURES[name] == LLAMA else 'gelu')
  if ARCHITECTURES[name] == LLAMA:
    if act != 'silu':
      raise errors.UserError(f'config.json: hidden_act={act!r} is not supported for {name}; only '
                             "'silu' (SwiGLU) is.")
    theta, _ = _rope(c, 'rope_theta', None, 1.0)
    return dict(common, num_kv_heads=c.get('num_key_value_heads') or heads,
                head_dim=c.get('head_dim') or c['hidden_size'] // heads, mlp='swiglu',
                norm='rmsnorm', attention_bias=bool(c.get('attention_bias', False)),
                mlp_bias=bool(c.get('mlp_bias', False)), parallel_residual=False, rope_base=theta,
                rotary_fraction=1.0, norm_eps=float(c.get('rms_norm_eps', 1e-6)))
  if act not in _GELU:
    raise errors.UserError(f'config.json: hidden_act={act!r} is not supported for {name}; '
                           f'supported: {", ".join(_GELU)}.')
  theta, fraction = _rope(c, 'rotary_emb_base', 'rotary_pct', 0.25)
  return dict(common, num_kv_heads=heads, head_dim=c['hidden_size'] // heads, mlp=_GELU[act],
              norm='layernorm', attention_bias=bool(c.get('attention_bias', True)), mlp_bias=True,
              parallel_residual=bool(c.get('use_parallel_residual', True)), rope_base=theta,
              rotary_fraction=fraction, norm_eps=float(c.get('layer_norm_eps', 1e-5)))


def data_keys(hf_config: dict) -> dict:
  """Our `config.data` keys that a Hugging Face config fixes, where it gives them: `seq_len`, the
  context it was trained for (max_position_embeddings), and `start_id`, the token it reads first
  (bos_token_id; research/data/vocabularies.start_id)."""
  keys = {}
  if isinstance(hf_config.get('max_position_embeddings'), int):
    keys['seq_len'] = hf_config['max_position_embeddings']
  bos = hf_config.get('bos_token_id')
  if isinstance(bos, int) and 0 <= bos < hf_config['vocab_size']:
    keys['start_id'] = bos
  return keys


def hf_architecture(config: transformer.ModelConfig) -> str:
  """The Hugging Face architecture that computes our model's function, or a UserError saying why none.

  Llama: RMSNorm, SwiGLU, sequential residual, full rotary. GPT-NeoX: LayerNorm with bias, GELU MLP
  with biases, no grouped-query attention, head_dim * num_heads = d_model.
  """
  problems = []
  if config.architecture != 'decoder':
    problems.append(f'model.architecture={config.architecture!r} (only decoder)')
  if config.qk_norm:
    problems.append('model.qk_norm=True')
  if config.moe_experts:
    problems.append(f'model.moe_experts={config.moe_experts} (only dense MLPs)')
  if config.mup_base_width:
    problems.append(f"model.mup_base_width={config.mup_base_width} (muP's multipliers)")
  if config.norm == 'rmsnorm':
    llama = [f'model.{key}={getattr(config, key)!r}'
             for key, ok in (('mlp', config.mlp == 'swiglu'),
                             ('parallel_residual', not config.parallel_residual),
                             ('rotary_fraction', config.rotary_fraction == 1.0)) if not ok]
    if not problems + llama:
      return 'LlamaForCausalLM'
    problems += llama
    family = 'LlamaForCausalLM (model.norm=rmsnorm)'
  else:
    neox = [f'model.{key}={getattr(config, key)!r}'
            for key, ok in (('mlp', config.mlp != 'swiglu'), ('mlp_bias', config.mlp_bias),
                            ('num_kv_heads', config.kv_heads == config.num_heads),
                            ('head_dim', config.head_dim * config.num_heads == config.d_model))
            if not ok]
    if not problems + neox:
      return 'GPTNeoXForCausalLM'
    problems += neox
    family = 'GPTNeoXForCausalLM (model.norm=layernorm)'
  raise errors.UserError(f'This model has no Hugging Face equivalent: as {family} it cannot have '
                         f'{", ".join(problems)}. Supported: {", ".join(ARCHITECTURES)}.')


def hf_config(config: transformer.ModelConfig, eos_id: int | None, bos_id: int,
              max_length: int) -> dict:
  """config.json for our decoder `config` (see `hf_architecture`), float32 weights: the run's start
  id is its bos_token_id and its data.seq_len (`max_length`) its max_position_embeddings."""
  name = hf_architecture(config)
  c = config
  common = {'architectures': [name], 'vocab_size': c.vocab_size, 'hidden_size': c.d_model,
            'num_hidden_layers': c.num_layers, 'num_attention_heads': c.num_heads,
            'intermediate_size': c.mlp_dim, 'tie_word_embeddings': c.tie_embeddings,
            'initializer_range': c.init_std, 'max_position_embeddings': max_length,
            'bos_token_id': bos_id, 'eos_token_id': eos_id, 'pad_token_id': None,
            'torch_dtype': 'float32', 'dtype': 'float32'}
  if name == 'LlamaForCausalLM':
    return dict(common, model_type='llama', num_key_value_heads=c.kv_heads, head_dim=c.head_dim,
                hidden_act='silu', rms_norm_eps=c.norm_eps, attention_bias=c.attention_bias,
                mlp_bias=c.mlp_bias, rope_theta=c.rope_base,
                rope_parameters={'rope_type': 'default', 'rope_theta': c.rope_base})
  act = {'gelu': 'gelu', 'gelu_tanh': 'gelu_new'}[c.mlp]
  return dict(common, model_type='gpt_neox', hidden_act=act, layer_norm_eps=c.norm_eps,
              attention_bias=c.attention_bias, use_parallel_residual=c.parallel_residual,
              rotary_pct=c.rotary_fraction, rotary_emb_base=c.rope_base,
              rope_parameters={'rope_type': 'default', 'rope_theta': c.rope_base,
                               'partial_rotary_factor': c.rotary_fraction})


# --- parameters ----------------------------------------------------------------------------------

def _llama_layer(get: Callable[[str], np.ndarray], i: int, c: transformer.ModelConfig) -> dict:
  p = f'model.layers.{i}.'
  d, h, g, k = c.d_model, c.num_heads, c.kv_heads, c.head_dim
  attention = {'query': get(p + 'self_attn.q_proj.weight').T.reshape(d, h, k),
               'key': get(p + 'self_attn.k_proj.weight').T.reshape(d, g, k),
               'value': get(p + 'self_attn.v_proj.weight').T.reshape(d, g, k),
               'out': get(p + 'self_attn.o_proj.weight').T.reshape(h, k, d)}
  if c.attention_bias:
    attention.update(query_bias=get(p + 'self_attn.q_proj.bias').reshape(h, k),
                     key_bias=get(p + 'self_attn.k_proj.bias').reshape(g, k),
                     value_bias=get(p + 'self_attn.v_proj.bias').reshape(g, k),
                     out_bias=get(p + 'self_attn.o_proj.bias'))
  mlp = {name: get(f'{p}mlp.{name}_proj.weight').T for name in ('gate', 'up', 'down')}
  if c.mlp_bias:
    mlp.update({f'{name}_bias': get(f'{p}mlp.{name}_proj.bias') for name in ('gate', 'up', 'down')})
  return {'attention_norm': {'scale': get(p + 'input_layernorm.weight')}, 'attention': attention,
          'mlp_norm': {'scale': get(p + 'post_attention_layernorm.weight')}, 'mlp': mlp}


def _llama_layer_to_hf(layer: dict, i: int, c: transformer.ModelConfig) -> dict:
  p, a, d = f'model.layers.{i}.', layer['attention'], c.d_model
  out = {p + 'input_layernorm.weight': layer['attention_norm']['scale'],
         p + 'post_attention_layernorm.weight': layer['mlp_norm']['scale'],
         p + 'self_attn.o_proj.weight': a['out'].reshape(-1, d).T}
  for ours, theirs in (('query', 'q'), ('key', 'k'), ('value', 'v')):
    out[f'{p}self_attn.{theirs}_proj.weight'] = a[ours].reshape(d, -1).T
    if c.attention_bias:
      out[f'{p}self_attn.{theirs}_proj.bias'] = a[f'{ours}_bias'].reshape(-1)
  if c.attention_bias:
    out[p + 'self_attn.o_proj.bias'] = a['out_bias']
  for name in ('gate', 'up', 'down'):
    out[f'{p}mlp.{name}_proj.weight'] = layer['mlp'][name].T
    if c.mlp_bias:
      out[f'{p}mlp.{name}_proj.bias'] = layer['mlp'][f'{name}_bias']
  return out


def _norm(get, name: str) -> dict:
  return {'scale': get(name + '.weight'), 'bias': get(name + '.bias')}


def _neox_layer(get: Callable[[str], np.ndarray], i: int, c: transformer.ModelConfig) -> dict:
  p = f'gpt_neox.layers.{i}.'
  d, h, k = c.d_model, c.num_heads, c.head_dim
  # The fused projection's output row h * 3K + j * K + k is head h's query (j=0), key, value, dim k.
  qkv_DH3K = get(p + 'attention.query_key_value.weight').T.reshape(d, h, 3, k)
  attention = {name: qkv_DH3K[:, :, j] for j, name in enumerate(('query', 'key', 'value'))}
  attention['out'] = get(p + 'attention.dense.weight').T.reshape(h, k, d)
  if c.attention_bias:
    qkv_bias_H3K = get(p + 'attention.query_key_value.bias').reshape(h, 3, k)
    attention.update({f'{name}_bias': qkv_bias_H3K[:, j]
                      for j, name in enumerate(('query', 'key', 'value'))})
    attention['out_bias'] = get(p + 'attention.dense.bias')
  mlp = {'up': get(p + 'mlp.dense_h_to_4h.weight').T, 'up_bias': get(p + 'mlp.dense_h_to_4h.bias'),
         'down': get(p + 'mlp.dense_4h_to_h.weight').T,
         'down_bias': get(p + 'mlp.dense_4h_to_h.bias')}
  return {'attention_norm': _norm(get, p + 'input_layernorm'), 'attention': attention,
          'mlp_norm': _norm(get, p + 'post_attention_layernorm'), 'mlp': mlp}


def _neox_layer_to_hf(layer: dict, i: int, c: transformer.ModelConfig) -> dict:
  p, a, d = f'gpt_neox.layers.{i}.', layer['attention'], c.d_model
  out = {}
  for ours, theirs in (('attention_norm', 'input_layernorm'),
                       ('mlp_norm', 'post_attention_layernorm')):
    out.update({f'{p}{theirs}.weight': layer[ours]['scale'], f'{p}{theirs}.bias': layer[ours]['bias']})
  qkv_DH3K = np.stack([a['query'], a['key'], a['value']], axis=2)
  out[p + 'attention.query_key_value.weight'] = qkv_DH3K.reshape(d, -1).T
  out[p + 'attention.dense.weight'] = a['out'].reshape(-1, d).T
  if c.attention_bias:
    out[p + 'attention.query_key_value.bias'] = np.stack(
        [a['query_bias'], a['key_bias'], a['value_bias']], axis=1).reshape(-1)
    out[p + 'attention.dense.bias'] = a['out_bias']
  mlp = layer['mlp']
  out.update({p + 'mlp.dense_h_to_4h.weight': mlp['up'].T, p + 'mlp.dense_h_to_4h.bias': mlp['up_bias'],
              p + 'mlp.dense_4h_to_h.weight': mlp['down'].T,
              p + 'mlp.dense_4h_to_h.bias': mlp['down_bias']})
  return out


def params_from_hf(get: Callable[[str], np.ndarray], name: str, config: transformer.ModelConfig):
  """Our parameter tree (float32 numpy) from the tensors `get(tensor name)` of architecture `name`.

  `get` may support `in` (research/hf_checkpoint.Tensors does) to tell Pythia's name of the output
  layer from transformers 5's.
  """
  llama = ARCHITECTURES[name] == LLAMA
  layer = _llama_layer if llama else _neox_layer
  layers = [layer(get, i, config) for i in range(config.num_layers)]
  params = {'embedding': get('model.embed_tokens.weight' if llama else 'gpt_neox.embed_in.weight'),
            'final_norm': ({'scale': get('model.norm.weight')} if llama
                           else _norm(get, 'gpt_neox.final_layer_norm'))}
  if not config.tie_embeddings:
    # GPT-NeoX's output layer is embed_out in Pythia's files, lm_head in transformers 5's.
    legacy = not llama and hasattr(get, '__contains__') and 'embed_out.weight' in get
    params['unembedding'] = get('embed_out.weight' if legacy else 'lm_head.weight')
  if config.scan_layers:
    params['layers'] = jax.tree.map(lambda *xs: np.stack(xs), *layers)
  else:
    params.update({f'layers_{i}': layer for i, layer in enumerate(layers)})
  return params


def layer_params(params: dict, i: int) -> dict:
  """Layer i's parameters, from a scanned ('layers', stacked) or an unscanned ('layers_i') tree."""
  if 'layers' in params:
    return jax.tree.map(lambda x: x[i], params['layers'])
  return params[f'layers_{i}']


def hf_from_params(params: dict, config: transformer.ModelConfig) -> dict[str, np.ndarray]:
  """Hugging Face tensors (float32, contiguous) for our decoder's parameters (`hf_architecture`)."""
  name = hf_architecture(config)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
  out = {}
  if ARCHITECTURES[name] == LLAMA:
    out['model.embed_tokens.weight'] = params['embedding']
    out['model.norm.weight'] = params['final_norm']['scale']
    for i in range(config.num_layers):
      out.update(_llama_layer_to_hf(layer_params(params, i), i, config))
    if not config.tie_embeddings:
      out['lm_head.weight'] = params['unembedding']
  else:
    out['gpt_neox.embed_in.weight'] = params['embedding']
    out['gpt_neox.final_layer_norm.weight'] = params['final_norm']['scale']
    out['gpt_neox.final_layer_norm.bias'] = params['final_norm']['bias']
    for i in range(config.num_layers):
      out.update(_neox_layer_to_hf(layer_params(params, i), i, config))
    if not config.tie_embeddings:
      out['embed_out.weight'] = params['unembedding']  # Pythia's name; transformers maps it
  return {k: np.ascontiguousarray(v) for k, v in out.items()}
