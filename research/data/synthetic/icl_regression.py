"""In-context linear regression over small integers, from a pool of K pretraining tasks.

The token version of "Pretraining task diversity and the emergence of non-Bayesian in-context
learning for regression" (Raventós et al. 2023, arXiv 2306.15063): below a threshold number K of
pretraining tasks a transformer's in-context regression tracks the Bayes estimator under the
*training* prior (the posterior over the K tasks it saw) and fails on new tasks; above it, it
matches ridge regression, the Bayes estimator under the true prior.

A task is an integer vector w in [-w_max, w_max]^dim; an input x is an integer vector in
[0, x_max]^dim (single digits) and its target y = w.x (plus round(noise * N(0, 1)) when `noise` >
0). A document is n context pairs, then a query x whose `answer` is its y, all of one task:

    2,0=+6;1,1=+1;0,2=-4;1,2=

with answer `-1` (w = (3, -2)). n, the skill and difficulty, is uniform over
min_context..max_context. The tasks of the seed are a seeded permutation of all (2 w_max + 1)^dim
vectors: the first `holdout` fraction is held out for validation, and the pool of `num_tasks` = K
training tasks is the next K, so pools are nested (the pool of 4 holds the pool of 1). A training
document draws its task uniformly from the pool, or with num_tasks=0 ("fresh", K = infinity in the
paper) from every task not held out; a validation document draws a held-out task, so it is never
one the model trained on, and the validation documents of a seed are the same for every K. With
validation='pool' the validation split draws the pool's tasks instead (fresh inputs): what the
model does on the tasks it trained on.

`baselines` computes, on the same documents, the two estimators the paper compares the model with:
ridge regression (least squares when noise=0) and the Bayes estimator under the training prior
(dMMSE: the posterior over the pool given the context), both rounded to integers.

Document i of a split is a pure function of (split, seed, i, parameters): documents are drawn in
blocks of `_BLOCK` from `np.random.default_rng([_STREAM, seed, split index, block])`, so a corpus
of n documents is the first n documents of any larger one.
"""

import re
from collections.abc import Iterable, Iterator

import numpy as np

from research.data.synthetic import checks

NAME = 'icl_regression'
VERSION = 1
SPLITS = checks.SPLITS

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 20_000,  # documents per split; about 0.9 M characters with these defaults
    'num_tasks': 0,  # K, the pool of training tasks; 0: a fresh task per document (K = infinity)
    'dim': 2,  # d, the length of x and w
    'x_max': 2,  # x entries are uniform over 0..x_max (at most 9: one digit)
    'w_max': 5,  # w entries are uniform over -w_max..w_max
    'min_context': 1,  # the fewest context pairs; n is uniform over min_context..max_context
    'max_context': 8,  # the most context pairs
    'noise': 0.0,  # y = w.x + round(noise * N(0, 1)); 0: exact
    'holdout': 0.25,  # the fraction of all tasks held out of training for validation
    'validation': 'held_out',  # the validation split's tasks: 'held_out' or 'pool'
}

_STREAM = 0x69636c72  # seeded-stream tag of this generator
_POOL_STREAM = 0x706f6f6c  # the task permutation's tag: one per seed, the same for every split
_BLOCK = 1024
_MAX_TASKS = 100_000  # (2 w_max + 1)^dim: every task is enumerated
_PAIR = re.compile(r'(\d(?:,\d)*)=([+-]\d+);')
_QUERY = re.compile(r'(\d(?:,\d)*)=')
VALIDATIONS = ('held_out', 'pool')
_MIN_NOISE = 1e-3  # the Bayes estimator's noise scale when noise=0 (its limit noise -> 0)


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  p['dim'] = checks.check_number(task_name, 'dim', p['dim'], 1, 8)
  p['x_max'] = checks.check_number(task_name, 'x_max', p['x_max'], 1, 9)
  p['w_max'] = checks.check_number(task_name, 'w_max', p['w_max'], 1, 99)
  checks.check_range(task_name, p, 'min_context', 'max_context', 0, 64)
  p['noise'] = checks.check_number(task_name, 'noise', p['noise'], 0, 100, kind=float)
  p['holdout'] = checks.check_number(task_name, 'holdout', p['holdout'], 0.01, 0.5, kind=float)
  if p['validation'] not in VALIDATIONS:
    checks.fail(task_name, 'validation', p['validation'], f'is invalid; use one of '
                f'{list(VALIDATIONS)}.')
  count = (2 * p['w_max'] + 1)**p['dim']
  if count > _MAX_TASKS:
    checks.fail(task_name, 'w_max', p['w_max'], f'with dim={p["dim"]} makes {count} tasks, more '
                f'than {_MAX_TASKS}; lower w_max or dim.')
  trainable = count - _held_out_count(count, p['holdout'])
  p['num_tasks'] = checks.check_number(task_name, 'num_tasks', p['num_tasks'], 0, trainable)
  return p


