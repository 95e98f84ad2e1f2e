"""In-loop few-shot multiple-choice evaluation on the tasks whose documents are a prompt and its
answer (the synthetic skills of research/data/synthetic/).

OLMo logs downstream multiple-choice accuracy while it trains (Groeneveld et al. 2024, "OLMo:
Accelerating the Science of Language Models", arXiv 2402.00838: its in-loop evaluations), scoring
each candidate answer by its log-likelihood as EleutherAI's lm-evaluation-harness does; this is
that evaluation over our own synthetic probes, whose answers are known. Config
`eval.multiple_choice`: for each of its `tasks`, `examples` questions, the first validation
documents with an answer. Question q reads `shots` other validation documents (prompt, answer,
EOS: whole documents, as the store holds them), then its own prompt, then one of `choices`
candidates: its answer and `choices` - 1 distinct other answers of the task's validation documents.
The shots, the distractors and the candidates' order are drawn once from `seed` (the evaluation
seed, the same for every run), so every evaluation of every run asks the same questions.

A candidate is scored by the summed log-probability of its tokens and the EOS after them: a
document's answer ends at its EOS, and without it a distractor that is a prefix of the answer
(`75` for `753`) would always score at least as high. The pick is the argmax:
`eval/<task>/mc_accuracy` is the fraction of questions whose pick is the answer;
`eval/<task>/mc_accuracy_norm` picks by the score per character of the candidate (lm-eval's
`acc_norm`, OLMo's `len_norm`). A candidate's sequence (the run's start id, then shots, prompt,
candidate and EOS) is the project's scoring of a document (research/analysis/scores.py `window_batches`):
when it exceeds data.seq_len its first tokens are left out, as research/interop/lm_eval_adapter.py leaves
out a context's. The sequences are packed into rows of data.seq_len and eval.batch_size rows once,
at the start of the run, so the scoring step compiles once.

Shots put several documents in one segment, which the packed training rows never do (their
segments do not attend to each other); `shots` = 0 scores the question alone, as training sees it.
"""

import dataclasses

import jax
import ml_collections
import numpy as np
import seqio

from research import errors

from research.data import store as store_lib, vocabularies, windows
from research.objectives import losses


@dataclasses.dataclass(frozen=True)
class Question:
  """One multiple-choice question: document `index` of the pool, the pool indices of its `shots`,
  its `candidates` (answers) and the index of the right one among them, `right`."""
  index: int
  shots: tuple[int, ...]
  candidates: tuple[str, ...]
  right: int


@dataclasses.dataclass(frozen=True)
class ChoiceSet:
  """The host batches that score a task's questions, and what they score.

  `batches` are model inputs (`inputs`, `targets`, `segment_ids`, `positions`, [B, L]); in
  `candidates` ([B, L] int32 per batch), a target that is a candidate's token or its EOS holds the
  candidate's index q * C + c, else -1. `right` [Q] is each question's right candidate c, and
  `chars` [Q, C] each candidate's characters.
  """
  batches: list[dict[str, np.ndarray]]
  candidates: list[np.ndarray]
  right: np.ndarray
  chars: np.ndarray


def _others(rng: np.random.Generator, count: int, excluded: int, size: int) -> np.ndarray:
  """`size` distinct indices of range(count) without `excluded`, drawn by `rng`."""
  drawn = rng.choice(count - 1, size, replace=False)
  return drawn + (drawn >= excluded)


def questions(answers: list[str], examples: int, shots: int, choices: int,
              seed: int) -> list[Question]:
  """The questions on documents 0 .. examples - 1 of a pool whose document i has answer
  `answers[i]` (all of the pool when it holds fewer): `shots` other documents of the pool and
  `choices` - 1 distractors from its distinct answers, none equal to the answer, each question
  drawn from its own stream of `seed`."""
  distinct = list(dict.fromkeys(answers))
  position = {answer: i for i, answer in enumerate(distinct)}
  result = []
  for q in range(min(examples, len(answers))):
    rng = np.random.default_rng([seed, q])
    shot_indices = _others(rng, len(answers), q, shots)
    right = position[answers[q]]
    candidates = [right, *_others(rng, len(distinct), right, choices - 1)]
    order = rng.permutation(choices)
    result.append(Question(q, tuple(shot_indices.tolist()),
                           tuple(distinct[candidates[i]] for i in order),
                           int(np.flatnonzero(order == 0)[0])))
  return result


