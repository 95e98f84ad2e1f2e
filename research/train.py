"""TrainState, the pure train step, and the training loop.

`train_step(state, batch, rng) -> (state, metrics)` is a pure function jitted with NamedShardings
derived from the logical axis rules, with the state donated. The loop feeds it the batch of each
step (a pure function of config and step, research/data/pipeline.py), so a run resumes from any
checkpoint with no iterator state and ends bit-identical to an uninterrupted run.
"""

import contextlib
import dataclasses
import functools
import os
import sys
import time
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from research import checkpoint, config as config_lib, console, errors, evaluate, finished
from research import metrics as metrics_lib, multiple_choice
from research import pathways, peak_flops, preemption, provenance, schedules, sharding
from research.data import pipeline, probes, records, shapes, skillit, vocabularies
from research.model import growth, placed, transformer
from research.objectives import distillation, load_balance, losses, registry
from research.optimizers import make_optimizer


@flax.struct.dataclass
class TrainState:
  step: jnp.ndarray
  params: Any
  opt_state: Any


def make_init_fn(model: nn.Module, tx: optax.GradientTransformation, batch: dict):
  """rng -> TrainState with boxed (logically named) parameters (research/model/placed.py
  `make_params_init`) and optimizer state."""
  params_init = placed.make_params_init(model, batch)

  def init(rng):
    params = params_init(rng)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return init


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    train_config: ml_collections.ConfigDict, dropout: bool,
                    teacher: nn.Module | None = None,
                    distill_config: ml_collections.ConfigDict | None = None,
                    schedule: Callable | None = None, moe_rows: int = 1,
                    coverage_n: int = 0) -> Callable:
  """The pure step: gradient over `micro_batches` micro-batches, summed, normalised once, applied.

  Loss sums and weights are accumulated across micro-batches and divided by the total weight at the
  end, so accumulation over k micro-batches computes the same update as one batch of k times the size.
  With a `teacher` model, the step's fourth argument is its parameters and the loss is
  (1 - w) * (cross-entropy + z-loss) + w * distillation (research/objectives/distillation.py), the
  temperature from `distill_config` (config.objective.distill) and w its weight at the step
  (`distillation.weight_at`, over `train_config.steps`; reported as `distill_weight`), plus, with
  `distill_config.hidden_weight` h > 0 while distillation is on, h times the hidden states'
  squared error (`distillation.hidden_sums`, reported as `distill_hidden`), the teacher's logits
  swapped to rank each target first with `distill_config.swap` (Mix-CPT): where neither term
  has weight the teacher is not run and `distill` is 0. With the optimizer's
  `schedule`, the step also reports the learning rate it applied. With `coverage_n` N > 0 the loss
  is the pass@N coverage loss of each packed segment instead of cross-entropy
  (losses.coverage_sum; config.objective.loss='coverage'): `loss` still reports the cross-entropy,
  `coverage` the loss trained.

  A model with mixture-of-experts layers adds its router losses (research/objectives/
  load_balance.py) at scope `train_config.moe_balance`, with micro_batch groups of `moe_rows` rows,
  and reports the routing metrics; the global-batch expert counts carry from one micro-batch to the
  next.

  With `train_config.monitor_logits`, the step also reports the instability monitors of Wortsman
  et al. 2023 (arXiv 2309.14322), over the step's whole batch: `monitor/attention_logit_max`, the
  largest attention logit q.k / sqrt(K) (muP: its scale) of any layer, head and attended position
  (layers.Attention), `monitor/output_logit_mean`, the mean output logit over the vocabulary and
  the weighted positions, and `monitor/output_logit_abs_max`, the largest |output logit| there
  (`logit_monitors`). Off, the model sows nothing and the step is unchanged.
  """
  num_micro = train_config.micro_batches
  model_config = model.config
  routed = model_config.moe_experts > 0
  monitor = train_config.monitor_logits
  match_hidden = teacher is not None and distill_config.hidden_weight > 0

  def loss_sums(params, batch, rng, teacher_params, distill_weights, moe_buffer):
    chunk = train_config.loss_chunk
    outputs, variables = model.apply({'params': params}, batch, deterministic=not dropout,
                                     rngs={'dropout': rng},
                                     mutable=['intermediates', *(['monitors'] if monitor else [])],
                                     hidden=chunk > 0 or match_hidden)
    maxima = {}
    if chunk:
      x_BLD, unembed_VD = outputs
      logits_fn = lambda x_BCD: transformer.output_logits(model_config, x_BCD, unembed_VD)
      sums = losses.chunked_token_cross_entropy(logits_fn, x_BLD, batch['targets'],
                                                batch['weights'], train_config.z_loss, chunk)
      if monitor:
        logit_sums, maxima = chunked_logit_monitors(logits_fn, x_BLD, batch['weights'], chunk)
    else:
      if match_hidden:
        x_BLD, unembed_VD = outputs
        logits_BLV = transformer.output_logits(model_config, x_BLD, unembed_VD)
      else:
        logits_BLV = outputs
      sums = losses.token_cross_entropy(logits_BLV, batch['targets'], batch['weights'],
                                        train_config.z_loss, batch['segment_ids'], coverage_n)
      if monitor:
        logit_sums, maxima = logit_monitors(logits_BLV, batch['weights'])
    if monitor:
      sums.update(logit_sums)
      maxima['attention_logit_max'] = attention_logit_max(variables['monitors'])
    loss = sums['loss_sum']
    if teacher is not None:
      kl_weight, hidden_weight = distill_weights

      def distill():
        taught = teacher.apply({'params': teacher_params}, batch, hidden=match_hidden)
        teacher_logits_BLV = taught
        if match_hidden:
          teacher_x_BLD, teacher_unembed_VD = taught
          teacher_logits_BLV = transformer.output_logits(teacher.config, teacher_x_BLD,
                                                         teacher_unembed_VD)
        kl_sum = distillation.distillation_sums(
            logits_BLV, teacher_logits_BLV, batch['weights'], distill_config.temperature,
            batch['targets'] if distill_config.swap else None)['kl_sum']
        if not match_hidden:
          return kl_sum, jnp.float32(0)
        return kl_sum, distillation.hidden_sums(x_BLD, teacher_x_BLD, batch['weights'])

      kl_sum, hidden_sum = jax.lax.cond((kl_weight > 0) | (hidden_weight > 0), distill,
                                        lambda: (jnp.float32(0), jnp.float32(0)))
      sums['distill_sum'] = kl_sum
      loss = (1 - kl_weight) * loss + kl_weight * kl_sum
      if match_hidden:
        sums['distill_hidden_sum'] = hidden_sum
        loss = loss + hidden_weight * hidden_sum
    if routed:
      moe_sums, moe_buffer = load_balance.aux_sums(
          load_balance.router_stats(variables['intermediates']), sums['weight_sum'], train_config,
          moe_rows, model_config.moe_top_k, moe_buffer)
      sums.update(moe_sums)
      loss = loss + moe_sums['moe_loss_sum']
    return loss, (sums, moe_buffer, maxima)

  grad_fn = jax.grad(loss_sums, has_aux=True)
  moe_buffer = (load_balance.empty_buffer(transformer.moe_layers(model_config),
                                          model_config.moe_experts) if routed else None)

  def train_step(state: TrainState, batch: dict, rng, teacher_params=None):
    distill_weights = None if teacher is None else (
        distillation.weight_at(distill_config, state.step, train_config.steps),
        distill_config.hidden_weight * distillation.active_at(distill_config, state.step,
                                                              train_config.steps))
    if num_micro == 1:
      grads, (sums, _, maxima) = grad_fn(state.params, batch, rng, teacher_params,
                                         distill_weights, moe_buffer)
    else:
      # Micro-batch k takes rows k, k + m, k + 2m, ...: every data shard holds part of each one.
      micro = jax.tree.map(
          lambda x: x.reshape(x.shape[0] // num_micro, num_micro, *x.shape[1:]).swapaxes(0, 1),
          batch)

      def accumulate(carry, inputs):
        totals, buffer, peaks = carry
        micro_batch, micro_rng = inputs
        grads, (sums, buffer, maxima) = grad_fn(state.params, micro_batch, micro_rng,
                                                teacher_params, distill_weights, buffer)
        return (jax.tree.map(jnp.add, totals, (grads, sums)), buffer,
                jax.tree.map(jnp.maximum, peaks, maxima)), None

      grads_shape, (sums_shape, _, maxima_shape) = jax.eval_shape(
          grad_fn, state.params, jax.tree.map(lambda x: x[0], micro), rng, teacher_params,
          distill_weights, moe_buffer)
      zeros = jax.tree.map(jnp.zeros_like, (grads_shape, sums_shape))
      lowest = jax.tree.map(lambda x: jnp.full(x.shape, -jnp.inf, x.dtype), maxima_shape)
      ((grads, sums), _, maxima), _ = jax.lax.scan(
          accumulate, (zeros, moe_buffer, lowest), (micro, jax.random.split(rng, num_micro)))
    grads = jax.tree.map(lambda g: g / jnp.maximum(sums['weight_sum'], 1.0), grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    step_metrics = losses.mean_metrics(sums)
    step_metrics['grad_norm'] = optax.tree.norm(grads)
    # A non-finite loss or gradient applies no update: parameters and optimizer state (Adam's
    # moments and count) stay as they were, but for the schedule's count, which follows the step.
    finite = jnp.isfinite(step_metrics['loss']) & jnp.isfinite(step_metrics['grad_norm'])
    params, opt_state = skip_unless(finite, (params, opt_state), (state.params, state.opt_state))
    step_metrics['nonfinite'] = 1.0 - finite.astype(jnp.float32)
    if routed:
      step_metrics.update(load_balance.moe_metrics(sums))
    if monitor:
      step_metrics['monitor/output_logit_mean'] = (sums['output_logit_sum']
                                                   / jnp.maximum(sums['weight_sum'], 1.0))
      step_metrics.update({f'monitor/{name}': value for name, value in maxima.items()})
    if schedule is not None:
      step_metrics['learning_rate'] = schedule(schedule_position(state.opt_state))
    if teacher is not None:
      step_metrics['distill_weight'] = distill_weights[0]
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, step_metrics

  return train_step


def attention_logit_max(monitors) -> jnp.ndarray:
  """The largest `attention_logit_max` that any attention of the model sowed into its `monitors`
  collection (layers.Attention): one a layer, stacked where the layers are scanned."""
  return jnp.max(jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(monitors)]))


