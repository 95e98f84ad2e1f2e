"""Per-document scores (research/analysis/scores.py, DELT's LQS of research/analysis/lqs.py) and the
launch.score command, against numpy."""

import json
import math
import os
import zlib

import jax
import jax.numpy as jnp
from jax import flatten_util
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import base
from launch import score as score_command
from research import finished, train
from research.analysis import lqs, scores
from research.data import store as store_lib
from research.data import tasks, vocabularies, windows
from tests import commands

SEQ_LEN = 32
TEXTS = [
    'def f(x):\n    return x + 1',
    'a',
    'The quick brown fox jumps over the lazy dog. ' * 2,  # 91 tokens: windows of 32, 32 and 27
    'import os\nimport sys\n',
    'zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz',  # 41 tokens: 32 and 9
    'hello world',
    'x = [i * i for i in range(10)]',
    '# a comment',
    'print("scores")',
    'while True:\n    pass',
    'ab' * 20,
    'Min-K% prob averages the least likely tokens.',
]


def _config(data_dir, notes, seed=0):
  config = base.get_config()
  config.seed = seed
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads, config.model.head_dim = 2, 16
  config.model.init_std = 0.5  # far from uniform, so the token log-probs differ
  config.data.seq_len, config.data.store_dir = SEQ_LEN, data_dir
  config.data.tasks = ml_collections.ConfigDict(
      {'notes': {'source': 'files', 'pattern': notes, 'format': 'jsonl'}})
  config.data.mixture = ml_collections.ConfigDict({'notes': 1.0})
  config.eval.batch_size = 8
  return config


def save_run(config, workdir, params=None):
  """A params-only checkpoint of `params` (default: a freshly initialised model's) and the run's
  config.json."""
  if params is None:
    params = train.Trainer(config, jax.devices()[:1]).init_state().params
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.StandardSave({'params': params}))
  manager.wait_until_finished()
  manager.close()
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config.to_dict(), f)
  return workdir


