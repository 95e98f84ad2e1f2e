"""In-loop multiple choice: the questions (answer among the candidates once, distractors and shots
drawn apart from it, the same for a seed), their scores equal to scoring each sequence with
research/analysis/scores.py, and the accuracies in metrics.jsonl of a training run."""

import collections
import json

import jax
import numpy as np
import pytest

from research import errors, finished, multiple_choice, train

from research.analysis import scores
from research.data import pipeline, store as store_lib, tasks
from tests import test_evaluate
from tests.test_evaluate import VOCABULARY
from tests.test_train import read_metrics


def _config(data_dir):
  """test_evaluate's run on 2-digit sums, asking 10 two-shot questions of them."""
  config = test_evaluate._config(data_dir)
  config.eval.multiple_choice.tasks = ('sums',)
  config.eval.multiple_choice.examples, config.eval.multiple_choice.shots = 10, 2
  return config


def test_questions_hold_the_answer_once_among_distinct_candidates():
  # Repeated answers: the distractors are drawn from the distinct ones.
  answers = [str(i % 13) for i in range(40)]
  drawn = multiple_choice.questions(answers, examples=30, shots=3, choices=5, seed=7)
  assert [q.index for q in drawn] == list(range(30))
  for q in drawn:
    assert len(q.candidates) == len(set(q.candidates)) == 5
    assert q.candidates.count(answers[q.index]) == 1 and q.candidates[q.right] == answers[q.index]
    assert set(q.candidates) <= set(answers)
    assert len(q.shots) == len(set(q.shots)) == 3 and q.index not in q.shots
    assert all(0 <= s < len(answers) for s in q.shots)
  assert len({q.right for q in drawn}) > 1  # the answer's place is drawn, not always first
  assert multiple_choice.questions(answers, 30, 3, 5, seed=7) == drawn
  assert multiple_choice.questions(answers, 30, 3, 5, seed=8) != drawn
  assert len(multiple_choice.questions(answers, 100, 0, 2, seed=7)) == len(answers)


@pytest.fixture(scope='module')
def sums(data_dir):
  """(config, trainer, random parameters, the ChoiceSet of the questions on `sums`)."""
  config = _config(data_dir)
  pipeline.prepare_stores(config)
  trainer = train.Trainer(config, jax.devices()[:1])
  choice_set = multiple_choice.choice_set(config.data, 'sums', config.eval.multiple_choice,
                                          config.eval.batch_size, VOCABULARY, pipeline.EVAL_SEED)
  return config, trainer, trainer.init_state().params, choice_set


def test_scores_are_the_log_likelihoods_of_each_candidate_after_its_context(sums):
  config, trainer, params, choice_set = sums
  settings = config.eval.multiple_choice
  store = store_lib.load_store('sums', 'validation', 'byte', config.data.store_dir)
  answers = [m['answer'] for m in store.metadata]
  assert all(answers)  # every document is in the pool
  drawn = multiple_choice.questions(answers, settings.examples, settings.shots, settings.choices,
                                    pipeline.EVAL_SEED)
  # Each context (shots, then prompt) alone, and with each candidate and EOS after it.
  documents = []
  for q in drawn:
    context = [t for s in q.shots for t in store.document(s).tolist()] + list(
        VOCABULARY.encode(store.metadata[q.index]['prompt']))
    documents.append(context)
    documents += [context + list(VOCABULARY.encode(c)) + [VOCABULARY.eos_id]
                  for c in q.candidates]
  assert max(len(d) for d in documents) <= config.data.seq_len  # nothing is cut
  offsets = np.cumsum([0] + [len(d) for d in documents])
  loaded = finished.LoadedCheckpoint(path='', step=0, config=config, placed=trainer, params=params)
  nll = scores.model_scores(loaded, np.concatenate(documents), offsets, batch_size=4)['nll']
  log_likelihood = -(nll * np.diff(offsets)).reshape(len(drawn), settings.choices + 1)
  expected_QC = log_likelihood[:, 1:] - log_likelihood[:, :1]

  log_probs = jax.device_get([trainer.choice_step(params, trainer.place(b))
                              for b in choice_set.batches])
  likelihood_QC = multiple_choice.candidate_scores(choice_set, log_probs)
  np.testing.assert_allclose(likelihood_QC, expected_QC, atol=1e-4)
  picks_Q = np.argmax(likelihood_QC, axis=1)
  np.testing.assert_allclose(likelihood_QC[np.arange(len(drawn)), picks_Q],
                             expected_QC.max(axis=1), atol=1e-4)
  right_Q = np.array([q.right for q in drawn])
  np.testing.assert_array_equal(choice_set.right, right_Q)
  chars_QC = np.array([[len(c) for c in q.candidates] for q in drawn])
  results = multiple_choice.evaluate(trainer.choice_step, params, {'sums': choice_set},
                                     trainer.place)
  assert results == {
      'eval/sums/mc_accuracy': np.mean(np.argmax(expected_QC, axis=1) == right_Q),
      'eval/sums/mc_accuracy_norm': np.mean(np.argmax(expected_QC / chars_QC, axis=1) == right_Q)}
  # Fixed shapes: every batch is eval.batch_size rows of data.seq_len, so the step compiles once.
  assert {b['targets'].shape for b in choice_set.batches} == {(4, config.data.seq_len)}
  assert collections.Counter(np.concatenate([c[c >= 0] for c in choice_set.candidates])) == {
      q * settings.choices + c: len(drawn[q].candidates[c]) + 1
      for q in range(len(drawn)) for c in range(settings.choices)}