def logit_monitors(logits_BLV, weights_BL) -> tuple[dict, dict]:
  """The output-logit monitors of a batch, as (sums, maxima): `output_logit_sum`, the sum over
  positions of the weight times the mean logit over the vocabulary, which adds up over
  micro-batches (divided by the weight it is the mean output logit, whose drift precedes the
  output-logit divergence of Wortsman et al. 2023, arXiv 2309.14322); `output_logit_abs_max`, the
  largest |logit| at a position of weight > 0 (0 when there is none)."""
  logits_BLV = jax.lax.stop_gradient(logits_BLV.astype(jnp.float32))
  weights_BL = weights_BL.astype(jnp.float32)
  largest_BL = jnp.max(jnp.abs(logits_BLV), axis=-1)
  return ({'output_logit_sum': jnp.sum(jnp.mean(logits_BLV, axis=-1) * weights_BL)},
          {'output_logit_abs_max': jnp.max(jnp.where(weights_BL > 0, largest_BL, 0.0))})


def chunked_logit_monitors(logits_fn, x_BLD, weights_BL, chunk: int) -> tuple[dict, dict]:
  """`logit_monitors(logits_fn(x_BLD), weights_BL)`, computed `chunk` positions at a time (as
  losses.chunked_token_cross_entropy computes the loss): one chunk's logits exist at once."""
  batch, length = weights_BL.shape
  chunks = lambda a: a.reshape(batch, length // chunk, chunk, *a.shape[2:]).swapaxes(0, 1)
  sums, maxima = jax.lax.map(lambda inputs: logit_monitors(logits_fn(inputs[0]), inputs[1]),
                             (chunks(jax.lax.stop_gradient(x_BLD)), chunks(weights_BL)))
  return (jax.tree.map(lambda x: jnp.sum(x, axis=0), sums),
          jax.tree.map(lambda x: jnp.max(x, axis=0), maxima))


def skip_unless(finite, new, old):
  """`new` where `finite` (a scalar bool), else `old`, leaf by leaf; the count of a schedule state
  (optax.ScaleByScheduleState) is always `new`'s, so the learning rate stays a function of the step.

  A select, not a branch: a NaN in the unselected tree does not reach the result.
  """
  def pick(n, o):
    if _is_schedule_state(n):
      return jax.tree.map(lambda a, b: jnp.where(finite, a, b), n, o)._replace(count=n.count)
    return jnp.where(finite, n, o)
  return jax.tree.map(pick, new, old, is_leaf=_is_schedule_state)


class Divergence:
  """The host's record of non-finite steps and loss spikes, updated at each log from the metrics
  the loop fetched there anyway (no extra device sync).

  `observe` returns the metrics to log: `nonfinite_steps`, the steps of this call of train() whose
  update was skipped (a resumed run counts from 0 again; the per-window `nonfinite` metric is in
  metrics.jsonl for the whole run), and `loss_spike`, the mean loss of the window's finite steps
  divided by an exponential moving average (decay `SPIKE_DECAY`) of the previous windows' (about
  1 for a smooth run, 2 when the loss doubled; absent at the first log of a call and for a
  window with no finite step). `stop` is True once the last `max_nonfinite` steps were all
  non-finite under policy 'stop'; with log_every > 1 that is seen at the next log.
  """

  SPIKE_DECAY = 0.9

  def __init__(self, train_config: ml_collections.ConfigDict):
    self.policy, self.limit = train_config.nonfinite, train_config.max_nonfinite
    self.total, self.streak, self.first_bad = 0, 0, None
    self.loss_average = None
    self.stop = False

  def observe(self, first_step: int, fetched: list[dict]) -> dict:
    """Steps first_step + 1, ... (1-based: the step count after each) had metrics `fetched`."""
    finite_losses = []
    for done, metrics in enumerate(fetched, first_step + 1):
      if metrics['nonfinite'] > 0:
        self.total += 1
        self.streak += 1
        self.first_bad = done if self.streak == 1 else self.first_bad
      else:
        self.streak = 0
        finite_losses.append(float(metrics['loss']))
      if self.policy == 'stop' and self.streak >= self.limit:
        self.stop = True  # the run stops here: later steps of the window are not counted
        break
    logged = {'nonfinite_steps': self.total}
    if finite_losses:
      loss = float(np.mean(finite_losses))
      if self.loss_average is not None:
        logged['loss_spike'] = loss / self.loss_average
        self.loss_average = self.SPIKE_DECAY * self.loss_average + (1 - self.SPIKE_DECAY) * loss
      else:
        self.loss_average = loss
    return logged

  def stop_message(self, workdir: str, last_checkpoint: int | None) -> str:
    """The message of the UserError that stops a run, naming the steps and the checkpoint."""
    directory = checkpoint.checkpoint_dir(workdir)
    where = (f'the last checkpoint is step {last_checkpoint} in {directory} (no update of a '
             'non-finite step is in it)' if last_checkpoint is not None
             else 'there is no checkpoint yet')
    return (f'training diverged: {self.streak} consecutive non-finite steps (loss or gradient '
            f'NaN or inf), the first at step {self.first_bad}, reached '
            f'train.max_nonfinite={self.limit}; {where}. Re-running resumes '
            'from it: lower train.grad_clip or the learning rate (schedule.*), or set '
            "train.nonfinite='skip' to skip such steps.")


class Trainer(placed.ModelOnMesh):
  """Everything a run needs, built from a validated config: the model on its mesh
  (research/model/placed.py), the optimizer, the state's shardings, the jitted steps."""

  def __init__(self, config: ml_collections.ConfigDict, devices=None, schedule=None):
    """`schedule`: the learning rate at each step, if config.validate built it already."""
    super().__init__(config, devices)
    self.schedule = schedule or schedules.make_run_schedule(config.schedule, config.phases,
                                                            config.train.steps)
    self.tx = make_optimizer(config.train, self.schedule, self.model_config.mup_multiplier)
    init_fn = make_init_fn(self.model, self.tx, self.init_batch)
    boxed = jax.eval_shape(init_fn, jax.random.key(config.seed))
    self.state_shardings = sharding.logical_shardings(boxed, self.mesh, self.rules)
    self.abstract_state = checkpoint.abstract_like(nn.meta.unbox(boxed), self.state_shardings)
    self._init = jax.jit(lambda rng: nn.meta.unbox(init_fn(rng)), out_shardings=self.state_shardings)
    replicated = sharding.replicated(self.mesh)
    self.teacher, self.teacher_params, teacher_shardings = None, None, None
    if config.objective.distill.teacher:
      self.teacher, self.teacher_params, teacher_shardings = load_teacher(config, devices)
    moe_rows = load_balance.group_rows(
        config.train, sharding.data_parallel_size(self.mesh.shape, self.rules))
    step = make_train_step(self.model, self.tx, config.train, config.model.dropout_rate > 0,
                           self.teacher, config.objective.distill, self.schedule, moe_rows,
                           config.objective.coverage_n * (config.objective.loss == 'coverage'))
    self._step = jax.jit(step, in_shardings=(self.state_shardings, self.batch_sharding, replicated,
                                             teacher_shardings),
                         out_shardings=(self.state_shardings, replicated), donate_argnums=0)
    self._eval_step = evaluate.make_eval_step(self.model, replicated)
    self._pathway_step = (pathways.make_pathway_step(self.model, replicated)
                          if config.eval.pathway_rows else None)
    self._choice_step = (multiple_choice.make_choice_step(self.model, replicated)
                         if config.eval.multiple_choice.tasks else None)

  def init_state(self) -> TrainState:
    return self._init(jax.random.key(self.config.seed))

  def fresh_opt_state(self, params):
    """A new optimizer state for `params`, placed like the state's."""
    return jax.jit(self.tx.init, out_shardings=self.state_shardings.opt_state)(params)

  def step(self, state: TrainState, batch: dict, rng) -> tuple[TrainState, dict]:
    with sharding.activate(self.mesh, self.rules):
      return self._step(state, batch, rng, self.teacher_params)

  def step_memory(self, batch: dict, rng):
    """XLA's memory analysis of the step compiled for `batch` (`temp_size_in_bytes`, the
    activations and other temporaries; `argument_size_in_bytes`, ...); once the step has run on
    such a batch, the compilation cache has it."""
    with sharding.activate(self.mesh, self.rules):
      return self._step.lower(self.abstract_state, batch, rng,
                              self.teacher_params).compile().memory_analysis()

  def eval_step(self, params, batch):
    with sharding.activate(self.mesh, self.rules):
      return self._eval_step(params, batch)

  def pathway_step(self, params, batch):
    """The MoE pathways of `batch` (research/pathways.make_pathway_step)."""
    with sharding.activate(self.mesh, self.rules):
      return self._pathway_step(params, batch)

  def choice_step(self, params, batch):
    """Each target's log-probability in `batch` (research/multiple_choice.make_choice_step)."""
    with sharding.activate(self.mesh, self.rules):
      return self._choice_step(params, batch)


def load_teacher(config: ml_collections.ConfigDict, devices):
  """The model, parameters and parameter shardings of the run in `objective.distill.teacher`
  (its latest checkpoint, or the one it names), placed on this run's mesh. Only the parameters are
  read, and nothing is written to the teacher's workdir (research/finished.py)."""
  teacher = placed.ModelOnMesh(distillation.teacher_config(config), devices)
  path = config.objective.distill.teacher
  params, _ = finished.restore_params(path, teacher.abstract_params,
                                    f'objective.distill.teacher={path!r}')
  return teacher.model, params, teacher.param_shardings


def _is_schedule_state(node) -> bool:
  return isinstance(node, optax.ScaleByScheduleState)


def schedule_position(opt_state):
  """The step the learning-rate schedule is at: the count of optax's scale_by_schedule state
  (equal to the training step, unless a continual run restarted or continued the schedule)."""
  return next(s.count for s in jax.tree.leaves(opt_state, is_leaf=_is_schedule_state)
              if _is_schedule_state(s))


def state_from_checkpoint(trainer: Trainer, init: ml_collections.ConfigDict,
                          total_steps: int) -> TrainState:
  """The first state of a run that starts from the checkpoint in `init.path` (config.init).

  Continual pretraining (Gupta et al. 2023, "Continual Pre-Training of Large Language Models: How
  to (re)warm your model?", arXiv 2308.04014; Ibrahim et al. 2024, arXiv 2403.08763): the
  parameters always carry over; the optimizer state only with `init.optimizer`; the step counter
  is reset to 0 or kept (`init.step`); the schedule restarts from its step 0 or continues from the
  checkpoint's step (`init.schedule`), whatever the step counter does. Shapes are checked against
  the model before anything is read. With `init.grow` the checkpoint's model may be smaller: its
  parameters are grown to this one's (`grown_params`), with a fresh optimizer state.
  """
  directory, step, saved = finished.open_checkpoint(init.path, f'init.path={init.path}')
  where = f'init.path={init.path} (checkpoint {step})'
  abstract = trainer.abstract_state
  if not init.grow:
    checkpoint.check_shapes(saved['params'], abstract.params, where)
  if init.optimizer and 'opt_state' not in saved:
    raise errors.UserError(f'{where} holds parameters only (an imported checkpoint?), no optimizer '
                           'state; set init.optimizer=False.')
  if init.step == 'keep' and step >= total_steps:
    raise errors.UserError(f'train.steps={total_steps} is not past step {step}, where '
                           "init.step='keep' goes on from; set train.steps to the last step.")
  parts = {'params': abstract.params}
  if init.optimizer:
    parts['opt_state'] = abstract.opt_state
  if init.grow:  # config.validate refuses init.optimizer with it
    restored = {'params': grown_params(trainer, directory, step, saved['params'], where)}
  else:
    try:
      restored = checkpoint.restore_parts(directory, step, parts)
    except (ValueError, KeyError) as error:  # the optimizer's structure differs
      raise errors.UserError(f'{where}: its optimizer state does not fit this run\'s optimizer '
                             '(train.optimizer, train.grad_clip, train.weight_decay, ...); set '
                             'init.optimizer=False or configure the optimizer as that run did '
                             f'({error}).') from error
  params = restored['params']
  opt_state = restored['opt_state'] if init.optimizer else trainer.fresh_opt_state(params)
  position = 0 if init.schedule == 'restart' else step
  opt_state = jax.tree.map(
      lambda s: s._replace(count=jax.device_put(jnp.full_like(s.count, position), s.count.sharding))
      if _is_schedule_state(s) else s, opt_state, is_leaf=_is_schedule_state)
  first = step if init.step == 'keep' else 0
  return TrainState(step=jax.device_put(jnp.asarray(first, jnp.int32), abstract.step.sharding),
                    params=params, opt_state=opt_state)


def grown_params(trainer: Trainer, directory: epath.Path, step: int, saved: dict, where: str):
  """The parameters of checkpoint `step` in `directory`, of a decoder no larger than the run's
  (`saved`: their (shape, dtype) leaves), grown to the run's model and placed as its parameters
  (init.grow; research/model/growth.py: bert2BERT's function-preserving growth)."""
  source = growth.source_config(saved, trainer.model_config, where)
  _, abstract = trainer.place_params(transformer.make_model(source))
  checkpoint.check_shapes(saved, abstract, where)
  params = checkpoint.restore_parts(directory, step, {'params': abstract})['params']
  grow = functools.partial(growth.grow, old=source, new=trainer.model_config,
                           seed=trainer.config.seed, noise=trainer.config.init.grow_noise)
  return jax.jit(grow, out_shardings=trainer.state_shardings.params)(params)


def run_data(config: ml_collections.ConfigDict, workdir: str | None, first_step: int,
             writes: bool = False, setup: config_lib.Setup | None = None):
  """(vocabulary, objective, TrainData, Skill-it OnlineMixture or None) of run `config`, its
  batches as its training loop reads them from `first_step`: for a Skill-it run (data.skillit), the
  mixture updates `workdir` logged up to there (written there from then on if `writes`). `setup`
  (config.validate's) holds the vocabulary, objective and mixture plan, else they are built here."""
  if setup:
    vocabulary, objective, phases, plan, batch_shapes = (
        setup.vocabulary, setup.objective, setup.phases, setup.plan, setup.shapes)
  else:
    vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
    (_, objective), *phases = registry.objective_phases(config, vocabulary)
    plan, batch_shapes = None, shapes.shape_phases(config)
  data = pipeline.TrainData(config.data, config.train.batch_size, config.seed, config.train.steps,
                            objective, plan, phases, batch_shapes)
  online = data.plan.online
  mixing = online and skillit.OnlineMixture(online, config.data.mixture_block, workdir, first_step,
                                            writes=writes)
  if mixing:
    data.set_stages(mixing.stages())  # Skill-it's p_1 and the updates up to first_step
  return vocabulary, objective, data, mixing or None


def step_rng(seed: int, step: int):
  return jax.random.fold_in(jax.random.key(seed + 1), step)


class ProfileTrace:
  """A jax.profiler trace of training steps [a, b) (`train.profile_steps`) into `log_dir`.

  The trace starts before step a (its batch assembly included) and stops once step b-1's state is
  computed, so it holds the device work. A run resumed at a step in [a, b) traces from there to b;
  one resumed at b or later traces nothing. A run that stops inside [a, b) (`stop_after`, a signal,
  an error) ends the trace where it stops. Only the main process traces (`enabled`): every process
  runs the same program, and one trace per run keeps WORKDIR/profile/ readable.
  """

  def __init__(self, steps, log_dir: str, first_step: int, enabled: bool = True):
    a, b = tuple(steps) or (0, 0)
    self.start, self.end = max(a, first_step), b
    self.enabled = enabled and first_step < b
    self.log_dir, self.active = log_dir, False

  def before_step(self, step: int) -> None:
    if self.enabled and step == self.start:
      jax.profiler.start_trace(self.log_dir)
      self.active = True

  def after_step(self, done: int, state, last: bool) -> None:
    """Stops after step `done - 1` if it ends the range, or the run stops after it (`last`)."""
    if self.active and (done == self.end or last):
      jax.block_until_ready(state)
      jax.profiler.stop_trace()
      self.active = False

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    if self.active:  # an error inside the range: keep what was traced
      jax.profiler.stop_trace()
      self.active = False


@dataclasses.dataclass
class Evaluations:
  """What every evaluation of a run reads, built once: the eval sets (eval/<task>/... for the
  training objective, eval/<task>/<format>/... for the other formats, eval/probe/<name>/... for the
  knowledge-injection probes and their controls), the pathway monitor's fixed training rows
  (eval.pathway_rows) and the multiple-choice questions (eval.multiple_choice)."""
  sets: dict[str, evaluate.EvalSet]
  token_bytes: np.ndarray
  probe_names: list[str]
  monitored: dict[str, list[dict]]
  choices: dict[str, multiple_choice.ChoiceSet]

  def run(self, trainer: Trainer, params) -> dict[str, float]:
    results = evaluate.evaluate(trainer.eval_step, params, self.sets, self.token_bytes,
                                trainer.place)
    results.update(probes.gap_metrics(results, self.probe_names))
    results.update(multiple_choice.evaluate(trainer.choice_step, params, self.choices,
                                            trainer.place))
    for task, batches in self.monitored.items():
      results.update(pathways.pathway_metrics(
          [trainer.pathway_step(params, trainer.place(b)) for b in batches], f'monitor/{task}/'))
    return results


def make_evaluations(config: ml_collections.ConfigDict, data: pipeline.TrainData, objective,
                     vocabulary, online: skillit.Config | None) -> Evaluations:
  """The `Evaluations` of run `config` training on `data`; each evaluation's answers (tasks with
  prompt and answer metadata) are found here, once."""
  batch_size = config.eval.batch_size
  sets = {'/'.join(filter(None, (task, name))): evaluate.eval_set(
              config.data, task, batch_size, config.eval.batches, eval_objective, vocabulary)
          for task in dict.fromkeys([*data.task_names, *config.eval.tasks,
                                     *(online.eval_tasks if online else [])])
          for name, eval_objective in registry.eval_objectives(
              objective, config.eval.objectives, vocabulary,
              data.phase_at(config.train.steps - 1).objective).items()}
  for probe in data.probes:  # the injected documents and the control
    for suffix, rows in (('', probe.rows), ('/control', probe.control_rows)):
      sets[f'probe/{probe.spec.name}{suffix}'] = evaluate.EvalSet(pipeline.row_batches(
          rows, batch_size, len(rows['targets']), objective))
  if online:
    online.check_answers({task for task, evaluation in sets.items()
                          if evaluation.groups is not None})
  pathway_rows = config.eval.pathway_rows
  monitored = {task: pipeline.row_batches(data.rows.first_rows(i, pathway_rows), batch_size,
                                          -(-pathway_rows // batch_size), objective)
               for i, task in enumerate(data.task_names) if pathway_rows}
  choices = {task: multiple_choice.choice_set(config.data, task, config.eval.multiple_choice,
                                              batch_size, vocabulary, pipeline.EVAL_SEED)
             for task in config.eval.multiple_choice.tasks}
  return Evaluations(sets, vocabularies.token_bytes(vocabulary),
                     [p.spec.name for p in data.probes], monitored, choices)


class Meter:
  """Throughput and the logged window of training steps: each step's metrics are kept on device
  until the window is logged, the only place the loop waits for the device (but for the end of a
  profile trace). Tokens are decoder positions (an encoder-decoder's FLOPs are counted per decoder
  token), each phase's rows and length (`TrainData.phases`, research/data/shapes.py) counted at
  its steps; evaluation time does not count against throughput."""

  def __init__(self, config: ml_collections.ConfigDict, trainer: Trainer,
               data: pipeline.TrainData, first_step: int):
    self.starts = [phase.start for phase in data.phases]
    self.tokens_per_step = np.array([phase.batch_size * phase.objective.budgets[-1]
                                     for phase in data.phases])
    self.flops_per_step = self.tokens_per_step * np.array([transformer.flops_per_token(
        trainer.model_config, phase.objective.seq_len, target_len=phase.objective.budgets[-1])
        for phase in data.phases])
    self.peak = peak_flops.peak_flops_per_second(config.model.dtype)
    self.speed = float('nan')  # training tokens per second over the last logged window
    self.pending, self.start, self.clock = [], first_step, time.perf_counter()

  def add(self, step_metrics: dict) -> None:
    self.pending.append(step_metrics)

  def pause(self, seconds: float) -> None:
    self.clock += seconds

  def window(self, done: int) -> tuple[list[dict], dict[str, float]]:
    """(each step's fetched metrics, their window means with the learning rate of the last step,
    throughput, MFU and tokens seen) of the steps since the last window; starts the next one."""
    fetched = jax.device_get(self.pending)
    seconds = time.perf_counter() - self.clock
    steps = shapes.steps_before(self.starts, done) - shapes.steps_before(self.starts, self.start)
    self.speed = float(steps @ self.tokens_per_step) / seconds
    logged = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
    logged.update(learning_rate=float(fetched[-1]['learning_rate']), tokens_per_second=self.speed,
                  mfu=float(steps @ self.flops_per_step) / seconds / self.peak,
                  tokens_seen=int(shapes.steps_before(self.starts, done) @ self.tokens_per_step))
    self.pending, self.start, self.clock = [], done, time.perf_counter()
    return fetched, logged


def train(config: ml_collections.ConfigDict, workdir: str, stop_after: int | None = None,
          devices=None, hparams: dict | None = None) -> TrainState:
  """Trains `config` in `workdir`, resuming from its latest checkpoint; returns the final state.

  `stop_after` ends this call after that many steps (with a checkpoint), as a preemption would:
  calling again continues the same run. `hparams` ({config key: value}, launch/train.py passes the
  command-line overrides) are written to TensorBoard's hparams plugin; None or {} writes none.
  """
  sharding.maybe_initialize_distributed(config.distributed)
  devices = jax.devices() if devices is None else devices
  setup = config_lib.validate(config, workdir, devices)
  config.data.start_id = vocabularies.data_start_id(config.data)  # config.json records it
  pipeline.prepare_stores(config)  # builds small missing stores; refuses large ones, naming them
  with errors.reaching(workdir, f'--workdir={workdir}'):  # a local directory or gs://...
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  trainer = Trainer(config, devices, setup.schedule)
  # However the run ends, orbax's manager, the metrics writers and the progress line are closed,
  # and the console is restored (research/console.py keeps it in WORKDIR/train.log meanwhile).
  with checkpoint.managed(workdir, config.checkpoint) as manager, console.kept(
      workdir, enabled=jax.process_index() == 0), contextlib.ExitStack() as closing:
    return _train(config, workdir, setup, trainer, manager, closing, stop_after, hparams)


def _first_state(config: ml_collections.ConfigDict, workdir: str, trainer: Trainer,
                 manager: checkpoint.ocp.CheckpointManager) -> tuple[TrainState, bool, int | None]:
  """(the state the run goes on from, whether it resumed, the train.steps of the run it resumed):
  the workdir's latest checkpoint, else init.path's, else a fresh initialisation. Then writes the
  config and the code that runs it (research/provenance.py) to the workdir."""
  state = checkpoint.restore_latest(manager, trainer.abstract_state, config)
  resumed = state is not None
  saved = checkpoint.saved_config(workdir) if resumed else None  # before config.json is rewritten
  if state is None:
    state = (state_from_checkpoint(trainer, config.init, config.train.steps) if config.init.path
             else trainer.init_state())
  if jax.process_index() == 0:
    records.write_json(os.path.join(workdir, 'config.json'),
                       {**config.to_dict(), 'code_version': provenance.code_version()})
    if provenance.code_diff():
      (epath.Path(workdir) / provenance.SHIPPED_DIFF).write_text(provenance.code_diff())
  return state, resumed, (saved or {}).get('train', {}).get('steps')


def _start_messages(config: ml_collections.ConfigDict, workdir: str, first_step: int,
                    resumed: bool, ended_at: int | None, data: pipeline.TrainData) -> list[str]:
  """What the progress line says as the run starts: where it starts from, a changed train.steps,
  documents longer than a row."""
  total, init = config.train.steps, config.init
  messages = []
  if resumed:
    messages.append(f'Resuming from the checkpoint at step {first_step} in {workdir}.')
  elif init.path:
    messages.append(f'Starting from the checkpoint in {init.path} ' + ', '.join([
        'parameters and optimizer state' if init.optimizer else 'parameters only',
        *(['grown to this model'] if init.grow else []),
        f'step {init.step}', f'schedule {init.schedule}']) + '.')
  if ended_at not in (None, total):
    messages.append(f'train.steps is {total} now and was {ended_at} in the run being resumed: the '
                    f'learning-rate schedule now ends at step {total}, not {ended_at}.')
  return messages + list(filter(None, [pipeline.long_document_notice(data)]))


def _train(config: ml_collections.ConfigDict, workdir: str, setup: config_lib.Setup,
           trainer: Trainer, manager: checkpoint.ocp.CheckpointManager,
           closing: contextlib.ExitStack, stop_after: int | None, hparams: dict | None
           ) -> TrainState:
  """`train` once the workdir's checkpoint manager is open: the step loop, with its logging,
  evaluations, Skill-it mixture updates and checkpoints; what must be closed at the end goes on
  `closing`."""
  main = jax.process_index() == 0
  state, resumed, ended_at = _first_state(config, workdir, trainer, manager)
  first_step, total = int(state.step), config.train.steps
  last = total if stop_after is None else min(total, first_step + stop_after)
  if first_step >= total:
    if main:
      print(f'The run in {workdir} finished at step {first_step}; nothing to do.', file=sys.stderr)
    return state
  vocabulary, objective, data, mixing = run_data(config, workdir, first_step, main, setup)
  evaluations = make_evaluations(config, data, objective, vocabulary, data.plan.online)
  writer = metrics_lib.MetricsWriter(workdir, enabled=main, hparams=hparams, config=config)
  progress = metrics_lib.Progress(total, first_step, enabled=main)
  closing.callback(writer.close)
  closing.callback(progress.close)
  for message in _start_messages(config, workdir, first_step, resumed, ended_at, data):
    progress.message(message)
  meter = Meter(config, trainer, data, first_step)

  def run_eval(step: int, params) -> dict[str, float]:
    start = time.perf_counter()
    results = evaluations.run(trainer, params)
    writer.write(step, results)
    progress.message(f'eval at step {step}: {metrics_lib.eval_summary(results)}; '
                     f'tokens_per_second={meter.speed:.4g} eta={progress.eta(step)}')
    meter.pause(time.perf_counter() - start)
    return results

  if config.init.path and not resumed:
    run_eval(first_step, state.params)  # a continual run's start: the baseline of forgetting
  divergence = Divergence(config.train)
  trace = ProfileTrace(config.train.profile_steps, os.path.join(workdir, 'profile'), first_step,
                       enabled=main)
  # This process computes only the rows it feeds (`trainer.rows` of a batch of any size).
  batches = data.batches(first_step, last, trainer.rows, config.data.prefetch)
  with preemption.StopSignal() as stop_signal, trace:
    for step in range(first_step, last):
      trace.before_step(step)
      batch = trainer.place(next(batches), data.phase_at(step).batch_size)
      state, step_metrics = trainer.step(state, batch, step_rng(config.seed, step))
      meter.add(step_metrics)
      done = step + 1
      stopping = done < last and stop_signal.should_stop(done)
      trace.after_step(done, state, last=done == last or stopping)
      if done % config.train.log_every == 0 or done == last or stopping:
        fetched, logged = meter.window(done)
        logged.update({f'data/{task}/epochs': e for task, e in data.epochs_before(done).items()})
        logged.update({f'data/{task}/weight': w for task, w in data.mixture_weights(step).items()})
        logged.update(divergence.observe(done - len(fetched), fetched))
        writer.write(done, logged)
        progress.update(done, {k: logged[k] for k in ('loss', 'learning_rate', 'tokens_per_second',
                                                      'mfu')})
        if divergence.stop:  # no checkpoint of this step: the latest one stays the run's last
          checkpoint.wait_until_finished(manager)
          raise errors.UserError(divergence.stop_message(workdir, manager.latest_step()))
      mixes = bool(mixing) and mixing.due(done, total)
      if done % config.eval.every == 0 or done == total or mixes:
        results = run_eval(done, state.params)
        if mixes:
          update = mixing.update(done, results)
          data.set_stages(mixing.stages())
          batches = data.batches(done, last, trainer.rows, config.data.prefetch)  # new mixture
          progress.message(f'Skill-it mixture from step {done}: ' + ' '.join(
              f'{k}={v:.3f}' for k, v in update.weights.items()))
      if stopping:
        progress.message(f'A signal asked the run to stop: saving step {done} (a second Ctrl-C '
                         'stops at once, keeping the last complete checkpoint).')
      checkpoint.save(manager, done, state, config.checkpoint.every, final=done == last or stopping)
      if stopping:
        progress.message(f'Stopped by a signal after step {done}; its checkpoint is in {workdir}. '
                         'Re-run the same command to resume.')
        break
  checkpoint.wait_until_finished(manager)
  return state
