"""launch.convert and research/interop/hf_checkpoint.py against transformers, on tiny random models.

Each test builds its Hugging Face model here (no download): logits of ours and of transformers on
the same tokens agree to 1e-4 in float32, in both directions, and export then import is lossless.
"""

import contextlib
import dataclasses
import io
import json
import os
import subprocess
import sys

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing is downloaded

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
import pytest  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from absl import flags  # noqa: E402
from absl.testing import flagsaver  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

from experiments import base  # noqa: E402
from launch import convert  # noqa: E402
from launch import generate as generate_command  # noqa: E402
from research import config as config_lib, errors  # noqa: E402
from research.interop import hf_architectures, hf_checkpoint
from research import checkpoint, finished, train  # noqa: E402
from research.analysis import scores
from research.data import vocabularies  # noqa: E402
from research.model import transformer  # noqa: E402
from tests import commands  # noqa: E402
from tests.data import test_vocabularies  # noqa: E402

VOCAB = 96
TOLERANCE = 1e-4
TEXTS = ['def add(x, y):\n    return x + y\n', 'The quick brown fox jumps over the lazy dog. ',
         'Ünïcödé ☃ and tabs\tand\nnewlines', '<|endoftext|> is special']
LLAMA = {
    'gqa_untied': dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                       rope_theta=500.0),
    'tied_biases_sharded': dict(num_attention_heads=4, num_key_value_heads=4,
                                tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                                rms_norm_eps=1e-5),
    'mistral': dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
                    head_dim=16, sliding_window=64),  # head_dim * heads != hidden_size
}
NEOX = {
    'partial_rotary_parallel': dict(rotary_pct=0.5, use_parallel_residual=True),
    'sequential_gelu_tanh': dict(rotary_pct=0.25, use_parallel_residual=False,
                                 hidden_act='gelu_new', attention_bias=False),
}


def _tokens(seed, shape=(2, 11)):
  return np.random.default_rng(seed).integers(0, VOCAB, shape).astype(np.int32)


def _randomize(model, seed):
  """Every parameter random, norm scales near 1 (biases and scales start at 0 and 1 otherwise)."""
  torch.manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      scale = 'norm' in name and name.endswith('weight')
      p.copy_(torch.randn_like(p) * 0.1 + (1.0 if scale else 0.0))
  return model.eval()


def _hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()


def _our_logits(model_config, params, tokens, segments=None):
  segments = np.ones_like(tokens) if segments is None else segments
  positions = np.zeros_like(tokens)
  for t in range(1, tokens.shape[1]):
    positions[:, t] = np.where(segments[:, t] == segments[:, t - 1], positions[:, t - 1] + 1, 0)
  batch = {'inputs': jnp.asarray(tokens), 'segment_ids': jnp.asarray(segments),
           'positions': jnp.asarray(positions)}
  return np.asarray(jax.jit(transformer.make_model(model_config).apply)({'params': params}, batch))


def _max_diff(a, b):
  assert a.shape == b.shape
  return float(np.abs(a - b).max())


