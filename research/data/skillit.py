"""Skill-it online data mixing (Chen et al. 2023, "Skill-It! A Data-Driven Skills Framework for
Understanding and Training Language Models", arXiv 2307.14430).

Skills are tasks: the training skills are the tasks of `data.mixture`, the evaluation skills are
`data.skillit.eval_tasks` (default: the training tasks). The skills graph A [K train x M eval]
says how much training on skill i helps skill j (`data.skillit.graph`, train task -> {eval task:
weight}; missing entries are 0; an empty graph is the identity, each skill helping only itself).
Every `data.skillit.every` steps the run evaluates, and the mixture of the next steps is the
multiplicative-weights rule of the paper's Algorithm 1, over the eval losses L_tau of the last
`window` updates (`eval/<task>/<metric>`, metric = `data.skillit.metric`: 'loss' over all of a
document's tokens, or 'answer_loss' over the answers of a task with prompts and answers):

    p_1[i]     ∝ prior[i] * exp(eta * sum_j A[i, j])
    p_{t+1}[i] ∝ prior[i] * exp(eta * sum_{tau = t-w+1..t} sum_j A[i, j] * L_j(f_tau))

where the prior is `data.mixture`'s weights (equal weights give the paper's rule exactly), eta =
`data.skillit.eta` (0.2 in the released scripts) and w = `data.skillit.window` (3). Each mixture
becomes a stage of the run's mixture schedule from the step after its evaluation on, rounded to
the exact per-block counts the sampler draws (research/data/sampler.py), so a skill whose share
rounds to no example of a block is left out until the rule raises it again.

The mixture trajectory is the run's state: each update appends a line {step, losses, weights} to
WORKDIR/skillit.jsonl; a resumed run reads the updates up to its checkpoint's step (and drops
later ones, which it recomputes), so the batches after a resume are those of the uninterrupted run.
Left out from the paper: normalising losses by their value at t = 0, a growing eta, and decaying
off-diagonal edges (`dynamic_lambda`).

`data.skillit.rule='sec'` replaces the rule by the Self-Evolving Curriculum's bandit (Chen et al.
2025, "Self-Evolving Curriculum for LLM Reasoning", arXiv 2505.14970): each training skill is an
arm whose value Q is updated by TD(0) from a reward of learning progress, and the mixture is the
Boltzmann distribution of the values,

    r_t[i]     = sum_j A[i, j] * (L_j(f_{t-1}) - L_j(f_t))       (the eval-loss drop since the
    Q_t[i]     = alpha * r_t[i] + (1 - alpha) * Q_{t-1}[i]          last update, through A)
    p_{t+1}[i] ∝ prior[i] * exp(Q_t[i] / temperature)

with Q_0 = 0 (so p_1 and p_2 are the prior: the first update has no earlier loss to drop from),
alpha = `data.skillit.alpha` and temperature = `data.skillit.temperature`. The paper rewards the
absolute advantage of the rollouts of the one category a batch drew; here every skill is in every
batch, so every arm is updated at each evaluation, and the reward is the drop of its (graph-
weighted) eval loss, in nats: a skill still being learnt is drawn more, one that has stalled
less. `eta` and `window` belong to the Skill-it rule only.
"""

import dataclasses
import json
import math

import ml_collections
import numpy as np
from etils import epath

from research import errors
from research.data import sampler as sampler_lib

FILE = 'skillit.jsonl'
METRICS = ('loss', 'answer_loss')  # research/evaluate.py's eval/<task>/<metric>
RULES = ('skillit', 'sec')


def initial_log_weights(prior_K: np.ndarray, graph_KM: np.ndarray, eta: float) -> np.ndarray:
  """Unnormalised log p_1: log prior + eta * A 1."""
  return np.log(prior_K) + eta * graph_KM.sum(axis=1)


def update_log_weights(prior_K: np.ndarray, graph_KM: np.ndarray, eta: float,
                       losses_WM: np.ndarray) -> np.ndarray:
  """Unnormalised log p_{t+1}: log prior + eta * A (sum of the window's eval losses [W, M])."""
  return np.log(prior_K) + eta * graph_KM @ np.asarray(losses_WM, np.float64).sum(axis=0)


def sec_values(graph_KM: np.ndarray, alpha: float, losses_TM: np.ndarray) -> np.ndarray:
  """SEC's arm values Q after the evaluations `losses_TM` [T, M] (TD(0) on the rewards A (L_{t-1}
  - L_t), from Q_0 = 0)."""
  values_K = np.zeros(graph_KM.shape[0])
  losses_TM = np.asarray(losses_TM, np.float64)
  for before_M, after_M in zip(losses_TM[:-1], losses_TM[1:]):
    values_K = alpha * graph_KM @ (before_M - after_M) + (1 - alpha) * values_K
  return values_K


