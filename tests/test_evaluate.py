"""Answer accuracy and loss: found once per task, equal to scoring each document on its own, by
difficulty and augmentation, only where documents have answers, with the other metrics unchanged;
span accuracy on the masked spans of denoising formats; both in the training loop and the report."""

import collections
import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import evaluate, train

from research.analysis import report
from research.data import packing, pipeline, store as store_lib, tasks, vocabularies
from research.objectives import denoising
from research.objectives import registry
from tests.test_train import read_metrics, tiny_config

VOCABULARY = vocabularies.make_vocabulary('byte')
SUMS = {'source': 'arithmetic', 'num_documents': 300, 'max_digits': 2,
        'operations': ['addition']}


def _config(data_dir):
  config = tiny_config(data_dir, data=1)
  config.data.tasks = {'sums': SUMS}
  config.data.mixture = {'sums': 1.0}
  config.model.tie_embeddings = False
  config.eval.batch_size, config.eval.batches = 4, 2
  tasks.register_config_tasks(config.data)
  return config


def _validation(config, task='sums') -> store_lib.DocumentStore:
  return store_lib.load_store(task, 'validation', 'byte', config.data.store_dir)


def _bigram_params(params, successor: dict[int, int]):
  """`params` with one-hot input embeddings (token x -> unit vector x mod D) and an output layer
  that maps them to `successor[x]`: the argmax after token x is successor[x], whatever the random
  layers add (their outputs are about 40 times smaller than the embedding after the final norm)."""
  vocab, width = params['embedding'].shape
  embedding_VD = np.eye(width, dtype=np.float32)[np.arange(vocab) % width]
  unembedding_VD = np.zeros((vocab, width), np.float32)
  for x, y in successor.items():
    unembedding_VD[y, x % width] = 1.0
  return {**params, 'embedding': jnp.asarray(embedding_VD),
          'unembedding': jnp.asarray(unembedding_VD)}


@pytest.fixture(scope='module')
def sums(data_dir):
  """(config, trainer, params of a bigram model whose answers are partly right, the EvalSet)."""
  config = _config(data_dir)
  trainer = train.Trainer(config, jax.devices()[:1])
  store = _validation(config)
  # Each answer token's most common predecessor -> it: some answers come out right, most wrong.
  pairs = collections.Counter()
  for m in store.metadata:
    tokens = VOCABULARY.encode(m['prompt'] + m['answer'])
    answer_start = len(tokens) - len(m['answer'])
    pairs.update(zip(tokens[answer_start - 1:-1], tokens[answer_start:]))
  successor = {}
  for (x, y), _ in pairs.most_common():
    successor.setdefault(x, y)
  params = _bigram_params(trainer.init_state().params, successor)
  eval_set = evaluate.eval_set(config.data, 'sums', 4, 2, registry.causal_objective(64),
                               VOCABULARY)
  return config, trainer, params, eval_set


def _evaluate(trainer, params, eval_sets):
  return evaluate.evaluate(trainer.eval_step, params, eval_sets,
                           vocabularies.token_bytes(VOCABULARY), trainer.place)


def _alone(trainer, params, store, indices) -> tuple[np.ndarray, float]:
  """Whether each document, run on its own row (prompt + answer + EOS, padded), gets every answer
  token as its argmax; and the mean cross-entropy of all their answer tokens."""
  rows = [VOCABULARY.encode(store.metadata[i]['prompt'] + store.metadata[i]['answer'])
          + [VOCABULARY.eos_id] for i in indices]
  targets = np.zeros((len(rows), 64), np.int32)
  for r, row in enumerate(rows):
    targets[r, :len(row)] = row
  lengths = np.array([len(row) for row in rows])
  segment_ids = (np.arange(64) < lengths[:, None]).astype(np.int32)
  batch = {'targets': targets, 'segment_ids': segment_ids,
           'positions': np.broadcast_to(np.arange(64, dtype=np.int32), targets.shape) * segment_ids,
           'inputs': np.pad(targets[:, :-1], ((0, 0), (1, 0)))}
  logits_BLV = np.asarray(trainer.model.apply({'params': params}, batch), np.float64)
  log_probs_BLV = logits_BLV - np.log(np.exp(logits_BLV).sum(axis=-1, keepdims=True))
  right, losses = [], []
  for r, i in enumerate(indices):
    answer = len(VOCABULARY.encode(store.metadata[i]['answer']))
    end = lengths[r] - 1  # the EOS
    span = np.arange(end - answer, end)
    right.append(np.array_equal(logits_BLV[r, span].argmax(axis=-1), targets[r, span]))
    losses.extend(-log_probs_BLV[r, span, targets[r, span]])
  return np.array(right), float(np.mean(losses))