def _tokenizer_file(directory):
  """A byte-level BPE tokenizer (as GPT-NeoX's) of 96 tokens, trained here on TEXTS."""
  tokenizer = tokenizers.Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  tokenizer.train_from_iterator(TEXTS * 10, trainers.BpeTrainer(
      vocab_size=300, special_tokens=['<|endoftext|>', '<|padding|>'], show_progress=False,
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, 'tokenizer.json')
  tokenizer.save(path)
  return path


def _run(**flag_values) -> str:
  """launch.convert's main in-process with these flags; returns what it printed."""
  flags.FLAGS.mark_as_parsed()
  printed = io.StringIO()
  values = {'from': None, 'to': None, **flag_values}
  with flagsaver.flagsaver(**values), contextlib.redirect_stdout(printed):
    convert.main(['launch.convert'])
  return printed.getvalue()


def _restore(ckpt):
  """CKPT's config and params as `init_from` reads them: StandardRestore onto the model's tree."""
  with open(os.path.join(ckpt, 'config.json')) as f:
    config = json.load(f)
  model_config = transformer.ModelConfig(**config['model'])
  abstract = hf_checkpoint.abstract_params(model_config)
  manager = ocp.CheckpointManager(os.path.join(ckpt, 'checkpoints'))
  assert manager.all_steps() == [0]
  restored = manager.restore(0, args=ocp.args.StandardRestore({'params': abstract}))
  manager.close()
  return config, model_config, restored['params']


# --- import: Hugging Face -> ours ----------------------------------------------------------------

@pytest.mark.parametrize('variant', sorted(LLAMA))
def test_import_llama_reproduces_its_logits(tmp_path, variant):
  family = 'Mistral' if variant == 'mistral' else 'Llama'
  hf_config = getattr(transformers, f'{family}Config')(
      vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, **LLAMA[variant])
  model = _randomize(getattr(transformers, f'{family}ForCausalLM')(hf_config), seed=0)
  src, ckpt = tmp_path / 'hf', tmp_path / 'ckpt'
  sharded = variant.endswith('sharded')
  model.save_pretrained(src, safe_serialization=True, max_shard_size='40KB' if sharded else '5GB')
  assert (src / 'model.safetensors.index.json').exists() == sharded
  printed = _run(**{'from': 'hf'}, src=str(src), dst=str(ckpt))
  assert f'Imported {family}ForCausalLM' in printed
  config, model_config, params = _restore(str(ckpt))
  config_lib.check_schema(ml_collections.ConfigDict(config), base.get_config())  # a valid config
  assert model_config.num_kv_heads == LLAMA[variant]['num_key_value_heads']
  assert model_config.tie_embeddings == LLAMA[variant]['tie_word_embeddings']
  assert ('unembedding' in params) != model_config.tie_embeddings
  assert config['data']['vocabulary'] == 'byte'  # no tokenizer.json in src
  assert set(config) == set(base.get_config().to_dict())  # the full config
  tokens = _tokens(1)
  diff = _max_diff(_our_logits(model_config, params, tokens), _hf_logits(model, tokens))
  print(f'llama {variant}: max |logit difference| {diff:.2e}')
  assert diff < TOLERANCE
  # Two packed documents: positions restart, and each matches the model run on it alone.
  segments = np.array([[1] * 6 + [2] * 5], np.int32)
  packed = _our_logits(model_config, params, tokens[:1], segments)
  assert _max_diff(packed[:, 6:], _hf_logits(model, tokens[:1, 6:])) < TOLERANCE


@pytest.mark.parametrize('variant', sorted(NEOX))
def test_import_gpt_neox_reproduces_its_logits(tmp_path, variant):
  hf_config = transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, **NEOX[variant])
  model = _randomize(transformers.GPTNeoXForCausalLM(hf_config), seed=2)
  src, ckpt = tmp_path / 'hf', tmp_path / 'ckpt'
  model.save_pretrained(src, safe_serialization=True)
  tokenizer = _tokenizer_file(str(src))
  with open(src / 'tokenizer_config.json', 'w') as f:
    json.dump({'eos_token': '<|endoftext|>'}, f)
  done = hf_checkpoint.import_checkpoint(str(src), str(ckpt))
  assert any('more than model.vocab_size=96' in note for note in done.notes)  # 300 tokens
  config, model_config, params = _restore(str(ckpt))
  assert (model_config.norm, model_config.parallel_residual) == (
      'layernorm', NEOX[variant]['use_parallel_residual'])
  assert model_config.rotary_fraction == NEOX[variant]['rotary_pct']
  assert model_config.rotary_dim == int(16 * NEOX[variant]['rotary_pct'])
  assert config['data']['vocabulary'] == 'hf:tokenizer.json'  # CKPT's own, relative to CKPT
  assert (config['data']['seq_len'], config['data']['start_id']) == (2048, 0)  # GPT-NeoX defaults
  with open(tokenizer) as f, open(ckpt / 'tokenizer.json') as g:
    assert f.read() == g.read()
  vocabulary = vocabularies.vocabulary_in(config['data']['vocabulary'], str(ckpt))
  assert vocabularies.make_vocabulary(vocabulary).eos_id == 0
  tokens = _tokens(3)
  diff = _max_diff(_our_logits(model_config, params, tokens), _hf_logits(model, tokens))
  print(f'gpt_neox {variant}: max |logit difference| {diff:.2e}')
  assert diff < TOLERANCE


# --- export: ours -> Hugging Face ----------------------------------------------------------------

SMALL = transformer.ModelConfig(vocab_size=VOCAB, d_model=32, num_layers=2, num_heads=4,
                                head_dim=8, mlp_dim=48)
OURS = {
    'default': SMALL,
    'gqa_untied_biases': dataclasses.replace(SMALL, num_kv_heads=1, tie_embeddings=False,
                                             attention_bias=True, mlp_bias=True, rope_base=700.0),
    'neox_partial_rotary_parallel': dataclasses.replace(
        SMALL, norm='layernorm', mlp='gelu', attention_bias=True, mlp_bias=True,
        parallel_residual=True, rotary_fraction=0.5, tie_embeddings=False, norm_eps=1e-5),
    'neox_unscanned_tied': dataclasses.replace(
        SMALL, norm='layernorm', mlp='gelu_tanh', mlp_bias=True, rotary_fraction=0.25,
        scan_layers=False),
}