def choice_set(data_config: ml_collections.ConfigDict, task: str,
               settings: ml_collections.ConfigDict, batch_size: int, vocabulary: seqio.Vocabulary,
               seed: int) -> ChoiceSet:
  """`task`'s questions (`settings`: config eval.multiple_choice) as batches of `batch_size` rows
  of data.seq_len, each sequence read from the run's start id (vocabularies.data_start_id), its
  questions drawn from `seed`. Fails naming the config key when the task's validation documents
  are not all a prompt and its answer, or too few for the settings."""
  where = f'eval.multiple_choice.tasks names {task!r}'
  store = store_lib.load_prefix(task, 'validation', data_config.vocabulary, data_config.store_dir,
                                documents=settings.examples + settings.shots)
  metadata = store.metadata
  if not all('prompt' in m and 'answer' in m for m in metadata):
    raise errors.UserError(f'{where}, whose validation documents are not a prompt and its answer '
                           '(metadata `prompt` and `answer`, as arithmetic, lego and biographies '
                           'have); remove it.')
  pool = [i for i, m in enumerate(metadata) if m['answer']]
  answers = [metadata[i]['answer'] for i in pool]
  distinct = len(set(answers))
  if len(pool) <= settings.shots or distinct < settings.choices:
    raise errors.UserError(f'{where}, whose validation documents hold {len(pool)} answers, '
                           f'{distinct} distinct: too few for eval.multiple_choice.shots='
                           f'{settings.shots} (fewer than the answers) and choices='
                           f'{settings.choices} (at most the distinct answers); lower them.')
  eos, seq_len = vocabulary.eos_id, data_config.seq_len
  chosen = questions(answers, settings.examples, settings.shots, settings.choices, seed)
  sequences, scored = [], []
  for question in chosen:
    context = [t for s in question.shots for t in store.document(pool[s]).tolist()]
    context += list(vocabulary.encode(metadata[pool[question.index]]['prompt']))
    for candidate in question.candidates:
      answer = list(vocabulary.encode(candidate)) + [eos]
      if len(answer) > seq_len:
        raise errors.UserError(f'{where}, whose answer {candidate[:40]!r} is longer than '
                               f'data.seq_len={seq_len} tokens; remove it.')
      sequences.append(context[max(0, len(context) + len(answer) - seq_len):] + answer)
      scored.append(len(answer))
  offsets = np.cumsum([0] + [len(s) for s in sequences])
  tokens = np.concatenate(sequences).astype(np.int32)
  # Candidate k's scored tokens (its answer and EOS) end its sequence, at offsets[k + 1].
  candidate_T = np.full(len(tokens), -1, np.int32)
  for k, (end, length) in enumerate(zip(offsets[1:], scored)):
    candidate_T[end - length:end] = k
  (_, _, _, batches), = windows.window_batches(tokens, offsets, seq_len, batch_size, len(tokens),
                                              vocabularies.data_start_id(data_config))
  return ChoiceSet([{k: v for k, v in b.items() if k != 'token_index'} for b in batches],
                   [np.where(b['token_index'] >= 0, candidate_T[b['token_index']], -1)
                    for b in batches],
                   np.array([q.right for q in chosen]),
                   np.array([[len(c) for c in q.candidates] for q in chosen]))


def make_choice_step(model, replicated):
  """A jitted (params, batch) -> [B, L] float32 log-probability of each target (scores.
  token_statistics), replicated."""
  def choice_step(params, batch):
    logits_BLV = model.apply({'params': params}, batch)
    return losses.token_statistics(logits_BLV, batch['targets'])['log_prob']
  return jax.jit(choice_step, out_shardings=replicated)


def candidate_scores(choice_set: ChoiceSet, log_probs: list[np.ndarray]) -> np.ndarray:
  """[Q, C] float64: each candidate's summed log-probability (its tokens and EOS), from each
  batch's `log_probs` [B, L] (make_choice_step)."""
  total = sum(np.bincount(c_BL[c_BL >= 0], lp_BL[c_BL >= 0].astype(np.float64),
                          minlength=choice_set.chars.size)
              for c_BL, lp_BL in zip(choice_set.candidates, log_probs))
  return total.reshape(choice_set.chars.shape)


def accuracy(task: str, choice_set: ChoiceSet, log_probs: list[np.ndarray]) -> dict:
  """`eval/<task>/mc_accuracy` (the pick is the candidate of highest summed log-probability) and
  `eval/<task>/mc_accuracy_norm` (of highest log-probability per character)."""
  likelihood_QC = candidate_scores(choice_set, log_probs)
  right_Q = choice_set.right
  return {f'eval/{task}/mc_accuracy': float(np.mean(np.argmax(likelihood_QC, 1) == right_Q)),
          f'eval/{task}/mc_accuracy_norm': float(np.mean(
              np.argmax(likelihood_QC / choice_set.chars, 1) == right_Q))}


def evaluate(choice_step, params, choice_sets: dict[str, ChoiceSet], place_batch) -> dict:
  """`accuracy` of every task's ChoiceSet; `choice_step` is make_choice_step's (on the mesh),
  `place_batch` turns a host batch into device arrays."""
  results = {}
  for task, choice_set in choice_sets.items():
    log_probs = jax.device_get([choice_step(params, place_batch(b)) for b in choice_set.batches])
    results.update(accuracy(task, choice_set, log_probs))
  return results