def test_answer_accuracy_equals_each_document_scored_alone(sums):
  config, trainer, params, eval_set = sums
  results = _evaluate(trainer, params, {'sums': eval_set})
  store = _validation(config)
  documents = np.concatenate([b['documents'] for b in pipeline.eval_batches(
      config.data, 'sums', 4, 2, documents=True)])
  indices = sorted(set(documents[documents >= 0].tolist()))
  right, answer_loss = _alone(trainer, params, store, indices)
  assert results['eval/sums/answer_loss'] == pytest.approx(answer_loss, rel=1e-5)
  difficulty = np.array([store.metadata[i]['difficulty'] for i in indices])
  assert 0 < right.mean() < 1  # the bigram model gets some answers right, not all
  assert results['eval/sums/answer_accuracy'] == right.mean()
  assert sorted(set(difficulty.tolist())) == [1, 2]
  for d in (1, 2):
    assert results[f'eval/sums/answer_accuracy/difficulty_{d}'] == right[difficulty == d].mean()
  # Every document of the rows is scored (none is longer than a row), each under its difficulty.
  assert eval_set.difficulties == tuple(difficulty.tolist())
  counts = collections.Counter(eval_set.difficulties)
  assert sum(counts.values()) == len(indices)
  assert sum(counts[d] * results[f'eval/sums/answer_accuracy/difficulty_{d}'] for d in counts) == (
      pytest.approx(len(indices) * results['eval/sums/answer_accuracy']))


def test_answers_leave_the_other_metrics_bit_for_bit(sums):
  _, trainer, params, eval_set = sums
  plain = evaluate.EvalSet([{k: v for k, v in b.items() if k != 'answer_documents'}
                            for b in eval_set.batches])
  with_answers = _evaluate(trainer, params, {'sums': eval_set})
  without = _evaluate(trainer, params, {'sums': plain})
  assert set(with_answers) - set(without) == {
      'eval/sums/answer_loss', 'eval/sums/answer_accuracy',
      'eval/sums/answer_accuracy/difficulty_1', 'eval/sums/answer_accuracy/difficulty_2'}
  assert {k: with_answers[k] for k in without} == without


def test_tasks_without_answers_and_denoising_formats_score_none(sums, tmp_path):
  config, trainer, params, _ = sums
  data_config = copy.deepcopy(config.data)
  with open(tmp_path / 'notes.jsonl', 'w', encoding='utf-8') as f:
    f.writelines(json.dumps({'text': f'note {i}: {i * i}', 'topic': 'squares'}) + '\n'
                 for i in range(400))
  data_config.tasks = {'notes': {'source': 'files', 'pattern': str(tmp_path / '*.jsonl'),
                                 'format': 'jsonl'}}
  tasks.register_config_tasks(data_config)
  notes = evaluate.eval_set(data_config, 'notes', 4, 2, registry.causal_objective(64), VOCABULARY)
  prefix_lm = registry.denoising_objective('prefix_lm', 'decoder', 64, 64, {}, {}, False,
                                           VOCABULARY)
  denoised = evaluate.eval_set(data_config, 'sums', 4, 2, prefix_lm, VOCABULARY)
  for eval_set in (notes, denoised):
    assert eval_set.difficulties is None
    assert all('answer_documents' not in b and 'documents' not in b for b in eval_set.batches)
  results = _evaluate(trainer, params, {'notes': notes})
  assert 'eval/notes/loss' in results and not any('answer' in k for k in results)


def _toy_store(directory) -> store_lib.DocumentStore:
  """Six documents: 0 and 4 scorable, 1 longer than a row, 2 without an answer, 3 whose tokens are
  not its prompt and answer, 5 only partly in the rows."""
  documents = [('ab=', 'cd', 1), ('long prompt=', 'x', 1), ('x', '', 1), ('ab=', 'yy', 1),
               ('q=', 'r', None), ('p=', 's', 2)]
  texts = [p + a for p, a, _ in documents]
  texts[3] = 'ab=zz'
  tokens = [VOCABULARY.encode(t) + [VOCABULARY.eos_id] for t in texts]
  metadata = [json.dumps({'prompt': prompt, 'answer': answer, **(
      {} if difficulty is None else {'difficulty': difficulty})}) for prompt, answer, difficulty
              in documents]
  return store_lib.DocumentStore(
      tokens=np.concatenate(tokens), offsets=np.cumsum([0] + [len(t) for t in tokens]),
      doc_ids=[str(i) for i in range(6)], manifest={'task': 'toy'}, directory=str(directory),
      metadata_json=metadata)