def _random_params(model_config, seed):
  """Our model's parameters, every one random (norm scales near 1)."""
  abstract = hf_checkpoint.abstract_params(model_config)
  leaves, treedef = jax.tree.flatten_with_path(abstract)
  rng = np.random.default_rng(seed)
  values = [rng.normal(1.0 if 'scale' in jax.tree_util.keystr(path) else 0.0, 0.1, leaf.shape)
            for path, leaf in leaves]
  return jax.tree.unflatten(treedef, [v.astype(np.float32) for v in values])


def _write_ckpt(directory, model_config, params, training: bool):
  """A CKPT ({'params'}) or a training workdir (TrainState with optimizer state, step 7)."""
  config = base.get_config()
  for key, value in dataclasses.asdict(model_config).items():
    config.model[key] = value
  os.makedirs(directory)
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f)
  if not training:
    checkpoint.save_params(directory, params)
    return
  state = train.TrainState(step=jnp.asarray(7, jnp.int32), params=params,
                           opt_state=optax.adamw(1e-3).init(params))
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(directory), 'checkpoints'),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(7, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  manager.close()


@pytest.mark.parametrize('variant', sorted(OURS))
def test_export_reproduces_our_logits_and_reimports_losslessly(tmp_path, variant):
  model_config = OURS[variant]
  params = _random_params(model_config, seed=4)
  src, hf_dir, back = tmp_path / 'ours', tmp_path / 'hf', tmp_path / 'back'
  _write_ckpt(str(src), model_config, params, training=variant == 'gqa_untied_biases')
  printed = _run(to='hf', src=str(src), dst=str(hf_dir))
  expected = 'GPTNeoXForCausalLM' if variant.startswith('neox') else 'LlamaForCausalLM'
  assert f'as {expected}' in printed
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir).eval()
  assert type(model).__name__ == expected
  # data.seq_len and the byte vocabulary's start id (the pad id 0).
  assert (model.config.max_position_embeddings, model.config.bos_token_id) == (256, 0)
  tokens = _tokens(5)
  diff = _max_diff(_hf_logits(model, tokens), _our_logits(model_config, params, tokens))
  print(f'export {variant}: max |logit difference| {diff:.2e}')
  assert diff < TOLERANCE
  hf_checkpoint.import_checkpoint(str(hf_dir), str(back))
  _, back_config, back_params = _restore(str(back))
  switches = ('num_heads', 'kv_heads', 'head_dim', 'mlp', 'norm', 'attention_bias', 'mlp_bias',
              'parallel_residual', 'rotary_fraction', 'rope_base', 'tie_embeddings', 'norm_eps')
  assert all(getattr(back_config, k) == getattr(model_config, k) for k in switches)
  if not model_config.scan_layers:  # imports are scanned: stack the layers to compare
    params = {**{k: v for k, v in params.items() if not k.startswith('layers_')},
              'layers': jax.tree.map(lambda *xs: np.stack(xs),
                                     *[params[f'layers_{i}'] for i in range(2)])}
  assert jax.tree.structure(back_params) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back_params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), b)  # bit for bit