def _held_out_count(count: int, holdout: float) -> int:
  return max(1, round(holdout * count))


def _tasks(seed: int, p: dict) -> tuple[np.ndarray, np.ndarray]:
  """(held-out tasks [H, d], training tasks [T, d]): the seed's permutation of every task, the
  held-out ones first; the pool of K is the first K training tasks."""
  values = np.arange(-p['w_max'], p['w_max'] + 1)
  grid = np.stack(np.meshgrid(*[values] * p['dim'], indexing='ij'), -1).reshape(-1, p['dim'])
  order = np.random.default_rng([_POOL_STREAM, seed]).permutation(len(grid))
  held = _held_out_count(len(grid), p['holdout'])
  return grid[order[:held]], grid[order[held:]]


def task_pools(seed: int, **params) -> dict[str, np.ndarray]:
  """The seed's tasks, each [count, dim] int: `pool` (the K training tasks; every task not held
  out when num_tasks=0), `trainable` (every task not held out) and `held_out` (the validation
  tasks)."""
  p = _resolve_params('train', seed, 1, params, NAME)
  held_out, trainable = _tasks(int(seed), p)
  return {'pool': _pool(trainable, p), 'trainable': trainable, 'held_out': held_out}


def _pool(trainable: np.ndarray, p: dict) -> np.ndarray:
  return trainable[:p['num_tasks']] if p['num_tasks'] else trainable


def _vector(values: Iterable[int], signed: bool) -> str:
  return ','.join(f'{v:+d}' if signed else str(v) for v in values)


def _document(w: np.ndarray, x_ND: np.ndarray, y_N: list[int], noise: float) -> dict:
  """The document of one task: every row of x_ND but the last is a context pair, the last the
  query."""
  n = len(x_ND) - 1
  pairs = ''.join(f'{_vector(x, False)}={y:+d};' for x, y in zip(x_ND[:n].tolist(), y_N[:n]))
  prompt = pairs + _vector(x_ND[n].tolist(), False) + '='
  answer = f'{int(y_N[n]):+d}'
  return {'text': prompt + answer, 'skill': f'context_{n}', 'difficulty': n, 'num_context': n,
          'task': _vector(w.tolist(), True), 'noise': noise, 'prompt': prompt, 'answer': answer}


def _block(seed: int, split_index: int, block: int, p: dict, tasks: np.ndarray) -> list[dict]:
  """The `_BLOCK` documents of one block, in order, their tasks drawn uniformly from `tasks`."""
  rng = np.random.default_rng([_STREAM, seed, split_index, block])
  width = p['max_context'] + 1
  n_B = rng.integers(p['min_context'], width, size=_BLOCK).tolist()
  task_B = rng.integers(0, len(tasks), size=_BLOCK)
  x_BWD = rng.integers(0, p['x_max'] + 1, size=(_BLOCK, width, p['dim']))
  noise_BW = np.rint(p['noise'] * rng.standard_normal((_BLOCK, width))).astype(int)
  w_BD = tasks[task_B]
  y_BW = np.einsum('bwd,bd->bw', x_BWD, w_BD) + noise_BW
  return [_document(w_BD[b], x_BWD[b, :n + 1], y_BW[b, :n + 1].tolist(), p['noise'])
          for b, n in enumerate(n_B)]


def _generate(split: str, seed: int, p: dict) -> Iterator[dict]:
  split_index = SPLITS.index(split)
  held_out, trainable = _tasks(seed, p)
  held = split == 'validation' and p['validation'] == 'held_out'
  tasks = held_out if held else _pool(trainable, p)
  for index in range(p['num_documents']):
    block, offset = divmod(index, _BLOCK)
    if offset == 0:
      documents = _block(seed, split_index, block, p, tasks)
    yield {'id': f'{NAME}/{split}/{index}', **documents[offset]}


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` regression problems of `split`, each a dict of `id`, `text` and scalar
  metadata.

  Metadata: `skill` ('context_<n>'), `difficulty` and `num_context` (n), `task` (w, as '+3,-2'),
  `noise` (the parameter), `prompt` (the context pairs and the query x with '=') and `answer` (its
  y, signed); `text == prompt + answer`. Parameters are validated here, before any document is
  made; errors name `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p)