def normalise(log_weights_K: np.ndarray) -> np.ndarray:
  """softmax of log weights (computed stably)."""
  shifted = np.exp(log_weights_K - np.max(log_weights_K))
  return shifted / shifted.sum()


@dataclasses.dataclass(frozen=True)
class Config:
  """The checked `data.skillit` of a run."""
  every: int
  metric: str
  eta: float
  window: int
  train_tasks: list[str]
  eval_tasks: list[str]
  prior_K: np.ndarray
  graph_KM: np.ndarray
  rule: str = 'skillit'
  alpha: float = 0.5
  temperature: float = 0.05

  def check_answers(self, answered: set[str]) -> None:
    """Fails naming data.skillit.metric when it is answer_loss and an evaluation skill is not in
    `answered` (the tasks whose evaluation scores answers), before any step runs."""
    unanswered = [name for name in self.eval_tasks if name not in answered]
    if self.metric == 'answer_loss' and unanswered:
      raise errors.UserError(f"data.skillit.metric='answer_loss', but the evaluation of "
                             f'{unanswered} scores no answers (their validation documents lack '
                             "prompt and answer metadata); use metric='loss' for them.")

  def mixture(self, losses_WM: np.ndarray | None) -> np.ndarray:
    """p_1 (no losses yet) or the mixture after the eval losses `losses_WM` of every update so far
    (Skill-it reads the last `window` of them, SEC all)."""
    if self.rule == 'sec':
      values_K = sec_values(self.graph_KM, self.alpha, np.zeros((0, self.graph_KM.shape[1])) if (
          losses_WM is None) else losses_WM)
      return normalise(np.log(self.prior_K) + values_K / self.temperature)
    if losses_WM is None or not len(losses_WM):
      return normalise(initial_log_weights(self.prior_K, self.graph_KM, self.eta))
    return normalise(update_log_weights(self.prior_K, self.graph_KM, self.eta,
                                        losses_WM[-self.window:]))


def _number(value, key: str, low: float, integer: bool = False, above: bool = False):
  kind = int if integer else (int, float)
  if isinstance(value, bool) or not isinstance(value, kind) or not (
      low < value if above else low <= value) or not value < math.inf:
    raise errors.UserError(f'data.skillit.{key}={value!r} must be a finite '
                           f'{"integer" if integer else "number"} {">" if above else ">="} {low}.')
  return value


def bind(data_config: ml_collections.ConfigDict) -> Config | None:
  """The checked `data.skillit` (None when `every` is 0, Skill-it off); fails naming a bad key."""
  skillit = data_config.skillit
  every = _number(skillit.every, 'every', 0, integer=True)
  if not every:
    return None
  if len(data_config.stages):
    raise errors.UserError(f'data.skillit.every={every} sets the mixture online, so data.stages '
                           f'({sorted(data_config.stages.keys())}) cannot also set it; remove one.')
  prior = sampler_lib.normalised_weights(dict(data_config.mixture), 'data.mixture')
  train_tasks = list(prior)
  eval_tasks = list(skillit.eval_tasks) or train_tasks
  if len(set(eval_tasks)) != len(eval_tasks):
    raise errors.UserError(f'data.skillit.eval_tasks={tuple(eval_tasks)} names a task twice.')
  graph_KM = np.zeros([len(train_tasks), len(eval_tasks)])
  if not len(skillit.graph):
    for i, name in enumerate(train_tasks):
      if name in eval_tasks:
        graph_KM[i, eval_tasks.index(name)] = 1.0
  for train, row in skillit.graph.items():
    if train not in train_tasks:
      raise errors.UserError(f'data.skillit.graph.{train} is not a task of data.mixture '
                             f'{train_tasks}; the graph\'s rows are the training skills.')
    if not isinstance(row, (dict, ml_collections.ConfigDict)):
      raise errors.UserError(f'data.skillit.graph.{train}={row!r} must map evaluation tasks to '
                             "weights, e.g. {'lego_2': 1.0, 'lego_3': 0.5}.")
    for name, weight in dict(row).items():
      if name not in eval_tasks:
        raise errors.UserError(f'data.skillit.graph.{train}.{name} is not an evaluation skill '
                               f'{eval_tasks} (data.skillit.eval_tasks).')
      if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(
          weight):
        raise errors.UserError(f'data.skillit.graph.{train}.{name}={weight!r} must be a finite '
                               'number.')
      graph_KM[train_tasks.index(train), eval_tasks.index(name)] = weight
  metric = skillit.metric
  if metric not in METRICS:
    raise errors.UserError(f'data.skillit.metric={metric!r} must be one of {list(METRICS)}.')
  if skillit.rule not in RULES:
    raise errors.UserError(f"data.skillit.rule={skillit.rule!r} must be one of {list(RULES)}: "
                           "'skillit' (multiplicative weights), 'sec' (a TD(0) bandit).")
  alpha = float(_number(skillit.alpha, 'alpha', 0, above=True))
  if alpha > 1:
    raise errors.UserError(f'data.skillit.alpha={alpha!r} must be in (0, 1]: the TD(0) step of '
                           "SEC's values; e.g. 0.5.")
  return Config(every=every, metric=metric, eta=float(_number(skillit.eta, 'eta', 0)),
                window=_number(skillit.window, 'window', 1, integer=True),
                train_tasks=train_tasks, eval_tasks=eval_tasks,
                prior_K=np.array([prior[name] for name in train_tasks]), graph_KM=graph_KM,
                rule=skillit.rule, alpha=alpha,
                temperature=float(_number(skillit.temperature, 'temperature', 0, above=True)))


