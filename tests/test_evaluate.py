"""Answer accuracy and loss: found once per task, equal to scoring each document on its own, by
difficulty, only where documents have answers, with the other metrics unchanged; and in the
report."""

import collections
import copy
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import evaluate, report, train
from research.data import pipeline, store as store_lib, tasks, vocabularies
from research.objectives import examples
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
  return store_lib.load_store(task, 'validation', 'byte', config.data.cache_dir)


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
  eval_set = evaluate.eval_set(config.data, 'sums', 4, 2, examples.causal_objective(64),
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
  notes = evaluate.eval_set(data_config, 'notes', 4, 2, examples.causal_objective(64), VOCABULARY)
  prefix_lm = examples.denoising_objective('prefix_lm', 'decoder', 64, 64, {}, {}, False,
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
  with open(os.path.join(directory, 'metadata.jsonl'), 'w', encoding='utf-8') as f:
    for prompt, answer, difficulty in documents:
      f.write(json.dumps({'prompt': prompt, 'answer': answer, **(
          {} if difficulty is None else {'difficulty': difficulty})}) + '\n')
  return store_lib.DocumentStore(
      tokens=np.concatenate(tokens), offsets=np.cumsum([0] + [len(t) for t in tokens]),
      doc_ids=[str(i) for i in range(6)], manifest={'task': 'toy'}, directory=str(directory))


def test_only_whole_documents_whose_tokens_are_prompt_and_answer_are_scored(tmp_path):
  store = _toy_store(tmp_path)
  documents_NL = np.array([[0, 0, 0, 0, 0, 0, 2, 2],  # 'ab=cd' EOS, 'x' EOS
                           [1, 1, 1, 1, 1, 1, 1, 1],  # the first 8 of 14 tokens
                           [1, 1, 1, 1, 1, 1, -1, -1],
                           [3, 3, 3, 3, 3, 3, -1, -1],  # 'ab=zz' EOS
                           [4, 4, 4, 4, 5, 5, -1, -1]])  # 'q=r' EOS, 2 of document 5's 4 tokens
  answer_NL, difficulties = evaluate.answer_documents(store, documents_NL, 8, VOCABULARY)
  expected = np.full((5, 8), -1)
  expected[0, 3:5] = 0  # 'cd'
  expected[4, 2] = 1  # 'r'
  np.testing.assert_array_equal(answer_NL, expected)
  assert difficulties == (1, None)
  # A document at most a row long but longer than a chunk would be cut: not scored.
  assert evaluate.answer_documents(store, documents_NL, 4, VOCABULARY)[1] == (None,)


def test_training_logs_answer_accuracy(data_dir, tmp_path):
  config = _config(data_dir)
  config.train.steps, config.eval.every = 2, 2
  train.train(config, str(tmp_path), devices=jax.devices()[:1])
  evals = [m for m in read_metrics(str(tmp_path)) if 'eval/sums/loss' in m]
  assert [m['step'] for m in evals] == [2]
  assert {'eval/sums/answer_loss', 'eval/sums/answer_accuracy',
          'eval/sums/answer_accuracy/difficulty_1',
          'eval/sums/answer_accuracy/difficulty_2'} <= set(evals[0])


def test_report_tabulates_and_plots_answer_accuracy(tmp_path):
  metrics = {10: {'loss': 3.0, 'eval/sums/loss': 2.5, 'eval/sums/answer_accuracy': 0.25,
                  'eval/sums/answer_accuracy/difficulty_1': 0.5,
                  'eval/sums/answer_accuracy/difficulty_10': 0.0,
                  'eval/sums/answer_accuracy/difficulty_2': 0.125, 'eval/prose/loss': 4.0},
             20: {'loss': 2.0, 'eval/sums/loss': 2.0, 'eval/sums/answer_accuracy': 0.5,
                  'eval/sums/answer_accuracy/difficulty_1': 0.75,
                  'eval/sums/answer_accuracy/difficulty_10': 0.0,
                  'eval/sums/answer_accuracy/difficulty_2': 0.25, 'eval/prose/loss': 3.5}}
  runs = [report.Run('a', 'a', {'seed': 0}, metrics), report.Run('b', 'b', {'seed': 1}, {})]
  header, _, row, _ = report.summary_table(runs).splitlines()
  assert ('| eval/prose/loss | best eval/prose/loss | eval/sums/loss | best eval/sums/loss | '
          'eval/sums/answer_accuracy | tokens_seen |') in header
  assert row.endswith('| 3.5 | 3.5 | 2 | 2 | 0.5 | - |')
  assert [label for label, _, _ in report.difficulty_curves(runs, ['a', 'b'], 'sums')] == [
      'a: difficulty 1', 'a: difficulty 2', 'a: difficulty 10']
  names = [os.path.basename(p) for p in report.plot_runs(runs, str(tmp_path))]
  assert names == ['train_loss_vs_step.png', 'eval_prose_loss_vs_step.png',
                   'eval_sums_loss_vs_step.png', 'eval_sums_answer_accuracy_vs_step.png',
                   'eval_sums_answer_accuracy_by_difficulty_vs_step.png']