def test_an_imported_checkpoint_trains_on_a_sharded_mesh(tmp_path, data_dir):
  hf_config = transformers.LlamaConfig(vocab_size=384, hidden_size=32, intermediate_size=48,
                                       num_hidden_layers=2, **LLAMA['gqa_untied'])
  src, ckpt = tmp_path / 'hf', tmp_path / 'ckpt'
  _randomize(transformers.LlamaForCausalLM(hf_config), seed=6).save_pretrained(src)
  hf_checkpoint.import_checkpoint(str(src), str(ckpt))
  config_dict, _, params = _restore(str(ckpt))
  config = base.get_config()
  config.model.update(config_dict['model'])
  # Rows of 64 tokens, as most runs of the suite pack the session's data stores (a new length
  # packs them again).
  config.data.seq_len, config.train.batch_size = 64, 4
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = 2, 2, 2  # heads over tensor, kv_heads not
  trainer = train.Trainer(config)
  state = trainer.init_state()
  state = state.replace(params=jax.device_put(params, trainer.state_shardings.params))
  assert (*state.params['layers']['attention']['key'].sharding.spec, None, None)[2] is None
  rows = np.ones((4, 64), np.int32)
  batch = {'inputs': _tokens(7, (4, 64)) + 1, 'targets': _tokens(8, (4, 64)) + 1,
           'segment_ids': rows, 'positions': np.cumsum(rows, 1) - 1,
           'weights': rows.astype(np.float32)}
  new_state, metrics = trainer.step(state, trainer.place(batch), train.step_rng(0, 0))
  assert np.isfinite(float(metrics['loss'])) and int(new_state.step) == 1
  # Continued pretraining from it with init.path, as a run: it starts from the imported weights.
  config.init.path, config.data.store_dir = str(ckpt), data_dir
  config.train.update(steps=2, log_every=1)
  config.schedule.warmup_steps = 1
  config.eval.update(every=2, batches=1, batch_size=4)
  start = train.state_from_checkpoint(train.Trainer(config), config.init, 2)
  for a, b in zip(jax.tree.leaves(start.params), jax.tree.leaves(params)):
    np.testing.assert_array_equal(np.asarray(a), b)
  train.train(config, str(tmp_path / 'continued'))
  with open(tmp_path / 'continued' / 'metrics.jsonl') as f:
    lines = [json.loads(line) for line in f]
  assert [m['step'] for m in lines if 'loss' in m] == [1, 2]
  assert [m['step'] for m in lines if 'eval/stdlib_code/loss' in m] == [0, 2]


def test_a_moved_import_keeps_its_tokenizer_bos_and_context_length(tmp_path):
  """Llama's ids (<unk> 0, <s> 1, </s> 2): scoring and generation start from <s>, as transformers
  does, after the converted directory moved; export gives back bos_token_id and the context."""
  hf_config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=48,
                                       num_hidden_layers=2, max_position_embeddings=64,
                                       bos_token_id=1, eos_token_id=2, **LLAMA['gqa_untied'])
  model = _randomize(transformers.LlamaForCausalLM(hf_config), seed=9)
  src, ckpt, moved = tmp_path / 'hf', tmp_path / 'ckpt', tmp_path / 'elsewhere' / 'ckpt'
  model.save_pretrained(src, safe_serialization=True)
  test_vocabularies.llama_like_tokenizer(src)
  hf_checkpoint.import_checkpoint(str(src), str(ckpt))
  config, _, _ = _restore(str(ckpt))
  assert config['data']['vocabulary'] == 'hf:tokenizer.json'
  assert (config['data']['seq_len'], config['data']['start_id']) == (64, 1)
  moved.parent.mkdir()
  os.rename(ckpt, moved)
  # Scoring: the nll of each token given <s> and the tokens before it, as transformers gives it.
  loaded = finished.load_checkpoint(str(moved), devices=jax.devices()[:1])
  vocabulary = vocabularies.make_vocabulary(loaded.config.data.vocabulary)
  tokens = list(vocabulary.encode('b a j c d d e')) + [vocabulary.eos_id]
  assert loaded.start_id == 1 and tokens == [4, 3, 12, 5, 6, 6, 7, 2]
  nll = scores.model_scores(loaded, np.array(tokens), np.array([0, len(tokens)]), batch_size=1)
  with torch.no_grad():
    logits = model(torch.tensor([[1] + tokens[:-1]])).logits[0].double()
  expected = -torch.log_softmax(logits, -1)[torch.arange(len(tokens)), torch.tensor(tokens)].mean()
  assert abs(nll['nll'][0] - float(expected)) < TOLERANCE
  # Generation finds the tokenizer in the moved directory and decodes with it.
  printed = commands.run_main(generate_command.main, checkpoint=[str(moved)], prompt=['b a j'],
                              max_new_tokens=3, stop=[])
  assert f'{moved} (step 0, decoder), greedy:' in printed
  assert '--- prompt 1 ---\nb a j\n--- continuation (3 tokens, --max_new_tokens=3) ---' in printed
  # Export: the start id is bos_token_id and data.seq_len max_position_embeddings.
  hf_checkpoint.export_checkpoint(str(moved), str(tmp_path / 'back'))
  back = transformers.AutoConfig.from_pretrained(tmp_path / 'back')
  assert (back.bos_token_id, back.eos_token_id, back.max_position_embeddings) == (1, 2, 64)
  assert (tmp_path / 'back' / 'tokenizer.json').read_text() == (src / 'tokenizer.json').read_text()


# --- bad input -----------------------------------------------------------------------------------