def parse(prompt: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """(context x [n, d], context y [n], query x [d]) of a prompt, all int; None when the prompt is
  not context pairs then a query of one dimension."""
  query = _QUERY.search(prompt, prompt.rfind(';') + 1)
  pairs = _PAIR.findall(prompt[:query.start()]) if query else []
  if not query or query.end() != len(prompt) or ''.join(
      f'{x}={y};' for x, y in pairs) != prompt[:query.start()]:
    return None
  rows = [[int(v) for v in x.split(',')] for x, _ in pairs] + [
      [int(v) for v in query.group(1).split(',')]]
  if len({len(row) for row in rows}) != 1:
    return None
  x_ND = np.array(rows, dtype=np.int64)
  return x_ND[:-1], np.array([int(y) for _, y in pairs], dtype=np.int64), x_ND[-1]


def check(document: dict) -> bool:
  """True when the prompt is context pairs then a query, and, for a noise-free task, every y
  (the answer's too) is the document's w.x."""
  parsed = parse(document['prompt'])
  if parsed is None or not re.fullmatch(r'[+-]\d+', document['answer']):
    return False
  x_ND, y_N, query_D = parsed
  w = np.array([int(v) for v in document['task'].split(',')])
  if len(w) != len(query_D):
    return False
  exact = np.array_equal(x_ND @ w, y_N) and int(document['answer']) == int(query_D @ w)
  return ((exact or document['noise'] > 0) and len(y_N) == document['num_context']
          and document['text'] == document['prompt'] + document['answer'])


def ridge(x_ND: np.ndarray, y_N: np.ndarray, query_D: np.ndarray, penalty: float) -> int:
  """The rounded ridge estimate of the query's y: w = (X'X + penalty I)^+ X'y; with penalty 0 the
  least-squares solution of least norm."""
  gram = x_ND.T @ x_ND + penalty * np.eye(len(query_D))
  return int(np.rint(query_D @ np.linalg.pinv(gram) @ x_ND.T @ y_N))


def bayes(x_ND: np.ndarray, y_N: np.ndarray, query_D: np.ndarray, pool_KD: np.ndarray,
          noise: float) -> int:
  """The rounded Bayes estimate (posterior mean) of the query's y under a uniform prior over
  `pool_KD` and Gaussian noise of scale `noise`: the paper's dMMSE estimator."""
  sse_K = ((x_ND @ pool_KD.T - y_N[:, None])**2).sum(0)
  logits_K = -sse_K / (2 * max(noise, _MIN_NOISE)**2)
  weights_K = np.exp(logits_K - logits_K.max())
  return int(np.rint(weights_K @ (pool_KD @ query_D) / weights_K.sum()))


def baselines(docs: Iterable[dict], seed: int, **params) -> dict[str, dict[str, float]]:
  """Exact-match rates of the rounded ridge estimate (`ridge`) and of the Bayes estimate under the
  training prior (`bayes_train_prior`: the posterior over the pool of K, over every task not held
  out when num_tasks=0) on `docs`, overall ('all') and by number of context pairs ('context_<n>').

  `params` are the generator's (those of the task that trained the model); ridge's penalty is
  noise^2 / Var(w entry), the Bayes estimator under the true prior's Gaussian approximation.
  """
  p = _resolve_params('validation', seed, 1, params, NAME)
  pool = task_pools(seed, **params)['pool']
  penalty = p['noise']**2 / (p['w_max'] * (p['w_max'] + 1) / 3)
  hits = {'ridge': {}, 'bayes_train_prior': {}}
  for doc in docs:
    x_ND, y_N, query_D = parse(doc['prompt'])
    answer = int(doc['answer'])
    guesses = {'ridge': ridge(x_ND, y_N, query_D, penalty),
               'bayes_train_prior': bayes(x_ND, y_N, query_D, pool, p['noise'])}
    for name, guess in guesses.items():
      for group in ('all', f'context_{len(y_N)}'):
        hits[name].setdefault(group, []).append(guess == answer)
  return {name: {group: float(np.mean(v)) for group, v in groups.items()}
          for name, groups in hits.items()}
