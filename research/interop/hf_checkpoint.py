"""Hugging Face checkpoints in and out: the Llama family (Llama, Mistral) and GPT-NeoX (Pythia).

`import_checkpoint(DIR, CKPT)` reads a Hugging Face model directory (config.json and safetensors,
one file or shards listed by model.safetensors.index.json; read with the `safetensors` numpy API,
no torch) and writes CKPT in this project's format, which `init_from` reads:

    CKPT/config.json            research/defaults.py's get_config() with the imported model.* keys,
                                model.vocab_size from the checkpoint, data.seq_len and
                                data.start_id from its max_position_embeddings and bos_token_id
                                and, when DIR has a tokenizer.json, data.vocabulary =
                                'hf:tokenizer.json': relative, read from CKPT
                                (vocabularies.vocabulary_in), so CKPT still finds it when moved
    CKPT/checkpoints/0/         orbax: CheckpointManager(CKPT/checkpoints).save(0,
                                args=StandardSave({'params': params})), params exactly the tree the
                                model's init makes (unboxed, float32; layers scanned)
    CKPT/tokenizer.json         copied from DIR with tokenizer_config.json and
                                special_tokens_map.json (they name the EOS token), when present

`export_checkpoint(SRC, DIR)` writes DIR/config.json and DIR/model.safetensors (float32) that
transformers loads with AutoModelForCausalLM, from such a CKPT or a training workdir (the 'params'
of its latest checkpoint, restored alone), and copies the tokenizer files of an 'hf:' vocabulary.
Its max_position_embeddings is SRC's data.seq_len and its bos_token_id SRC's start id, so import
then export keeps both.

The architectures and their tensor layouts are in research/interop/hf_architectures.py.
"""

import dataclasses
import json
import os
import re
import shutil

import flax.linen as nn
import jax
import numpy as np
import safetensors
import safetensors.numpy

from research import checkpoint, defaults, errors, finished
from research.data import vocabularies

from research.interop import hf_architectures as hf_arch
from research.model import transformer

TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')
SAFETENSORS_INDEX = 'model.safetensors.index.json'
# Buffers older checkpoints carry that are no parameters (causal masks, rotary frequencies).
_IGNORED = re.compile(r'.*\.(rotary_emb\.inv_freq|attention\.bias|attention\.masked_bias)$')


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

def load_params(src: str, config: transformer.ModelConfig):
  """The 'params' of the checkpoint that run path `src` names (research/finished.restore_params:
  a training workdir, one of its checkpoints, or a CKPT), as float32 numpy on the host; the
  optimizer state of a training checkpoint is not read."""
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                        abstract_params(config))
  params, _ = finished.restore_params(src, target, f'--src={src}')
  return jax.tree.map(lambda x: np.asarray(x, np.float32), params)


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

  _check_destination(dst)
  hf = read_hf_config(src)
  name = hf_arch.architecture(hf, os.path.join(src, 'config.json'))
  files = safetensors_files(src)
  try:
    keys = hf_arch.model_keys(hf, name)
  except KeyError as e:
    raise errors.UserError(f'{os.path.join(src, "config.json")} has no {e.args[0]!r}, which a '
                           f'{name} config needs.') from None
  config = defaults.get_config()
  for key, value in keys.items():
    config.model[key] = value
  config.data.update(hf_arch.data_keys(hf))
  model_config = transformer.ModelConfig.from_config(config.model)
  tensors = Tensors(files)
  params = hf_arch.params_from_hf(tensors, name, model_config)
  unread = [n for n in tensors.unread()
            if not (model_config.tie_embeddings and n in ('lm_head.weight', 'embed_out.weight'))]
  if unread:
    raise errors.UserError(f'{src}: tensors {unread[:5]}{" ..." if len(unread) > 5 else ""} have no '
                           f'place in our {name}: its config.json asks for a variant this converter '
                           'does not support.')
  _check_tree(params, model_config)
  notes = []
  if hf_arch.ARCHITECTURES[name] == hf_arch.LLAMA and hf.get('sliding_window'):
    notes.append(f'sliding_window={hf["sliding_window"]}: our model attends to the whole sequence, '
                 f'the same function for sequences up to {hf["sliding_window"]} tokens.')
  tmp = _fresh_destination(dst)
  try:
    vocabulary = None
    if os.path.isfile(os.path.join(src, 'tokenizer.json')):
      for file in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src, file)):
          shutil.copyfile(os.path.join(src, file), os.path.join(tmp, file))
      config.data.vocabulary = 'hf:tokenizer.json'  # read from CKPT, wherever it moves
      vocabulary = 'hf:' + os.path.join(os.path.abspath(dst), 'tokenizer.json')
      notes.extend(_tokenizer_notes(os.path.join(tmp, 'tokenizer.json'), keys['vocab_size']))
    else:
      notes.append(f'{src} has no tokenizer.json: data.vocabulary stays {config.data.vocabulary!r}.')
    with open(os.path.join(tmp, 'config.json'), 'w', encoding='utf-8') as f:
      json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    checkpoint.save_params(tmp, params)
    _commit(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return Converted(name, keys, vocabulary, notes)


def _tokenizer_notes(path: str, vocab_size: int) -> list[str]:
  """What stops the copied tokenizer from serving as data.vocabulary as it is, if anything."""
  try:
    tokens = vocabularies.make_vocabulary('hf:' + path).vocab_size
  except errors.UserError as e:
    return [f'the tokenizer cannot serve as data.vocabulary as it is: {e}']
  if tokens > vocab_size:
    return [f'the tokenizer has {tokens} tokens, more than model.vocab_size={vocab_size}: ids '
            'above the embedding would fail config validation.']
  return []


def _eos_id(vocabulary: str) -> int | None:
  if vocabulary.startswith(vocabularies.HF_PREFIX):
    return vocabularies.make_vocabulary(vocabulary).eos_id
  return vocabularies.EOS_ID


def export_checkpoint(src: str, dst: str) -> Converted:
  """Our CKPT or training workdir `src` -> Hugging Face model directory `dst`."""
  _check_destination(dst)
  config = finished.load_config(src, f'--src={src}')  # its tokenizer found where it names it
  model_config = transformer.ModelConfig.from_config(config.model)
  name = hf_arch.hf_architecture(model_config)
  vocabulary = config.data.vocabulary
  hf = hf_arch.hf_config(model_config, _eos_id(vocabulary), vocabularies.data_start_id(config.data),
                         config.data.seq_len)
  params = load_params(src, model_config)
  tensors = hf_arch.hf_from_params(params, model_config)
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
