"""Validation of an experiment's ConfigDict before anything compiles.

Every check fails with one ValueError naming the key, the bad value and the fix. The schema is
research/defaults.py: a config must have the same keys with values of the same types, except in
the sub-dicts whose keys are free (the mixture's task names, the mesh rules' logical axes).
`command_line_overrides` reads back the keys a command line set (a run's hyperparameters).
"""

import dataclasses
import os
from collections.abc import Callable

import ml_collections
import seqio

from research import defaults, errors, optimizers, schedules, sharding, wandb_log
from research.data import orderings, pipeline, selection, shapes as shapes_lib, skillit, tasks
from research.data import vocabularies
from research.model import transformer
from research.objectives import distillation, fim, load_balance, losses, permutation, registry



def _type_name(value) -> str:
  return type(value).__name__


def check_schema(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
                 prefix: str = '') -> None:
  """Raises on a key that `reference` lacks, a missing key, or a value of another type."""
  for key in config.keys():
    name = f'{prefix}{key}'
    if key not in reference and name in defaults.MOVED_KEYS:
      raise errors.UserError(defaults.moved_message(name))
    if key not in reference:
      raise errors.UserError(f'Unknown config key {name!r}. Known keys here: {sorted(reference.keys())}; '
                             'fix the spelling or add the key to research/defaults.py.')
    value, expected = config[key], reference[key]
    if isinstance(expected, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise errors.UserError(f'Config key {name!r} must be a ConfigDict, got {value!r}.')
      if name not in defaults.FREE_KEYS:
        check_schema(value, expected, name + '.')
      continue
    if expected is None:
      continue
    ok = (isinstance(value, type(expected)) and not (isinstance(value, bool) and not isinstance(expected, bool))
          or isinstance(expected, float) and isinstance(value, int) and not isinstance(value, bool)
          or isinstance(expected, (tuple, list)) and isinstance(value, (tuple, list)))
    if not ok:
      raise errors.UserError(f'Config key {name!r} must be of type {_type_name(expected)} (like '
                             f'{expected!r}), got {value!r} of type {_type_name(value)}.')
  for key in reference.keys():
    if key not in config:
      raise errors.UserError(f'Config key {prefix}{key!r} is missing; start the experiment from '
                             'experiments/base.get_config() (research/defaults.py).')


def _value(config, name):
  value = config
  for part in name.split('.'):
    value = value[part]
  return value


def _positive(config, *names):
  for name in names:
    value = _value(config, name)
    if value <= 0:
      raise errors.UserError(f'Config key {name!r} must be positive, got {value!r}.')


# What a step with a non-finite loss or gradient does (research/train.py): skip its update, or stop.
NONFINITE_POLICIES = ('skip', 'stop')

# Ranges every numeric key must lie in whatever else is set, as (key, low, high, interval, fix):
# `low`/`high` None = unbounded; `interval` '[]', '[)', '(]' or '()' says which ends are included.
RANGES = (
    ('seed', 0, None, '[)', 'numpy seeds the data order with it; use a non-negative integer'),
    ('model.dropout_rate', 0, 1, '[)', 'use 0.0 (off) or a probability below 1, e.g. 0.1'),
    ('model.norm_eps', 0, None, '()', 'use a small positive value such as 1e-6 or 1e-5'),
    ('model.init_std', 0, None, '()', 'use a small positive value such as 0.02'),
    ('model.rope_base', 0, None, '()', 'use a positive base such as 10000.0'),
    ('train.b1', 0, 1, '[)', "Adam's first-moment decay; use e.g. 0.9"),
    ('train.b2', 0, 1, '[)', "Adam's second-moment decay; use e.g. 0.95 or 0.999"),
    ('train.eps', 0, None, '()', "Adam's denominator term; use a small value such as 1e-8"),
    ('train.weight_decay', 0, None, '[)', 'use 0.0 (off) or a positive coefficient such as 0.1'),
    ('train.grad_clip', 0, None, '[)', 'use 0.0 (no clipping) or a positive norm such as 1.0'),
    ('train.z_loss', 0, None, '[)', 'use 0.0 (off) or a positive coefficient such as 1e-4'),
    ('train.loss_chunk', 0, None, '[)',
     'positions per chunk of the output layer and loss; 0 = the whole sequence at once'),
    ('train.moe_lbl', 0, None, '[)', 'use 0.0 (off) or a positive coefficient such as 1e-2'),
    ('train.moe_z_loss', 0, None, '[)', 'use 0.0 (off) or a positive coefficient such as 1e-3'),
    ('train.max_nonfinite', 1, None, '[)',
     "the consecutive non-finite steps that stop a run with train.nonfinite='stop'; e.g. 1"),
    ('train.galore.rank', 1, None, '[)',
     'the rank GaLore projects gradients to; e.g. 128 (Zhao et al. 2024 use 128 to 512)'),
    ('train.galore.update_proj_gap', 1, None, '[)',
     'the steps between refreshes of the projection; e.g. 200 (Zhao et al. 2024)'),
    ('train.galore.scale', 0, None, '()', "GaLore's update scale alpha; e.g. 0.25"),
    ('init.grow_noise', 0, None, '[)',
     "the copies' noise, a fraction of each parameter's std; e.g. 0.01 (0 = exact growth)"),
    ('train.fira.limiter', 1, None, '[)',
     "Fira's norm-growth limit gamma on its residual term, step to step; e.g. 1.01 (Chen et al. "
     '2024)'),
    ('eval.multiple_choice.examples', 1, None, '[)', 'the questions asked per task; e.g. 64'),
    ('eval.multiple_choice.shots', 0, None, '[)',
     'the validation documents before each question; 0 = none'),
    ('eval.multiple_choice.choices', 2, None, '[)',
     'the candidate answers of a question, the right one among them; e.g. 4'),
)
# Keys that only some switch reads (a schedule, an objective, an ordering): checked after the
# modules that own them, so that a key in use gets its module's message and one not in use still
# fails before a later switch turns it on.
SWITCHED_RANGES = (
    ('schedule.decay_fraction', 0, 1, '(]', 'the decay\'s share of the run (wsd); e.g. 0.2'),
    ('schedule.inv_sqrt_alpha', 0, None, '()', 'e.g. 10.0 (Ibrahim et al. 2024)'),
    ('schedule.cooldown_fraction', 0, 1, '[)', 'a share of the run (infinite); e.g. 0.2'),
    ('schedule.anneal_fraction', 0, 1, '[)', 'a share of the run (infinite); e.g. 0.1'),
    ('schedule.const_lr_fraction', 0, 1, '[]', 'a fraction of schedule.peak_lr; e.g. 0.5'),
    ('schedule.cycle_steps', 0, None, '[)', 'steps per cycle, or 0 for one cycle over the run'),
    ('data.skillit.eta', 0, None, '[)', 'the multiplicative-weights step; e.g. 0.2'),
    ('data.skillit.window', 1, None, '[)', 'the evaluations summed per update; e.g. 3'),
    ('data.skillit.alpha', 0, 1, '(]', "the TD(0) step of SEC's values; e.g. 0.5"),
    ('data.skillit.temperature', 0, None, '()', "SEC's softmax temperature in nats; e.g. 0.05"),
    ('data.order.in_context.ngram', 1, None, '[)', 'the hashed n-gram length; e.g. 3'),
    ('data.order.in_context.dims', 1, None, '[)', 'the embedding size; e.g. 1024'),
    ('data.order.in_context.neighbours', 1, None, '[)', 'the nearest documents searched; e.g. 10'),
    ('data.order.in_context.max_chain', 1, None, '[)', 'the longest chain of documents; e.g. 21'),
    ('objective.masked_thought.max_rate', 0, 1, '[]', 'a probability; e.g. 0.4'),
    ('objective.masked_thought.warmup_fraction', 0, 1, '[]', 'a share of training; e.g. 0.66'),
    ('objective.meco.cooldown_fraction', 0, 1, '[)', 'a share of training; e.g. 0.1'),
    ('objective.control.drop_fraction', 0, 1, '[]', 'a probability; e.g. 0.1'),
    ('objective.fim.rate', 0, 1, '[]', 'a probability; 0.5 in Bavarian et al. 2022'),
    ('objective.fim.spm_rate', 0, 1, '[]', 'a probability; 0.5 in Bavarian et al. 2022'),
    ('objective.permute.rate', 0, 1, '[]', 'a probability: the share of documents rewritten'),
    ('objective.mlm.rate', 0, 1, '(]', 'the share of tokens selected; 0.15 in BERT, 0.3 in '
     'MosaicBERT'),
    ('objective.coverage_n', 1, None, '[)', 'the N of pass@N (objective.loss=coverage); e.g. 4'),
)


def check_ranges(config: ml_collections.ConfigDict, ranges=RANGES) -> None:
  """Raises on a key of `ranges` outside its interval, naming the key, the value and a fix."""
  for name, low, high, interval, fix in ranges:
    value = _value(config, name)
    low_ok = low is None or (value >= low if interval[0] == '[' else value > low)
    high_ok = high is None or (value <= high if interval[1] == ']' else value < high)
    if not (low_ok and high_ok):  # NaN fails both comparisons
      shown = (f'{interval[0]}{low}, {high}{interval[1]}' if high is not None else
               f'{">=" if interval[0] == "[" else ">"} {low}')
      where = 'in ' if high is not None else ''
      raise errors.UserError(f'Config key {name!r} must be {where}{shown}, got {value!r}; {fix}.')


def check_choices(config: ml_collections.ConfigDict) -> None:
  """Raises on a switch outside its choices, even where the active settings do not read it (a typo
  would silently do nothing until the switch that reads it is turned on). Run after the modules
  that own these keys, as SWITCHED_RANGES."""

  for name, choices in (('train.nonfinite', NONFINITE_POLICIES),
                        ('train.optimizer', optimizers.OPTIMIZERS),
                        ('schedule.decay_shape', tuple(schedules.DECAY_SHAPES)),
                        ('data.order.row_score', orderings.ROW_SCORES),
                        ('data.order.pacing.function', orderings.PACING_FUNCTIONS),
                        ('data.select.keep', selection.KEEPS),
                        ('data.select.unit', selection.UNITS),
                        ('data.skillit.metric', skillit.METRICS),
                        ('data.skillit.rule', skillit.RULES),
                        ('objective.fim.level', fim.LEVELS),
                        ('objective.permute.unit', permutation.UNITS),
                        ('objective.permute.order', permutation.ORDERS),
                        ('objective.distill.shape', distillation.SHAPES),
                        ('objective.loss', losses.LOSSES)):
    value = _value(config, name)
    if value not in choices:
      raise errors.UserError(f'Config key {name!r} must be one of {list(choices)}, got {value!r}; '
                             'fix the spelling.')
  if config.data.order.folds < 1:
    raise errors.UserError(f"Config key 'data.order.folds' must be >= 1, got "
                           f'{config.data.order.folds!r}; use the number of folding passes per '
                           'epoch (DELT uses 3).')


def check_distributed(distributed: ml_collections.ConfigDict) -> None:
  """`distributed.num_processes` is -1 (from the environment) or >= 1; `process_id` is -1 or in
  [0, num_processes)."""
  processes, process_id = distributed.num_processes, distributed.process_id
  if processes == 0 or processes < -1:
    raise errors.UserError(f"Config key 'distributed.num_processes' must be -1 or >= 1, got "
                           f'{processes!r}; use -1 to read it from the environment '
                           '(JAX_NUM_PROCESSES) or the number of processes of the job.')
  if process_id < -1 or processes > 0 and process_id >= processes:
    raise errors.UserError(f"Config key 'distributed.process_id' must be -1 or in [0, "
                           f'distributed.num_processes), got {process_id!r} with num_processes='
                           f'{processes}; use -1 to read it from the environment (JAX_PROCESS_ID).')


def check_profile_steps(train_config: ml_collections.ConfigDict) -> None:
  """`train.profile_steps` is () or two step numbers (a, b) with 0 <= a < b <= train.steps."""
  steps, value = train_config.steps, train_config.profile_steps
  if not value:
    return
  ok = (isinstance(value, (tuple, list)) and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 0 <= value[0] < value[1] <= steps)
  if not ok:
    raise errors.UserError(
        f'train.profile_steps={value!r} must be two integers (a, b) with 0 <= a < b <= train.steps '
        f'({steps}): the trace covers steps a to b-1. Use e.g. '
        f'--config.train.profile_steps="({min(10, steps - 1)}, {min(15, steps)})", or () for no '
        'trace.')


def _check_moe(config: ml_collections.ConfigDict, shape: dict[str, int],
               data_parallel: int) -> None:
  """The router-loss switches, and the expert mesh axis against the number of experts."""

  train, experts = config.train, config.model.moe_experts
  if train.moe_balance not in load_balance.SCOPES:
    raise errors.UserError(f'train.moe_balance={train.moe_balance!r} is not a balancing scope; '
                           f'choose one of {list(load_balance.SCOPES)}.')
  rows = train.batch_size // train.micro_batches
  if train.moe_balance_rows < 0 or rows % load_balance.group_rows(train, data_parallel):
    raise errors.UserError(f'train.moe_balance_rows={train.moe_balance_rows} must divide the '
                           f'{rows} rows of a micro-batch (0 = the rows of one data-parallel '
                           'shard).')
  if shape['expert'] > 1 and (not experts or experts % shape['expert']):
    raise errors.UserError(f'mesh.expert={shape["expert"]} splits the experts, so '
                           f'model.moe_experts={experts} must be a positive multiple of it; set '
                           'mesh.expert=1 for a dense model.')


def check_phase_shapes(config: ml_collections.ConfigDict, shapes, data_parallel: int,
                       plan: pipeline.MixturePlan) -> None:
  """What a phase's batch shape (research/data/shapes.py) must fit besides the data-parallel
  size: train.loss_chunk's chunks, the router-loss groups of a mixture-of-experts model and a
  share for replay (pipeline.stream_rows)."""
  chunk = config.train.loss_chunk  # on the decoder's rows, a phase's length unless target_len
  chunk = chunk if config.model.architecture == 'decoder' or not config.objective.target_len else 0
  rows = load_balance.group_rows(config.train, data_parallel)
  for shape in shapes[1:]:
    if chunk and shape.seq_len % chunk:
      raise errors.UserError(f'{shape.key}.seq_len={shape.seq_len} is not a multiple of '
                             f'train.loss_chunk={chunk}; use a multiple of it.')
    if config.model.moe_experts and shape.batch_size // config.train.micro_batches % rows:
      raise errors.UserError(f'{shape.batch_key}={shape.batch_size} must split into router-loss '
                             f'groups of {rows} rows a micro-batch (train.moe_balance_rows); use '
                             'a multiple of them.')
  pipeline.stream_rows(config.data, plan, shapes)


def check_loss_chunk(config: ml_collections.ConfigDict) -> None:
  """train.loss_chunk must divide the length of the targets, and cannot be combined with
  distillation, whose term needs the student's whole logits, or with a loss over segments."""
  chunk = config.train.loss_chunk
  if not chunk:
    return
  length, key = config.data.seq_len, 'data.seq_len'
  if config.model.architecture == 'encoder_decoder' and config.objective.target_len:
    length, key = config.objective.target_len, 'objective.target_len'
  if length % chunk:
    divisors = [d for d in (32, 64, 128) if d < length and length % d == 0] or [1]
    raise errors.UserError(f'train.loss_chunk={chunk} must divide the length of the targets, '
                           f'{key}={length}; use a divisor such as {divisors[0]}, or 0.')
  if config.objective.distill.teacher:
    raise errors.UserError(f'train.loss_chunk={chunk} cannot be used with knowledge distillation '
                           '(objective.distill.teacher is set): the distillation term needs the '
                           "student's whole logits; set train.loss_chunk=0.")
  if config.objective.loss != 'cross_entropy':
    raise errors.UserError(f'train.loss_chunk={chunk} cannot be used with objective.loss='
                           f'{config.objective.loss!r}, a loss over whole segments; set '
                           'train.loss_chunk=0 or objective.loss=cross_entropy.')


def check_multiple_choice(config: ml_collections.ConfigDict) -> None:
  """eval.multiple_choice.tasks are registered tasks, scored by a decoder (their scores are
  left-to-right log-likelihoods); RANGES bounds the other keys. Whether the tasks' documents are a
  prompt and its answer is checked where their stores are read, before training starts
  (research/multiple_choice.choice_set)."""

  names = tuple(config.eval.multiple_choice.tasks)
  for name in names:
    tasks.check_task(name, 'eval.multiple_choice.tasks')
  if names and config.model.architecture != 'decoder':
    raise errors.UserError(f'eval.multiple_choice.tasks={names!r} scores answers by left-to-right '
                           "log-likelihood, which needs a decoder (model.architecture='decoder', "
                           f'not {config.model.architecture!r}); set it to ().')


def check_grow(config: ml_collections.ConfigDict) -> None:
  """init.grow (research/model/growth.py) needs a checkpoint to grow, a fresh optimizer state and
  a dense decoder without muP."""
  init, model = config.init, config.model
  if not init.grow:
    return
  if not init.path:
    raise errors.UserError("init.grow=True grows the checkpoint in init.path, which is ''; set "
                           'init.path or init.grow=False.')
  if init.optimizer:
    raise errors.UserError('init.grow=True starts a fresh optimizer state (the grown units and '
                           'layers have no Adam moments); set init.optimizer=False.')
  if model.architecture != 'decoder' or model.moe_experts:
    raise errors.UserError(f'init.grow=True grows a dense decoder, not model.architecture='
                           f'{model.architecture!r} with model.moe_experts={model.moe_experts}; '
                           "set model.architecture='decoder' and model.moe_experts=0.")
  if model.mup_base_width:
    raise errors.UserError(f'init.grow=True grows a checkpoint into the same function, which muP '
                           f'(model.mup_base_width={model.mup_base_width}) changes with the width '
                           '(its output multiplier); set model.mup_base_width=0.')


@dataclasses.dataclass(frozen=True)
class Setup:
  """What `validate` built to check a config, for training to use rather than build again."""
  schedule: Callable[[int], float]  # the learning rate at each step (research/schedules.py)
  vocabulary: seqio.Vocabulary
  objective: registry.Objective  # packed rows -> model batches (research/objectives/registry.py)
  phases: tuple  # (start step, Objective) of each later objective or shape phase (config.phases)
  plan: pipeline.MixturePlan  # the mixture's tasks, stages and replay (research/data/pipeline.py)
  data_parallel: int  # the devices a batch is split over (mesh axes of mesh.rules.batch)
  shapes: tuple[shapes_lib.Shape, ...]  # the batch's rows and length by phase (data/shapes.py)


def validate(config: ml_collections.ConfigDict, workdir: str, devices) -> Setup:
  """Checks `config` against the schema, the devices and the workdir; raises a UserError naming the
  key. Returns what it built on the way (`Setup`)."""
  check_schema(config, defaults.get_config())
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise errors.UserError(f'--workdir={workdir} is a file, not a directory; pass a directory path '
                           '(it is created if missing).')
  _positive(config, 'train.steps', 'train.batch_size', 'train.micro_batches', 'train.log_every',
            'eval.every', 'eval.batches', 'eval.batch_size', 'checkpoint.every', 'checkpoint.keep',
            'data.seq_len', 'data.mixture_block', 'data.prefetch', 'model.d_model', 'model.num_layers',
            'model.num_heads', 'model.head_dim', 'model.mlp_dim', 'model.vocab_size')

  check_ranges(config)
  check_distributed(config.distributed)
  check_profile_steps(config.train)
  for key, choices in (('step', ('reset', 'keep')), ('schedule', ('restart', 'continue'))):
    if config.init[key] not in choices:
      raise errors.UserError(f'init.{key}={config.init[key]!r} is not one of {choices}.')
  check_grow(config)

  model_config = transformer.ModelConfig.from_config(config.model)  # names a bad model.* switch
  if config.model.dtype not in transformer.DTYPES:
    raise errors.UserError(f'model.dtype={config.model.dtype!r} is not supported; choose one of '
                           f'{sorted(transformer.DTYPES)}.')
  if config.model.remat not in transformer.REMAT_POLICIES:
    raise errors.UserError(f'model.remat={config.model.remat!r} is not a remat policy; choose one of '
                           f'{sorted(transformer.REMAT_POLICIES)}.')
  if config.model.head_dim % 2:
    raise errors.UserError(f'model.head_dim={config.model.head_dim} must be even for rotary embeddings.')
  schedule = schedules.make_run_schedule(config.schedule, config.phases, config.train.steps)
  # Names an optimizer that does not compose with muP (model.mup_base_width).
  optimizers.make_optimizer(config.train, schedule, model_config.mup_multiplier)

  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  if config.model.vocab_size < vocabulary.vocab_size:
    raise errors.UserError(f'model.vocab_size={config.model.vocab_size} is smaller than the vocabulary '
                           f'{config.data.vocabulary!r} ({vocabulary.vocab_size} tokens); set it to at least '
                           f'{vocabulary.vocab_size} (a multiple of 128 is fastest).')
  plan = pipeline.mixture_plan(config.data, config.train.batch_size, config.train.steps)
  for name in config.eval.tasks:
    tasks.check_task(name, 'eval.tasks')
  if config.model.num_encoder_layers < 0:
    raise errors.UserError(f'model.num_encoder_layers={config.model.num_encoder_layers} must be >= '
                           '0 (0 = model.num_layers).')
  (_, objective), *phases = registry.objective_phases(config, vocabulary)
  registry.eval_objectives(objective, config.eval.objectives, vocabulary,
                           phases[-1][1] if phases else objective)
  check_loss_chunk(config)
  distillation.check_config(config)
  wandb_log.check_config(config.logging.wandb)

  shape = dict(zip(sharding.MESH_AXES, sharding.mesh_shape(config.mesh, len(devices))))
  rules = sharding.logical_rules(config.mesh)
  data_parallel = sharding.data_parallel_size(shape, rules)
  micro = config.train.micro_batches
  shapes = shapes_lib.shape_phases(config)
  for batch in shapes:
    if batch.batch_size % (micro * data_parallel):
      raise errors.UserError(
          f'{batch.batch_key}={batch.batch_size} must be divisible by train.micro_batches '
          f'({micro}) times the data-parallel size ({data_parallel} = mesh axes '
          f'{sharding.batch_axes(rules)} of mesh.rules.batch); use a multiple of '
          f'{micro * data_parallel}.')
  _check_moe(config, shape, data_parallel)
  check_phase_shapes(config, shapes, data_parallel, plan)
  check_ranges(config, SWITCHED_RANGES)  # after the modules: a key in use has their message
  check_choices(config)
  rows = config.eval.pathway_rows
  if rows and (rows < 2 or not config.model.moe_experts):
    raise errors.UserError(f'eval.pathway_rows={rows}: the pathway monitor compares the expert '
                           'pathways of at least 2 rows of a mixture-of-experts model '
                           f'(model.moe_experts={config.model.moe_experts}); set it to 0 (off) '
                           'or to 2 or more with model.moe_experts > 0.')
  check_multiple_choice(config)
  if config.eval.batch_size % data_parallel:
    raise errors.UserError(f'eval.batch_size={config.eval.batch_size} must be divisible by the '
                           f'data-parallel size {data_parallel}; use a multiple of it.')
  return Setup(schedule, vocabulary, objective, tuple(phases), plan, data_parallel, shapes)


def command_line_overrides(argv: list[str], config: ml_collections.ConfigDict) -> dict:
  """{key: resolved value} for every `--config.KEY=VALUE` (or `--config.KEY VALUE`) in `argv`.

  A run's command-line overrides are its hyperparameters (research/train.py writes them to
  TensorBoard); a sweep (launch/sweep.py) passes each point's values this way.
  """
  hparams = {}
  for arg in argv[1:]:
    if arg == '--':  # absl stops parsing flags here
      break
    flag = arg.lstrip('-').split('=', 1)[0]
    for prefix in ('config.', 'noconfig.'):  # --noconfig.KEY sets a boolean key to False
      if arg.startswith('-') and flag.startswith(prefix):
        key = flag[len(prefix):]
        value = config
        for part in key.split('.'):
          value = value[part]
        hparams[key] = value
  return hparams
