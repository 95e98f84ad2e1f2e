"""Hugging Face checkpoints in and out: the Llama family (Llama, Mistral) and GPT-NeoX (Pythia).

`import_checkpoint(DIR, CKPT)` reads a Hugging Face model directory (config.json and safetensors,
one file or shards listed by model.safetensors.index.json; read with the `safetensors` numpy API,
no torch) and writes CKPT in this project's format, which `init_from` reads:

    CKPT/config.json            experiments/base.py's get_config() with the imported model.* keys,
                                model.vocab_size from the checkpoint and, when DIR has a
                                tokenizer.json, data.vocabulary = 'hf:CKPT/tokenizer.json' (absolute)
    CKPT/checkpoints/0/         orbax: CheckpointManager(CKPT/checkpoints).save(0,
                                args=StandardSave({'params': params})), params exactly the tree the
                                model's init makes (unboxed, float32; layers scanned)
    CKPT/tokenizer.json         copied from DIR with tokenizer_config.json and
                                special_tokens_map.json (they name the EOS token), when present

`export_checkpoint(SRC, DIR)` writes DIR/config.json and DIR/model.safetensors (float32) that
transformers loads with AutoModelForCausalLM, from such a CKPT or a training workdir (the 'params'
of its latest checkpoint, restored alone), and copies the tokenizer files of an 'hf:' vocabulary.

Tensor layouts. A torch Linear weight is [out, in]; ours are [in, ...out]: query [D, H, K], key and
value [D, G, K], out [H, K, D], MLP [D, F] and [F, D]; embeddings and the output layer are [V, D] on
both sides. GPT-NeoX fuses query, key and value into one [H * 3 * K, D] matrix, head by head.
Rotary embeddings match without a permutation: Hugging Face's Llama and GPT-NeoX rotate the two
halves of the first rotary_ndims dimensions (rotate_half), as research/model/layers.py does.
Every conversion is a transpose or a reshape, so export then import is lossless.
"""

import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import safetensors
import safetensors.numpy

from research import errors
from research.model import transformer

LLAMA, GPT_NEOX = 'llama', 'gpt_neox'
# Hugging Face architecture (config.json "architectures") -> the family of tensor names it uses.
ARCHITECTURES = {'LlamaForCausalLM': LLAMA, 'MistralForCausalLM': LLAMA,
                 'GPTNeoXForCausalLM': GPT_NEOX}
_MODEL_TYPES = {'llama': 'LlamaForCausalLM', 'mistral': 'MistralForCausalLM',
                'gpt_neox': 'GPTNeoXForCausalLM'}
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')
SAFETENSORS_INDEX = 'model.safetensors.index.json'
# Buffers older checkpoints carry that are no parameters (causal masks, rotary frequencies).
_IGNORED = re.compile(r'.*\.(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)$')
_GELU = {'gelu': 'gelu', 'gelu_new': 'gelu_tanh', 'gelu_pytorch_tanh': 'gelu_tanh',
         'gelu_fast': 'gelu_tanh'}


# --- Hugging Face directories --------------------------------------------------------------------

def read_hf_config(directory: str) -> dict:
  """DIR/config.json, or a UserError naming the missing file."""
  path = os.path.join(directory, 'config.json')
  if not os.path.isdir(directory):
    raise errors.UserError(f'--src={directory} is not a directory; give a Hugging Face model '
                           'directory (config.json and *.safetensors, as save_pretrained writes).')
  if not os.path.isfile(path):
    raise errors.UserError(f'{path} is missing: a Hugging Face model directory holds config.json '
                           'and *.safetensors (save_pretrained writes both).')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def architecture(hf_config: dict, where: str) -> str:
  """The supported architecture `hf_config` names, or a UserError naming it and the supported ones."""
  names = hf_config.get('architectures') or [_MODEL_TYPES.get(hf_config.get('model_type'),
                                                              hf_config.get('model_type'))]
  for name in names:
    if name in ARCHITECTURES:
      return name
  raise errors.UserError(f'{where}: architecture {", ".join(map(str, names))} is not supported; '
                         f'supported: {", ".join(ARCHITECTURES)}.')