def test_an_unsupported_architecture_is_one_error_naming_it_and_the_supported(tmp_path):
  (tmp_path / 'hf').mkdir()
  with open(tmp_path / 'hf' / 'config.json', 'w') as f:
    json.dump({'architectures': ['GPT2LMHeadModel'], 'model_type': 'gpt2'}, f)
  result = subprocess.run([sys.executable, '-m', 'launch.convert', '--from=hf',
                           f'--src={tmp_path / "hf"}', f'--dst={tmp_path / "ckpt"}'],
                          capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {tmp_path / "hf" / "config.json"}: architecture GPT2LMHeadModel is not supported; '
      'supported: LlamaForCausalLM, MistralForCausalLM, GPTNeoXForCausalLM.')
  assert 'Traceback' not in result.stderr and not (tmp_path / 'ckpt').exists()


def test_missing_files_and_bad_flags_are_named(tmp_path):
  hf_dir = tmp_path / 'hf'
  hf_dir.mkdir()
  with pytest.raises(SystemExit, match=r'^error: .*hf/config.json is missing'):
    _run(**{'from': 'hf'}, src=str(hf_dir), dst=str(tmp_path / 'a'))
  with open(hf_dir / 'config.json', 'w') as f:
    json.dump({'architectures': ['LlamaForCausalLM']}, f)
  with pytest.raises(SystemExit, match=r'^error: .*hf/model.safetensors is missing'):
    _run(**{'from': 'hf'}, src=str(hf_dir), dst=str(tmp_path / 'a'))
  with pytest.raises(SystemExit, match=r'^error: Give exactly one of --from=hf .* and --to=hf'):
    _run(src=str(hf_dir), dst=str(tmp_path / 'a'))
  with pytest.raises(SystemExit, match=r'^error: --src=.*ours has no config.json'):
    _run(to='hf', src=str(tmp_path / 'ours'), dst=str(tmp_path / 'a'))
  assert not (tmp_path / 'a').exists()


def test_export_refuses_a_model_without_a_hugging_face_equivalent(tmp_path):
  config = dataclasses.replace(SMALL, qk_norm=True)
  _write_ckpt(str(tmp_path / 'ours'), config, _random_params(config, 0), training=False)
  with pytest.raises(errors.UserError, match=r'as LlamaForCausalLM .* cannot have model.qk_norm'):
    hf_checkpoint.export_checkpoint(str(tmp_path / 'ours'), str(tmp_path / 'hf'))
  with pytest.raises(errors.UserError, match=r'model.moe_experts=4 \(only dense MLPs\)'):
    hf_architectures.hf_architecture(dataclasses.replace(SMALL, moe_experts=4))
  (tmp_path / 'full').mkdir()
  (tmp_path / 'full' / 'x').write_text('')
  with pytest.raises(errors.UserError, match=r'full exists and is not empty'):
    hf_checkpoint.export_checkpoint(str(tmp_path / 'ours'), str(tmp_path / 'full'))


# --- tokenizers ----------------------------------------------------------------------------------

def test_hf_tokenizer_is_a_seqio_vocabulary(tmp_path):
  path = _tokenizer_file(str(tmp_path / 'tok'))
  vocabulary = vocabularies.make_vocabulary(f'hf:{path}', extra_ids=4)
  base_size = tokenizers.Tokenizer.from_file(path).get_vocab_size()
  assert vocabulary.vocab_size == base_size + 4 and vocabulary.eos_id == 0  # '<|endoftext|>'
  table = vocabularies.token_bytes(vocabulary)
  assert table[0] == table[1] == 0 and not table[base_size:].any()  # special and extra ids
  for text in TEXTS[:3]:
    ids = vocabulary.encode(text)
    assert vocabulary.decode(ids) == text
    assert vocabulary.decode(list(ids) + [vocabulary.eos_id, 5, 6]) == text  # stops at EOS
    assert table[ids].sum() == len(text.encode('utf-8'))  # exact bits per byte
    assert vocabulary.encode_tf(text).numpy().tolist() == list(ids)
    assert vocabulary.decode_tf(np.asarray(ids, np.int32)).numpy().decode('utf-8') == text
  # A tokenizer_config.json beside it names the EOS token.
  with open(tmp_path / 'tok' / 'tokenizer_config.json', 'w') as f:
    json.dump({'eos_token': {'content': '<|padding|>'}}, f)
  assert vocabularies.make_vocabulary(f'hf:{path}').eos_id == 1
  with pytest.raises(errors.UserError, match=r'no tokenizer file at .*missing.json'):
    vocabularies.make_vocabulary(f'hf:{tmp_path}/missing.json')