@dataclasses.dataclass
class Update:
  """One Skill-it update: the eval losses at `step` and the mixture of the steps from `step` on."""
  step: int
  losses: dict[str, float]
  weights: dict[str, float]


class OnlineMixture:
  """A run's Skill-it mixture schedule: p_1 from step 0, then one stage per update."""

  def __init__(self, config: Config, block_size: int, workdir: str, first_step: int,
               writes: bool = True):
    self.config, self._block, self._writes = config, block_size, writes
    self._path = epath.Path(workdir) / FILE
    self.updates: list[Update] = []
    if self._path.exists():
      lines = [json.loads(line) for line in self._path.read_text().splitlines() if line.strip()]
      self.updates = [Update(**line) for line in lines if line['step'] <= first_step]
      if len(self.updates) < len(lines) and writes:  # past the checkpoint: recomputed on the way
        self._path.write_text(''.join(json.dumps(dataclasses.asdict(u)) + '\n'
                                      for u in self.updates))

  def _weights(self, num_updates: int) -> dict[str, float]:
    losses_WM = np.array([[u.losses[name] for name in self.config.eval_tasks]
                          for u in self.updates[:num_updates]]).reshape(-1, len(
                              self.config.eval_tasks))
    weights_K = self.config.mixture(losses_WM)
    return sampler_lib.block_shares(dict(zip(self.config.train_tasks, weights_K)), self._block)

  def stages(self) -> list[sampler_lib.Stage]:
    """The main mixture schedule: p_1 from step 0 and each update's mixture from its step on."""
    return [sampler_lib.Stage(0, self._weights(0))] + [
        sampler_lib.Stage(u.step, u.weights) for u in self.updates]

  def due(self, step: int, total_steps: int) -> bool:
    """Whether the mixture updates after step `step` (a multiple of `every` before the end)."""
    return step % self.config.every == 0 and 0 < step < total_steps

  def update(self, step: int, eval_results: dict[str, float]) -> Update:
    """Appends the update at `step` from `eval/<task>/<metric>` of each evaluation skill."""
    keys = {name: f'eval/{name}/{self.config.metric}' for name in self.config.eval_tasks}
    missing = [key for key in keys.values() if key not in eval_results]
    if missing:
      raise errors.UserError(f'data.skillit.metric={self.config.metric!r}: the evaluation logged no '
                             f'{missing}; answer_loss needs tasks whose documents have prompt and '
                             "answer metadata (arithmetic, lego), 'loss' works for every task.")
    losses = {name: float(eval_results[key]) for name, key in keys.items()}
    self.updates.append(Update(step, losses, {}))
    self.updates[-1].weights = self._weights(len(self.updates))
    if self._writes:
      with self._path.open('a') as f:
        f.write(json.dumps(dataclasses.asdict(self.updates[-1])) + '\n')
    return self.updates[-1]


def graph_from_losses(start_RM: np.ndarray, end_RM: np.ndarray) -> np.ndarray:
  """The brute-force skills graph of the paper (section 3): run r trained on one skill only; edge
  [r, j] is how much that lowered skill j's eval loss, start - end, clipped at 0 (a skill that
  training on r made worse gets no edge)."""
  return np.maximum(np.asarray(start_RM, np.float64) - np.asarray(end_RM, np.float64), 0.0)


def run_skill(config: dict, where: str) -> str:
  """The one task with a positive weight in a run's data.mixture (its training skill); fails
  naming `where` (the run's config.json) otherwise."""
  mixture = config.get('data', {}).get('mixture', {})
  positive = [name for name, weight in mixture.items()
              if isinstance(weight, (int, float)) and weight > 0]
  if len(positive) != 1:
    raise errors.UserError(f'{where}: data.mixture={mixture} trains on {len(positive)} tasks; a '
                           'run that estimates the skills graph trains on exactly one skill.')
  return positive[0]