def safetensors_files(directory: str) -> list[str]:
  """The safetensors files of DIR: the shards its index lists, else every *.safetensors."""
  index = os.path.join(directory, SAFETENSORS_INDEX)
  if os.path.isfile(index):
    with open(index, encoding='utf-8') as f:
      shards = sorted(set(json.load(f)['weight_map'].values()))
    for shard in shards:
      if not os.path.isfile(os.path.join(directory, shard)):
        raise errors.UserError(f'{os.path.join(directory, shard)} is missing: {index} lists it.')
    return [os.path.join(directory, shard) for shard in shards]
  files = sorted(f for f in os.listdir(directory) if f.endswith('.safetensors'))
  if not files:
    raise errors.UserError(
        f'{os.path.join(directory, "model.safetensors")} is missing: {directory} has no *.safetensors '
        f'file (nor {SAFETENSORS_INDEX}); save the model with save_pretrained(..., '
        'safe_serialization=True) (pytorch_model.bin is not read).')
  return [os.path.join(directory, f) for f in files]


class Tensors:
  """The tensors of safetensors files by name, read one at a time as float32 numpy arrays.

  Records which were read, so that `unread()` names the tensors a conversion did not map.
  """

  def __init__(self, files: list[str]):
    self._file_of, self._read = {}, set()
    for path in files:
      with safetensors.safe_open(path, framework='np') as f:
        for name in f.keys():
          self._file_of[name] = path

  def __contains__(self, name: str) -> bool:
    return name in self._file_of

  def __call__(self, name: str) -> np.ndarray:
    if name not in self._file_of:
      files = sorted(set(self._file_of.values()))
      raise errors.UserError(f'Tensor {name!r} is missing from {", ".join(files)}; the checkpoint '
                             "does not match its config.json's architecture.")
    self._read.add(name)
    with safetensors.safe_open(self._file_of[name], framework='np') as f:
      return np.asarray(f.get_tensor(name), np.float32)

  def unread(self) -> list[str]:
    return sorted(n for n in self._file_of if n not in self._read and not _IGNORED.match(n))


# --- configs -------------------------------------------------------------------------------------

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


def hf_config(config: transformer.ModelConfig, eos_id: int | None) -> dict:
  """config.json for our decoder `config` (see `hf_architecture`), float32 weights."""
  name = hf_architecture(config)
  c = config
  common = {'architectures': [name], 'vocab_size': c.vocab_size, 'hidden_size': c.d_model,
            'num_hidden_layers': c.num_layers, 'num_attention_heads': c.num_heads,
            'intermediate_size': c.mlp_dim, 'tie_word_embeddings': c.tie_embeddings,
            'initializer_range': c.init_std, 'max_position_embeddings': 2048,
            'bos_token_id': None, 'eos_token_id': eos_id, 'pad_token_id': None,
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
  """Our parameter tree (float32 numpy) from the tensors `get(name)` of Hugging Face model `name`."""
  llama = ARCHITECTURES[name] == LLAMA
  layer = _llama_layer if llama else _neox_layer
  layers = [layer(get, i, config) for i in range(config.num_layers)]
  params = {'embedding': get('model.embed_tokens.weight' if llama else 'gpt_neox.embed_in.weight'),
            'final_norm': ({'scale': get('model.norm.weight')} if llama
                           else _norm(get, 'gpt_neox.final_layer_norm'))}
  if not config.tie_embeddings:
    # GPT-NeoX's output layer is embed_out in Pythia's files, lm_head in transformers 5's.
    legacy = not llama and isinstance(get, Tensors) and 'embed_out.weight' in get
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


def abstract_params(config: transformer.ModelConfig):
  """The shapes and dtypes of the parameter tree `config`'s model initialises (unboxed)."""
  model = transformer.make_model(config)
  batch = transformer.dummy_batch(config, 1, 1, 1)
  return nn.meta.unbox(jax.eval_shape(model.init, {'params': jax.random.key(0)}, batch)['params'])


def _check_tree(params, config: transformer.ModelConfig) -> None:
  """The tree must be the model's own: same paths, shapes, float32 (a converter bug otherwise)."""
  expected = abstract_params(config)
  got = jax.tree.map(lambda x: (x.shape, x.dtype), params)
  want = jax.tree.map(lambda x: (x.shape, x.dtype), expected)
  if got != want:
    raise AssertionError(f'Converted parameters do not match the model: {got} != {want}')


# --- our checkpoints -----------------------------------------------------------------------------

def save_params(directory: str, params) -> None:
  """DIR/checkpoints/0: {'params': params} with orbax's StandardSave (the CKPT format above)."""
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(directory), 'checkpoints'),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.StandardSave({'params': jax.tree.map(jnp.asarray, params)}))
  manager.wait_until_finished()
  manager.close()