@pytest.fixture(scope='module')
def runs(data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp('scores')
  # Document ids are PATH:LINE and the validation split goes by their hash: a file name whose ids
  # all fall in the training split keeps every text in the store the tests score.
  notes = next(path for path in (str(root / f'notes{k}.jsonl') for k in range(1000))
               if not any(tasks.is_validation(f'{path}:{i + 1}') for i in range(len(TEXTS))))
  with open(notes, 'w') as f:
    f.writelines(json.dumps({'text': t, 'n': i}) + '\n' for i, t in enumerate(TEXTS))
  run_a = save_run(_config(data_dir, notes, seed=0), str(root / 'a'))
  run_b = save_run(_config(data_dir, notes, seed=1), str(root / 'b'))
  return {'root': root, 'notes': notes, 'a': run_a, 'b': run_b}


def window_rows(store, seq_len):
  """Every window of `seq_len` tokens of every document a row of its own (no packing): the
  (document, start) of each row, and int32 `inputs`, `segment_ids` and `positions` [rows, seq_len]
  for the model."""
  windows = [(d, start) for d in range(store.num_documents)
             for start in range(0, len(store.document(d)), seq_len)]
  batch = {k: np.zeros([len(windows), seq_len], np.int32)
           for k in ('inputs', 'segment_ids', 'positions')}
  for row, (d, start) in enumerate(windows):
    window = np.asarray(store.document(d)[start:start + seq_len], np.int32)
    n = len(window)
    batch['inputs'][row, 1:n] = window[:-1]
    batch['segment_ids'][row, :n] = 1
    batch['positions'][row, :n] = np.arange(n)
  return windows, batch


def _reference(loaded, store):
  """Each document's token log-probs and error norms by numpy: every window of SEQ_LEN tokens a
  row of its own (`window_rows`), one forward pass, log-softmax and the norm in float64."""
  windows, batch = window_rows(store, SEQ_LEN)
  targets = [np.asarray(store.document(d)[start:start + SEQ_LEN], np.int32) for d, start in windows]
  apply = jax.jit(lambda params, batch: loaded.model.apply({'params': params}, batch))
  logits_WLV = np.asarray(apply(jax.device_get(loaded.params), batch), np.float64)
  log_probs, norms = [[] for _ in range(store.num_documents)], [[] for _ in range(store.num_documents)]
  for row, ((d, _), window) in enumerate(zip(windows, targets)):
    logits = logits_WLV[row, :len(window)]
    shifted = logits - logits.max(-1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    log_probs[d].append(log_softmax[np.arange(len(window)), window])
    onehot = np.eye(logits.shape[-1])[window]
    norms[d].append(np.linalg.norm(np.exp(log_softmax) - onehot, axis=-1))
  return [np.concatenate(x) for x in log_probs], [np.concatenate(x) for x in norms]


@pytest.fixture(scope='module')
def notes_store(runs):
  config = finished.checkpoint_config(runs['a'])
  tasks.register_config_tasks(config.data)
  return store_lib.load_store('notes', 'train', 'byte', config.data.store_dir)


def test_min_k_el2n_and_windowed_nll_match_numpy(runs, notes_store):
  loaded = finished.load_checkpoint(runs['a'])  # on the 8 test devices, data-parallel
  lengths = np.diff(notes_store.offsets)
  assert lengths.max() == 91 and (lengths > 2 * SEQ_LEN).any() and (lengths < 5).any()
  log_probs, norms = _reference(loaded, notes_store)
  for k in (0.2, 0.5):
    got = scores.model_scores(loaded, notes_store.tokens, notes_store.offsets, k, batch_size=8,
                              group_tokens=100)  # several groups of documents
    for d, (log_prob, norm) in enumerate(zip(log_probs, norms)):
      lowest = np.sort(log_prob)[:max(1, math.floor(k * len(log_prob)))]
      np.testing.assert_allclose(got['min_k_prob'][d], lowest.mean(), rtol=2e-5)
      np.testing.assert_allclose(got['nll'][d], -log_prob.mean(), rtol=2e-5)
      np.testing.assert_allclose(got['el2n'][d], norm.mean(), rtol=2e-5)
    assert (got['min_k_prob'] < -got['nll']).all()  # the least likely tokens, below the mean


def test_prefixed_puts_the_prefix_before_every_document():
  tokens, offsets = scores.prefixed(np.array([7, 8, 9, 4], np.int32), np.array([0, 3, 4]), [1, 2])
  np.testing.assert_array_equal(tokens, [1, 2, 7, 8, 9, 1, 2, 4])
  np.testing.assert_array_equal(offsets, [0, 5, 8])
  assert tokens.dtype == np.int32


def test_a_prefix_conditions_the_documents_and_is_not_scored(runs, notes_store):
  """The log-likelihood of prefix + document, as one document, is the prefix's alone plus the
  document's given the prefix: the prefix is read, not scored."""
  loaded = finished.load_checkpoint(runs['a'])
  prefix = [40, 41, 42]
  tokens, offsets = notes_store.tokens, notes_store.offsets
  lengths_D = np.diff(offsets)
  conditioned = scores.model_scores(loaded, tokens, offsets, batch_size=8, group_tokens=100,
                                    prefix=prefix)['nll']
  whole = scores.model_scores(loaded, *scores.prefixed(tokens, offsets, prefix),
                              batch_size=8)['nll']
  alone = scores.model_scores(loaded, np.tile(np.array(prefix, tokens.dtype), len(lengths_D)),
                              np.arange(len(lengths_D) + 1) * len(prefix), batch_size=8)['nll']
  np.testing.assert_allclose(whole * (lengths_D + 3), alone * 3 + conditioned * lengths_D,
                             rtol=2e-5)
  plain = scores.model_scores(loaded, tokens, offsets, batch_size=8)['nll']
  assert np.abs(conditioned - plain).max() > 1e-3  # the prefix changes the documents' likelihood


def _reference_grand(loaded, store):
  """Each document's GraNd, one document at a time: its windows of SEQ_LEN tokens as rows of a
  plain (un-vmapped, unsharded) model apply, jax.grad of the mean token cross-entropy over all
  its tokens, the gradient flattened and its norm taken by numpy."""
  params = jax.device_get(loaded.params)

  def loss(params, batch, targets, weights):
    logits = loaded.model.apply({'params': params}, batch)
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    target_log_probs = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return -jnp.sum(target_log_probs * weights) / jnp.sum(weights)

  gradient = jax.jit(jax.grad(loss))
  norms = []
  for d in range(store.num_documents):
    document = np.asarray(store.document(d), np.int32)
    num_windows = -(-len(document) // SEQ_LEN)
    batch = {k: np.zeros([num_windows, SEQ_LEN], np.int32)
             for k in ('inputs', 'segment_ids', 'positions')}
    targets = np.zeros([num_windows, SEQ_LEN], np.int32)
    for w in range(num_windows):
      window = document[w * SEQ_LEN:(w + 1) * SEQ_LEN]
      n = len(window)
      targets[w, :n] = window
      batch['inputs'][w, 1:n] = window[:-1]
      batch['segment_ids'][w, :n] = 1
      batch['positions'][w, :n] = np.arange(n)
    weights = (batch['segment_ids'] > 0).astype(np.float32)
    flat, _ = flatten_util.ravel_pytree(gradient(params, batch, targets, weights))
    norms.append(np.linalg.norm(np.asarray(flat, np.float64)))
  return np.array(norms)


@pytest.fixture(scope='module')
def loaded_runs(runs):
  """Both runs' checkpoints, loaded once: each keeps its compiled GraNd batches."""
  return {r: finished.load_checkpoint(runs[r]) for r in 'ab'}


def test_grand_matches_per_document_gradients(loaded_runs):
  # One document of 3 windows, in a batch of 4 rows a document; three of 12 to 16 tokens, in rows of
  # 16. Batches of 8 documents (the 8 test devices), so both are mostly padding documents.
  byte = vocabularies.make_vocabulary('byte', 0)
  store = scores.tokenize_documents([{'id': str(i), 'text': TEXTS[i]} for i in (2, 5, 7, 8)], byte)
  assert list(np.diff(store.offsets)) == [91, 12, 12, 16]
  loaded = loaded_runs['a']
  got = scores.grand_scores(loaded, store.tokens, store.offsets, batch_size=8)['grand']
  np.testing.assert_allclose(got, _reference_grand(loaded, store), rtol=1e-5)
  grouped = scores.grand_scores(loaded, store.tokens, store.offsets, batch_size=8,
                                group_tokens=20)['grand']  # a group of documents each
  np.testing.assert_allclose(grouped, got, rtol=1e-6)


def test_document_rows_give_each_document_its_windows():
  rows = windows.document_rows(np.array([0, 5, 0]), np.array([5, 3, 0]), np.arange(1, 9), 4, 2, 4)
  np.testing.assert_array_equal(rows['targets'], [[[1, 2, 3, 4], [5, 0, 0, 0]],
                                                  [[6, 7, 8, 0], [0, 0, 0, 0]],
                                                  [[0, 0, 0, 0], [0, 0, 0, 0]]])
  np.testing.assert_array_equal(rows['inputs'][0], [[0, 1, 2, 3], [0, 0, 0, 0]])
  np.testing.assert_array_equal(rows['positions'][1], [[0, 1, 2, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(rows['segment_ids'][0], [[1, 1, 1, 1], [1, 0, 0, 0]])
  assert list(windows.power_of_two_ceiling([0, 1, 2, 3, 4, 5, 32, 33])) == [1, 1, 2, 4, 4, 8, 32, 64]


def test_document_scores_on_hand_values():
  log_prob = np.log([0.5, 0.1, 0.2, 0.9, 0.3, 0.05, 0.6, 0.7, 0.8, 0.4, 0.25])
  got = scores.document_scores(log_prob, np.arange(11.0), np.array([0, 1, 11]), k=0.2)
  # Document 0: one token, Min-K% of at least one token. Document 1: floor(0.2 * 10) = 2 tokens.
  np.testing.assert_allclose(got['min_k_prob'], [np.log(0.5), np.log([0.05, 0.1]).mean()])
  np.testing.assert_allclose(got['nll'], [-np.log(0.5), -log_prob[1:].mean()])
  np.testing.assert_allclose(got['el2n'], [0.0, 5.5])
  assert list(scores.min_k_count([4, 5, 10, 14, 15], 0.2)) == [1, 1, 2, 2, 3]


def test_zlib_ratio_of_known_texts():
  assert scores.zlib_ratio('a' * 1000) == len(zlib.compress(b'a' * 1000, 9)) / 1000 < 0.03
  assert scores.zlib_ratio('é' * 10) == len(zlib.compress('é'.encode() * 10, 9)) / 20  # UTF-8 bytes
  noise = np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes()
  assert scores.zlib_ratio(noise) > 1.0  # incompressible
  assert scores.zlib_ratio('') == 0.0


def _run(**flag_values) -> str:
  """launch.score's main in-process with these flags; returns what it printed."""
  values = {'task': None, 'text_file': None, 'early_checkpoint': [], 'batch_size': 0,
            'scores': ['nll', 'perplexity', 'min_k', 'el2n', 'length', 'zlib'], 'min_k': 0.2,
            'split': 'train', 'metadata': False, 'store_dir': None, 'lqs_target': None,
            'lqs_steps': 10, **flag_values}
  return commands.run_main(score_command.main, **values)


def _lines(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_command_scores_a_task_and_feeds_a_subset(runs, notes_store, tmp_path):
  out = tmp_path / 'notes.jsonl'
  printed = _run(checkpoint=[runs['a'], runs['b']], early_checkpoint=[runs['b']], task='notes',
                 out=str(out), scores=['min_k', 'el2n', 'length', 'zlib', 'learnability'],
                 metadata=True)
  assert f'Scored {notes_store.num_documents} documents' in printed
  lines = _lines(out)
  assert [line['id'] for line in lines] == notes_store.doc_ids
  assert list(lines[0]) == ['id', 'num_tokens', 'nll', 'min_k_prob', 'el2n', 'length', 'zlib_ratio',
                            'learnability', 'metadata']
  a, b = (scores.model_scores(finished.load_checkpoint(runs[r]), notes_store.tokens,
                              notes_store.offsets) for r in 'ab')
  for d, line in enumerate(lines):
    assert line['num_tokens'] == line['length'] == len(notes_store.document(d))
    assert line['nll'] == pytest.approx((a['nll'][d] + b['nll'][d]) / 2, rel=1e-6)  # averaged
    assert line['el2n'] == pytest.approx((a['el2n'][d] + b['el2n'][d]) / 2, rel=1e-6)
    assert line['learnability'] == pytest.approx(b['nll'][d] - line['nll'], rel=1e-5, abs=1e-6)
    text = TEXTS[line['metadata']['n']]
    assert line['zlib_ratio'] == scores.zlib_ratio(text)
  manifest = json.loads((tmp_path / 'notes.jsonl.manifest.json').read_text())
  assert manifest['task'] == 'notes' and manifest['vocabulary'] == 'byte'
  assert [c['step'] for c in manifest['checkpoints']] == [0, 0]
  assert sorted(os.listdir(tmp_path)) == ['notes.jsonl', 'notes.jsonl.manifest.json']

  subset = {'source': 'subset', 'task': 'notes', 'scores': str(out), 'score_field': 'nll',
            'keep': 'lowest', 'num_documents': 3}
  tasks.register_config_tasks(ml_collections.ConfigDict({'seqio_modules': (), 'tasks': {
      'notes': {'source': 'files', 'pattern': runs['notes'], 'format': 'jsonl'},
      'easiest': subset}}))
  kept = {doc_id for doc_id, _ in tasks.split_documents('easiest', 'train')}
  assert kept == {line['id'] for line in sorted(lines, key=lambda line: line['nll'])[:3]}


def test_command_scores_a_text_file(runs, tmp_path):
  text_file = tmp_path / 'docs.txt'
  text_file.write_text('first document\n\nthe second one\n')
  out = tmp_path / 'out' / 'docs.jsonl'
  _run(checkpoint=[os.path.join(runs['a'], 'checkpoints', '0')], text_file=str(text_file),
       out=str(out))
  lines = _lines(out)
  assert [line['id'] for line in lines] == [f'{text_file}:1', f'{text_file}:3']
  assert [line['num_tokens'] for line in lines] == [15, 15]
  assert lines[1]['zlib_ratio'] == scores.zlib_ratio('the second one')
  assert lines[0]['perplexity'] == pytest.approx(math.exp(lines[0]['nll']))
  prefixed = tmp_path / 'prefixed.jsonl'
  _run(checkpoint=[os.path.join(runs['a'], 'checkpoints', '0')], text_file=str(text_file),
       out=str(prefixed), prefix='doc: ')
  store = scores.tokenize_documents(scores.text_file_documents(str(text_file)),
                                    vocabularies.make_vocabulary('byte', 0))
  expected = scores.model_scores(finished.load_checkpoint(runs['a']), store.tokens, store.offsets,
                                 prefix=vocabularies.make_vocabulary('byte', 0).encode('doc: '))
  np.testing.assert_allclose([line['nll'] for line in _lines(prefixed)], expected['nll'],
                             rtol=1e-6)
  assert [line['num_tokens'] for line in _lines(prefixed)] == [15, 15]  # the documents' own
  assert json.loads((tmp_path / 'prefixed.jsonl.manifest.json').read_text())['prefix'] == 'doc: '


def test_command_averages_grand_over_checkpoints(runs, loaded_runs, tmp_path):
  text_file = tmp_path / 'docs.txt'
  text_file.write_text('first document\nthe second one\n')  # 15 tokens each: one shape to compile
  out = tmp_path / 'docs.jsonl'
  _run(checkpoint=[runs['a'], runs['b']], text_file=str(text_file), out=str(out), scores=['grand'])
  lines = _lines(out)
  assert list(lines[0]) == ['id', 'num_tokens', 'nll', 'grand']
  store = scores.tokenize_documents(scores.text_file_documents(str(text_file)),
                                    vocabularies.make_vocabulary('byte', 0))
  a, b = (scores.grand_scores(loaded_runs[r], store.tokens, store.offsets)['grand'] for r in 'ab')
  assert not np.allclose(a, b)
  np.testing.assert_allclose([line['grand'] for line in lines], (a + b) / 2, rtol=1e-6)


def test_user_errors_are_one_line_naming_the_flag(runs, tmp_path):
  out = str(tmp_path / 'out.jsonl')
  empty = tmp_path / 'empty'
  empty.mkdir()
  cases = [
      (dict(checkpoint=[str(empty)], task='notes'), f'--checkpoint={empty} holds no checkpoint'),
      (dict(checkpoint=[str(tmp_path / 'nowhere')], task='notes'), 'nowhere does not exist'),
      (dict(checkpoint=[runs['a']], task='nots'),
       r"--task names an unknown task 'nots'; did you mean \['notes'"),  # other tests' tasks too
      (dict(checkpoint=[runs['a']], text_file=str(tmp_path / 'missing.txt')),
       'missing.txt does not exist'),
      (dict(checkpoint=[runs['a']], task='notes', scores=['nll', 'gradnorm']),
       "--scores names unknown score 'gradnorm'"),
      (dict(checkpoint=[runs['a']], task='notes', scores=['learnability']),
       'learnability needs --early_checkpoint'),
      (dict(checkpoint=[runs['a']], task='notes', min_k=0.0), r'--min_k=0.0 must be in \(0, 1\]'),
      (dict(checkpoint=[runs['a']], task='notes', scores=['grand'], prefix='x'),
       '--scores=grand takes no --prefix'),
      (dict(checkpoint=[runs['a']], task='notes', batch_size=12),
       '--batch_size=12 must be a multiple of the data-parallel size 8'),
      (dict(checkpoint=[runs['a']]), 'Give exactly one of --task'),
      (dict(checkpoint=[runs['a']], task='notes', scores=['difficulty']),
       "have no 'difficulty' metadata"),
  ]
  for flag_values, message in cases:
    with pytest.raises(SystemExit, match=r'^error: .*' + message):
      _run(out=out, **flag_values)
  assert os.listdir(tmp_path) == ['empty']  # nothing written


# DELT's Learnability-Quality Score (research/analysis/lqs.py).

ETA = 0.1


def _quadratic_loss(params, batch):
  theta = params['theta']
  return 0.5 * theta @ batch['A'] @ theta - batch['c'] @ theta


def test_trajectory_and_costates_follow_the_recursion_on_quadratics():
  """Proxy losses 0.5 x'A_t x - c_t'x (Hessian A_t), target 0.5 |x - x*|^2 (gradient x - x*)."""
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(4):
    m = rng.normal(size=(3, 3))
    batches.append({'A': jnp.asarray(m @ m.T + np.eye(3), jnp.float32),
                    'c': jnp.asarray(rng.normal(size=3), jnp.float32)})
  star = np.array([1.0, -2.0, 0.5])
  target_grad = lambda params: {'theta': params['theta'] - jnp.asarray(star, jnp.float32)}
  start = {'theta': jnp.asarray(rng.normal(size=3), jnp.float32)}
  states = lqs.trajectory(_quadratic_loss, start, batches, ETA)
  lambdas = lqs.costates(_quadratic_loss, target_grad, states, batches, ETA)
  theta = [np.asarray(start['theta'], np.float64)]
  for b in batches:
    a, c = np.asarray(b['A'], np.float64), np.asarray(b['c'], np.float64)
    theta.append(theta[-1] - ETA * (a @ theta[-1] - c))
  lam = [theta[-1] - star]
  for t in reversed(range(4)):
    a = np.asarray(batches[t]['A'], np.float64)
    lam.append(lam[-1] + (theta[t] - star) - ETA * a @ lam[-1])
  lam = lam[::-1]
  assert len(states) == len(lambdas) == 5
  for t in range(5):
    np.testing.assert_allclose(states[t]['theta'], theta[t], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(lambdas[t]['theta'], lam[t], rtol=1e-4, atol=1e-5)


def test_scores_are_eta_times_summed_dots_over_the_first_norm_z_normalised_and_clipped():
  dots = np.array([[1.0, 2.0, -1.0, 0.0], [3.0, 0.0, -1.0, 4.0]])
  norms = np.array([2.0, 1.0, 1.0, 4.0])
  raw = ETA * dots.sum(axis=0) / norms  # 0.2, 0.2, -0.2, 0.1
  np.testing.assert_allclose(lqs.scores(dots, norms, ETA), (raw - raw.mean()) / raw.std())
  outlier = np.zeros((1, 12))
  outlier[0, 0] = 1.0  # z = sqrt(11) = 3.32: clipped
  got = lqs.scores(outlier, np.ones(12), ETA)
  assert got[0] == lqs.CLIP and np.allclose(got[1:], -1 / np.sqrt(11))
  assert not lqs.scores(np.ones((2, 5)), np.ones(5), ETA).any()  # no spread: all 0


@pytest.fixture(scope='module')
def target_store(runs):
  config = finished.checkpoint_config(runs['a'])
  return store_lib.load_store('stdlib_prose', 'validation', 'byte', config.data.store_dir)


def test_lqs_of_each_document_matches_its_own_gradients(loaded_runs, target_store):
  """The score of every document against one computed directly: the document's windows, the
  gradient of their mean token loss at each point of the trajectory, its dot with the next
  co-state, over its norm at the start."""
  loaded = loaded_runs['a']
  byte = vocabularies.make_vocabulary('byte', 0)
  store = scores.tokenize_documents([{'id': str(i), 'text': t} for i, t in enumerate(TEXTS)
                                     if 16 < len(t) < SEQ_LEN], byte)  # one window each: one shape
  tokens, offsets = store.tokens, store.offsets
  states, lambdas = scores.lqs_trajectory(loaded, tokens, offsets, target_store, 3, ETA, 8, seed=1)
  got = scores.trajectory_scores(loaded, tokens, offsets, states, lambdas, ETA, batch_size=8)
  grad = jax.jit(jax.grad(loaded.batch_loss))
  raw = []
  for d in range(store.num_documents):
    rows = windows.pack_windows(np.array([0, offsets[d + 1] - offsets[d]]),
                                tokens[offsets[d]:offsets[d + 1]], SEQ_LEN,
                                loaded.start_id)
    rows.pop('token_index')
    gradients = [jax.device_get(grad(jax.device_get(states[t]), rows)) for t in range(4)]
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)]).astype(
        np.float64)
    dots = [flat(gradients[t]) @ flat(jax.device_get(lambdas[t + 1])) for t in range(3)]
    raw.append(ETA * sum(dots) / np.linalg.norm(flat(gradients[0])))
  raw = np.array(raw)
  np.testing.assert_allclose(got, np.clip((raw - raw.mean()) / raw.std(), -3, 3), rtol=1e-3,
                             atol=1e-3)
  assert got.std() > 0.5  # the documents differ


def test_command_writes_lqs_and_names_a_missing_target(runs, tmp_path):
  text_file = tmp_path / 'docs.txt'
  text_file.write_text('first document\nthe second one\nand the third\n')  # one shape: 15, 15, 14
  out = tmp_path / 'lqs.jsonl'
  _run(checkpoint=[runs['a']], text_file=str(text_file), out=str(out), scores=['lqs'],
       lqs_target='stdlib_prose', lqs_steps=2)
  lines = _lines(out)
  assert list(lines[0]) == ['id', 'num_tokens', 'nll', 'lqs']
  values = np.array([line['lqs'] for line in lines])
  assert len(values) == 3 and abs(values.mean()) < 1e-6 and np.all(np.abs(values) <= lqs.CLIP)
  with pytest.raises(SystemExit, match='--scores=lqs needs --lqs_target=TASK'):
    _run(checkpoint=[runs['a']], text_file=str(text_file), out=str(out), scores=['lqs'])