def test_long_contexts_lose_their_first_tokens(sums):
  config, _, _, _ = sums
  settings = config.eval.multiple_choice.copy_and_resolve_references()
  settings.shots = 10
  choice_set = multiple_choice.choice_set(config.data, 'sums', settings, 4, VOCABULARY,
                                          pipeline.EVAL_SEED)
  segments = np.concatenate([b['segment_ids'] for b in choice_set.batches])
  assert (segments[segments.any(axis=1)] == 1).all()  # each sequence, cut to fill a row alone
  # Every candidate keeps all its tokens and its EOS.
  counted = collections.Counter(np.concatenate([c[c >= 0] for c in choice_set.candidates]))
  assert len(counted) == choice_set.chars.size
  assert all(counted[k] == n + 1 for k, n in enumerate(choice_set.chars.reshape(-1)))


def test_a_task_without_answers_or_with_too_few_is_named(sums, tmp_path):
  config, _, _, _ = sums
  data_config = config.data.copy_and_resolve_references()
  with open(tmp_path / 'notes.jsonl', 'w', encoding='utf-8') as f:
    f.writelines(json.dumps({'text': f'note {i}: {i * i}'}) + '\n' for i in range(400))
  data_config.tasks = {'notes': {'source': 'files', 'pattern': str(tmp_path / '*.jsonl'),
                                 'format': 'jsonl'}}
  tasks.register_config_tasks(data_config)
  settings = config.eval.multiple_choice
  with pytest.raises(errors.UserError, match=r"eval.multiple_choice.tasks names 'notes', whose "
                     'validation documents are not a prompt and its answer'):
    multiple_choice.choice_set(data_config, 'notes', settings, 4, VOCABULARY, 0)
  too_many = settings.copy_and_resolve_references()
  too_many.choices = 1000
  with pytest.raises(errors.UserError, match=r'too few for eval.multiple_choice.shots=2 .* and '
                     r'choices=1000'):
    multiple_choice.choice_set(config.data, 'sums', too_many, 4, VOCABULARY, 0)


def test_training_logs_multiple_choice_accuracy(data_dir, tmp_path):
  config = _config(data_dir)
  config.train.steps, config.eval.every = 2, 1
  train.train(config, str(tmp_path), devices=jax.devices()[:1])
  evals = [m for m in read_metrics(str(tmp_path)) if 'eval/sums/loss' in m]
  assert [m['step'] for m in evals] == [1, 2]
  for m in evals:
    assert 0 <= m['eval/sums/mc_accuracy'] <= 1 and 0 <= m['eval/sums/mc_accuracy_norm'] <= 1