def read_config(directory: str) -> dict:
  """DIR/config.json of a CKPT or a training workdir, or a UserError naming the missing file."""
  path = os.path.join(directory, 'config.json')
  if not os.path.isfile(path):
    raise errors.UserError(f'{path} is missing: --src must be a checkpoint from --from=hf or a '
                           'training workdir (config.json and checkpoints/).')
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def load_params(directory: str, config: transformer.ModelConfig):
  """The 'params' of the latest checkpoint in DIR/checkpoints (float32 numpy), restored alone.

  Works for a CKPT ({'params': ...}) and for a training checkpoint (TrainState: step, params,
  opt_state), whose optimizer state is not read.
  """
  checkpoints = os.path.join(os.path.abspath(directory), 'checkpoints')
  step = None
  if os.path.isdir(checkpoints):
    manager = ocp.CheckpointManager(checkpoints,
                                    options=ocp.CheckpointManagerOptions(read_only=True))
    step = manager.latest_step()
  if step is None:
    raise errors.UserError(f'{checkpoints} holds no checkpoint; --src must be a checkpoint from '
                           '--from=hf or a training workdir with a saved step.')
  target = {'params': abstract_params(config)}
  restore_args = ocp.checkpoint_utils.construct_restore_args(target)
  try:
    restored = manager.restore(step, args=ocp.args.PyTreeRestore(
        item=target, restore_args=restore_args, partial_restore=True))
  except (ValueError, KeyError) as e:
    raise errors.UserError(f'{checkpoints}/{step}: its params do not match the model of '
                           f'{directory}/config.json ({e}).') from e
  finally:
    manager.close()
  return jax.tree.map(lambda x: np.asarray(x, np.float32), restored['params'])


# --- the two directions --------------------------------------------------------------------------

@dataclasses.dataclass
class Converted:
  """What a conversion did: the architecture, our model keys, the tokenizer it carried, notes."""
  architecture: str
  model: dict
  vocabulary: str | None
  notes: list[str]


def _check_destination(dst: str) -> None:
  """A UserError if `dst` exists and is not an empty directory (nothing is overwritten)."""
  dst = os.path.abspath(dst)
  if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
    raise errors.UserError(f'--dst={dst} exists and is not empty; give a new directory (nothing '
                           'is overwritten).')


def _fresh_destination(dst: str) -> str:
  """A temporary sibling of `dst` to write into, moved into place by `_commit`."""
  _check_destination(dst)
  tmp = f'{os.path.abspath(dst)}.partial-{os.getpid()}'
  shutil.rmtree(tmp, ignore_errors=True)
  os.makedirs(tmp)
  return tmp


def _commit(tmp: str, dst: str) -> None:
  """Moves the finished `tmp` into place as `dst` (an empty `dst` directory is replaced)."""
  dst = os.path.abspath(dst)
  if os.path.isdir(dst):
    os.rmdir(dst)
  os.rename(tmp, dst)