def test_only_whole_documents_whose_tokens_are_prompt_and_answer_are_scored(tmp_path):
  store = _toy_store(tmp_path)
  documents_NL = np.array([[0, 0, 0, 0, 0, 0, 2, 2],  # 'ab=cd' EOS, 'x' EOS
                           [1, 1, 1, 1, 1, 1, 1, 1],  # the first 8 of 14 tokens
                           [1, 1, 1, 1, 1, 1, -1, -1],
                           [3, 3, 3, 3, 3, 3, -1, -1],  # 'ab=zz' EOS
                           [4, 4, 4, 4, 5, 5, -1, -1]])  # 'q=r' EOS, 2 of document 5's 4 tokens
  answer_NL, groups = evaluate.answer_documents(store, documents_NL, 8, VOCABULARY)
  expected = np.full((5, 8), -1)
  expected[0, 3:5] = 0  # 'cd'
  expected[4, 2] = 1  # 'r'
  np.testing.assert_array_equal(answer_NL, expected)
  assert groups == {'difficulty': (1, None), 'augmented': (None, None), 'relation': (None, None)}
  # A document at most a row long but longer than a chunk would be cut: not scored.
  assert evaluate.answer_documents(store, documents_NL, 4, VOCABULARY)[1]['difficulty'] == (None,)


def test_answer_accuracy_is_grouped_by_each_metadata_key():
  """Five documents over two batches; 0, 2 and 3 right, 1 and 4 each with one wrong token."""
  documents = [np.array([[0, 0, -1, 1, 1], [-1, 2, -1, -1, 3]]), np.array([[4, 4, 4, -1, -1]])]
  wrong = [np.zeros((2, 5), bool), np.zeros((1, 5), bool)]
  wrong[0][0, 4] = True  # document 1's second token
  wrong[1][0, 2] = True  # document 4's last token
  eval_set = evaluate.EvalSet([{'answer_documents': d} for d in documents],
                              {'difficulty': (1, 2, 2, None, 2),
                               'augmented': (True, False, True, False, None),
                               'relation': (None, None, None, 'trained', 'reversed')})
  assert evaluate.answer_accuracy('t', eval_set, wrong) == {
      'eval/t/answer_accuracy': 3 / 5,
      'eval/t/answer_accuracy/difficulty_1': 1.0,  # document 0
      'eval/t/answer_accuracy/difficulty_2': 1 / 3,  # 1, 2, 4
      'eval/t/answer_accuracy/augmented_false': 1 / 2,  # 1, 3
      'eval/t/answer_accuracy/augmented_true': 1.0,  # 0, 2
      'eval/t/answer_accuracy/relation_trained': 1.0,  # 3
      'eval/t/answer_accuracy/relation_reversed': 0.0}  # 4
  assert eval_set.difficulties == (1, 2, 2, None, 2)


SPAN_VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=100)


def _tokens(text: str) -> list[int]:
  return SPAN_VOCABULARY.encode(text)


@pytest.mark.parametrize('architecture', ['decoder', 'encoder_decoder'])
def test_span_accuracy_on_hand_built_denoising_rows(architecture):
  """`<0> b c <1> e EOS` (spans 'bc' and 'e': the EOS is not scored), a prefix denoiser's targets
  (no span), a span of only an EOS (left out) and `<0> k m`: three spans, two with a wrong token."""
  s0, s1 = (vocabularies.sentinel_id(SPAN_VOCABULARY, k) for k in (0, 1))
  eos = SPAN_VOCABULARY.eos_id
  a, b, c, d, e, f, g, h, i, j, k, m = (_tokens(x)[0] for x in 'abcdefghijkm')
  rows = [[([a, s0, d, s1], [s0, b, c, s1, e, eos]), ([f, g], [h, i])],
          [([j, s0], [s0, eos]), ([s0, j], [s0, k, m])]]
  if architecture == 'decoder':
    batch = [registry.decoder_row(pairs, 24) for pairs in rows]
  else:
    batch = [registry.encoder_decoder_row(pairs, 8, 12) for pairs in rows]
  targets, segment_ids, weights = (np.stack([r[key] for r in batch])
                                   for key in ('targets', 'segment_ids', 'weights'))
  span_NL, num_spans = evaluate.masked_spans(targets, segment_ids, weights, [s0, s1],
                                             vocabularies.token_bytes(SPAN_VOCABULARY))
  assert num_spans == 3
  assert [targets[span_NL == span].tolist() for span in range(3)] == [[b, c], [e], [k, m]]
  assert np.sum(span_NL >= 0) == 5
  wrong_NL = np.zeros(targets.shape, bool)
  wrong_NL[(targets == c) & (span_NL >= 0)] = True  # span 0
  wrong_NL[(targets == m) & (span_NL >= 0)] = True  # span 2
  eval_set = evaluate.EvalSet([{'spans': span_NL[:1]}, {'spans': span_NL[1:]}], num_spans=3)
  assert evaluate.span_accuracy('t/R3_15', eval_set, [wrong_NL[:1], wrong_NL[1:]]) == {
      'eval/t/R3_15/span_accuracy': 1 / 3, 'eval/t/R3_15/span_token_accuracy': 1 - 2 / 5}


@pytest.mark.parametrize('name, architecture', [('ul2', 'decoder'),
                                                ('span_corruption', 'encoder_decoder')])
def test_masked_spans_are_the_noise_runs_of_span_denoisers(data_dir, name, architecture):
  """On packed arithmetic rows, the spans are each span denoiser's noise runs (their text tokens),
  in order; the S denoiser's segments of the UL2 mixture add none."""
  store = _validation(_config(data_dir))
  objective = registry.denoising_objective(name, architecture, 64, 32, {}, {}, True,
                                           SPAN_VOCABULARY)
  packed = packing.pack_documents(store, objective.row_len, 0, objective.chunk_len,
                                  objective.costs, objective.budgets)
  rows = {key: packed[key][:16] for key in ('targets', 'segment_ids')}
  batch, noise = objective.examples(rows, np.arange(16), seed=0, with_noise=True)
  token_bytes = vocabularies.token_bytes(SPAN_VOCABULARY)
  expected = []
  for targets_R, segments_R, records in zip(rows['targets'], rows['segment_ids'], noise):
    for segment, record in enumerate(records, 1):
      tokens = targets_R[segments_R == segment]
      mask = np.array(record['noise'], bool)
      if denoising.DENOISERS[record['denoiser']].prefix:
        continue
      starts = np.flatnonzero(mask & ~np.concatenate([[False], mask[:-1]]))
      for run in np.split(np.arange(len(tokens)), starts)[1:]:
        text = [t for t in tokens[run[mask[run]]].tolist() if token_bytes[t] > 0]
        expected += [text] if text else []
  span_NL, num_spans = evaluate.masked_spans(batch['targets'], batch['segment_ids'],
                                             batch['weights'], objective.sentinel_ids, token_bytes)
  assert num_spans == len(expected) > 16
  targets_T, span_T = batch['targets'].reshape(-1), span_NL.reshape(-1)
  assert [targets_T[span_T == span].tolist() for span in range(num_spans)] == expected
  if name == 'ul2':
    assert any(denoising.DENOISERS[r['denoiser']].prefix for records in noise for r in records)


def test_training_logs_answer_accuracy(data_dir, tmp_path):
  config = _config(data_dir)
  config.train.steps, config.eval.every = 2, 2
  train.train(config, str(tmp_path), devices=jax.devices()[:1])
  evals = [m for m in read_metrics(str(tmp_path)) if 'eval/sums/loss' in m]
  assert [m['step'] for m in evals] == [2]
  assert {'eval/sums/answer_loss', 'eval/sums/answer_accuracy',
          'eval/sums/answer_accuracy/difficulty_1',
          'eval/sums/answer_accuracy/difficulty_2'} <= set(evals[0])