def import_checkpoint(src: str, dst: str) -> Converted:
  """Hugging Face model directory `src` -> our CKPT `dst` (see the module docstring)."""
  from experiments import base  # the full config schema and defaults

  _check_destination(dst)
  hf = read_hf_config(src)
  name = architecture(hf, os.path.join(src, 'config.json'))
  files = safetensors_files(src)
  try:
    keys = model_keys(hf, name)
  except KeyError as e:
    raise errors.UserError(f'{os.path.join(src, "config.json")} has no {e.args[0]!r}, which a '
                           f'{name} config needs.') from None
  config = base.get_config()
  for key, value in keys.items():
    config.model[key] = value
  model_config = transformer.ModelConfig.from_config(config.model)
  tensors = Tensors(files)
  params = params_from_hf(tensors, name, model_config)
  unread = [n for n in tensors.unread()
            if not (model_config.tie_embeddings and n in ('lm_head.weight', 'embed_out.weight'))]
  if unread:
    raise errors.UserError(f'{src}: tensors {unread[:5]}{" ..." if len(unread) > 5 else ""} have no '
                           f'place in our {name}: its config.json asks for a variant this converter '
                           'does not support.')
  _check_tree(params, model_config)
  notes = []
  if ARCHITECTURES[name] == LLAMA and hf.get('sliding_window'):
    notes.append(f'sliding_window={hf["sliding_window"]}: our model attends to the whole sequence, '
                 f'the same function for sequences up to {hf["sliding_window"]} tokens.')
  tmp = _fresh_destination(dst)
  try:
    vocabulary = None
    if os.path.isfile(os.path.join(src, 'tokenizer.json')):
      for file in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src, file)):
          shutil.copyfile(os.path.join(src, file), os.path.join(tmp, file))
      vocabulary = 'hf:' + os.path.join(os.path.abspath(dst), 'tokenizer.json')
      config.data.vocabulary = vocabulary
      notes.extend(_tokenizer_notes(os.path.join(tmp, 'tokenizer.json'), keys['vocab_size']))
    else:
      notes.append(f'{src} has no tokenizer.json: data.vocabulary stays {config.data.vocabulary!r}.')
    with open(os.path.join(tmp, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    save_params(tmp, params)
    _commit(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return Converted(name, keys, vocabulary, notes)


def _tokenizer_notes(path: str, vocab_size: int) -> list[str]:
  """What stops the copied tokenizer from serving as data.vocabulary as it is, if anything."""
  from research.data import vocabularies
  try:
    tokens = vocabularies.make_vocabulary('hf:' + path).vocab_size
  except errors.UserError as e:
    return [f'the tokenizer cannot serve as data.vocabulary as it is: {e}']
  if tokens > vocab_size:
    return [f'the tokenizer has {tokens} tokens, more than model.vocab_size={vocab_size}: ids '
            'above the embedding would fail config validation.']
  return []


def _eos_id(vocabulary: str) -> int | None:
  from research.data import vocabularies
  if vocabulary.startswith(vocabularies.HF_PREFIX):
    return vocabularies.make_vocabulary(vocabulary).eos_id
  return vocabularies.EOS_ID


def export_checkpoint(src: str, dst: str) -> Converted:
  """Our CKPT or training workdir `src` -> Hugging Face model directory `dst`."""
  _check_destination(dst)
  config = read_config(src)
  model_config = transformer.ModelConfig(**config['model'])
  name = hf_architecture(model_config)
  vocabulary = config.get('data', {}).get('vocabulary', 'byte')
  hf = hf_config(model_config, _eos_id(vocabulary))
  params = load_params(src, model_config)
  tensors = hf_from_params(params, model_config)
  tmp = _fresh_destination(dst)
  notes = []
  try:
    with open(os.path.join(tmp, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(hf, f, indent=2, sort_keys=True)
    safetensors.numpy.save_file(tensors, os.path.join(tmp, 'model.safetensors'),
                                metadata={'format': 'pt'})
    if vocabulary.startswith('hf:'):
      tokenizer_dir = os.path.dirname(vocabulary[len('hf:'):])
      for file in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(tokenizer_dir, file)):
          shutil.copyfile(os.path.join(tokenizer_dir, file), os.path.join(tmp, file))
    else:
      notes.append(f'data.vocabulary={vocabulary!r} is no Hugging Face tokenizer: {dst} has none.')
    _commit(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return Converted(name, dataclasses.asdict(model_config), vocabulary, notes)