def test_training_logs_span_accuracy_and_answer_accuracy_by_augmentation(data_dir, tmp_path):
  """Span corruption on biographies, evaluated in its own format (span accuracy, equal to the
  final model's argmax on each span) and causally (answer accuracy by augmentation)."""
  config = tiny_config(data_dir, data=1)
  config.data.seq_len, config.data.extra_ids = 128, 16
  config.data.tasks = {'bios': {'source': 'biographies', 'num_documents': 20, 'multiplicity': 2}}
  config.data.mixture = {'bios': 1.0}
  config.objective.name, config.eval.objectives = 'span_corruption', ['causal_lm']
  config.train.steps, config.eval.every = 2, 2
  tasks.register_config_tasks(config.data)
  state = train.train(config, str(tmp_path), devices=jax.devices()[:1])
  evals = [m for m in read_metrics(str(tmp_path)) if 'eval/bios/loss' in m]
  assert [m['step'] for m in evals] == [2]
  assert {'eval/bios/span_accuracy', 'eval/bios/span_token_accuracy',
          'eval/bios/causal_lm/answer_accuracy/augmented_true',
          'eval/bios/causal_lm/answer_accuracy/augmented_false',
          'eval/bios/causal_lm/answer_accuracy/difficulty_0'} <= set(evals[0])
  assert not any('span' in key for key in evals[0] if key.startswith('eval/bios/causal_lm/'))
  vocabulary = vocabularies.make_vocabulary('byte', 16)
  eval_set = evaluate.eval_set(config.data, 'bios', config.eval.batch_size, config.eval.batches,
                               registry.make_objective(config, vocabulary), vocabulary)
  model = train.Trainer(config, jax.devices()[:1]).model
  right, tokens = [], 0
  for batch in eval_set.batches:
    argmax_BL = np.argmax(model.apply({'params': state.params}, batch), axis=-1)
    for span in np.unique(batch['spans'][batch['spans'] >= 0]):
      at = batch['spans'] == span
      right.append(np.array_equal(argmax_BL[at], batch['targets'][at]))
      tokens += int(np.sum(argmax_BL[at] == batch['targets'][at]))
  assert len(right) == eval_set.num_spans > 0
  assert evals[0]['eval/bios/span_accuracy'] == pytest.approx(np.mean(right))
  assert evals[0]['eval/bios/span_token_accuracy'] == pytest.approx(
      tokens / sum(int(np.sum(b['spans'] >= 0)) for b in eval_set.batches))


def test_report_tabulates_and_plots_answer_accuracy(tmp_path):
  metrics = {10: {'loss': 3.0, 'eval/sums/loss': 2.5, 'eval/sums/answer_accuracy': 0.25,
                  'eval/sums/answer_accuracy/difficulty_1': 0.5,
                  'eval/sums/answer_accuracy/difficulty_10': 0.0,
                  'eval/sums/answer_accuracy/difficulty_2': 0.125, 'eval/prose/loss': 4.0},
             20: {'loss': 2.0, 'eval/sums/loss': 2.0, 'eval/sums/answer_accuracy': 0.5,
                  'eval/sums/answer_accuracy/difficulty_1': 0.75,
                  'eval/sums/answer_accuracy/difficulty_10': 0.0,
                  'eval/sums/answer_accuracy/difficulty_2': 0.25, 'eval/prose/loss': 3.5}}
  bios = {10: {'eval/bios/answer_accuracy': 0.5, 'eval/bios/answer_accuracy/augmented_true': 0.75,
               'eval/bios/answer_accuracy/augmented_false': 0.25,
               'eval/bios/answer_accuracy/difficulty_0': 0.5, 'eval/bios/R3_15/span_accuracy': 0.1}}
  runs = [report.Run('a', 'a', {'seed': 0}, metrics), report.Run('b', 'b', {'seed': 1}, bios)]
  header, _, row, _ = report.summary_table(runs).splitlines()
  assert ('| eval/prose/loss | best eval/prose/loss | eval/sums/loss | best eval/sums/loss | '
          'eval/sums/answer_accuracy | tokens_seen |') in header
  assert row.endswith('| 3.5 | 3.5 | 2 | 2 | 0.5 | - |')
  assert {key: [label for label, _, _ in curves]
          for key, curves in report.group_curves(runs, ['a', 'b'], 'sums').items()} == {
      'difficulty': ['a: difficulty 1', 'a: difficulty 2', 'a: difficulty 10']}
  assert {key: [label for label, _, _ in curves]
          for key, curves in report.group_curves(runs, ['a', 'b'], 'bios').items()} == {
      'difficulty': ['b: difficulty 0'], 'augmented': ['b: augmented false', 'b: augmented true']}
  names = [os.path.basename(p) for p in report.plot_runs(runs, str(tmp_path))]
  assert names == ['train_loss_vs_step.png', 'eval_prose_loss_vs_step.png',
                   'eval_sums_loss_vs_step.png', 'eval_bios_answer_accuracy_vs_step.png',
                   'eval_sums_answer_accuracy_vs_step.png',
                   'eval_bios-R3_15_span_accuracy_vs_step.png',
                   'eval_bios_answer_accuracy_by_difficulty_vs_step.png',
                   'eval_bios_answer_accuracy_by_augmented_vs_step.png',
                   'eval_sums_answer_accuracy_by_difficulty_vs_step.png']
