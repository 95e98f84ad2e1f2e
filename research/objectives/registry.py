"""Objectives by name: how the packed rows of a task become the model's examples.

`config.objective.name` picks the objective and `config.model.architecture` the model, separately:

- causal_lm (and masked_thought, meco, control_tokens, fim, permute, which transform its documents
  or inputs):
  next-token prediction over packed rows (research/objectives/causal_lm.py); decoder only;
- mlm: BERT's masked LM on an encoder-only model, the decoder stack attending bidirectionally within
  each packed segment, loss on the selected tokens (research/objectives/masked_lm.py);
- prefix_lm, span_corruption, ul2, ul2r (or any list in `objective.denoisers`): each segment (a
  document, or a chunk of a long one) of a packed row is denoised on its own by a denoiser drawn
  from the mixture (research/objectives/denoising.py), and laid out for the model:
    decoder:          one segment `[mode] inputs targets`, bidirectional over the mode token and
                      inputs (`prefix`, plus the first target position, which reads the last input),
                      causal after, loss on the targets only (the prefix-LM decoder of UL2 and of
                      t5's `pack_prefix_lm_decoder_only`);
    encoder_decoder:  `[mode] inputs` into the encoder row and `targets` into the decoder row,
                      segment k in both, so packed examples never see each other.

In every layout a decoder segment's first position reads the start id (`Objective.start_id`,
research/data/vocabularies.start_id: the vocabulary's BOS, else 0).

Rows are packed so every denoiser's output fits: packing charges each segment the most tokens any
denoiser of the mixture can turn it into (`Objective.costs`), per row (decoder: data.seq_len) or per
encoder and decoder row (data.seq_len and objective.target_len). Documents are never cut shorter
than `chunk_len`, the longest segment whose outputs fit a row.

The denoiser of each segment and its noise are drawn from a generator seeded by (seed, example id),
the example id being unique per training example (step * batch + row), so a batch is a pure function
of the step and a resumed run sees exactly the examples of an uninterrupted one.
"""

import copy
import dataclasses

import ml_collections
import numpy as np
import seqio

from research import defaults, errors, schedules
from research.data import packing, shapes as shapes_lib, vocabularies
from research.objectives import causal_lm, control_tokens, denoising, documents, fim
from research.objectives import masked_lm, masked_thought, metadata, permutation

CAUSAL = ('causal_lm', 'masked_thought', 'meco', 'control_tokens', 'fim', 'permute')
MASKED_LM = 'mlm'
DENOISING = tuple(denoising.PRESETS)
OBJECTIVES = CAUSAL + (MASKED_LM,) + DENOISING
_EXAMPLE_STREAM = 0x6e6f6973  # seeded-stream tag of the per-example denoising choices


def _segment_bounds(segment_ids_R: np.ndarray) -> list[tuple[int, int]]:
  """[start, end) of each segment (> 0) of a packed row, in order."""
  real = segment_ids_R > 0
  change = np.flatnonzero(np.diff(np.concatenate([[0], segment_ids_R])) != 0)
  ends = np.append(change[1:], len(segment_ids_R))
  return [(int(s), int(e)) for s, e in zip(change, ends) if real[s]]


def decoder_row(pairs, seq_len: int, start_id: int = 0) -> dict[str, np.ndarray]:
  """Packs (inputs, targets) pairs into one prefix-LM decoder row of `seq_len` positions, each
  segment's first position reading `start_id`."""
  row = {k: np.zeros(seq_len, np.int32) for k in ('inputs', 'targets', 'segment_ids', 'positions')}
  row['prefix'] = np.zeros(seq_len, bool)
  row['weights'] = np.zeros(seq_len, np.float32)
  at = 0
  for segment, (inputs, targets) in enumerate(pairs, 1):
    sequence = np.concatenate([inputs, targets])
    n, p = len(sequence), len(inputs)
    row['targets'][at:at + n] = sequence
    row['inputs'][at:at + n] = np.concatenate([[start_id], sequence])[:n]
    row['segment_ids'][at:at + n] = segment
    row['positions'][at:at + n] = np.arange(n)
    row['prefix'][at:at + min(p + 1, n)] = True
    row['weights'][at + p:at + n] = 1.0
    at += n
  return row


def encoder_decoder_row(pairs, input_len: int, target_len: int,
                        start_id: int = 0) -> dict[str, np.ndarray]:
  """Packs (inputs, targets) pairs into an encoder row and a decoder row with shared segments, each
  decoder segment's first position reading `start_id`."""
  row = {k: np.zeros(input_len, np.int32)
         for k in ('encoder_inputs', 'encoder_segment_ids', 'encoder_positions')}
  row.update({k: np.zeros(target_len, np.int32)
              for k in ('inputs', 'targets', 'segment_ids', 'positions')})
  row['weights'] = np.zeros(target_len, np.float32)
  at_input = at_target = 0
  for segment, (inputs, targets) in enumerate(pairs, 1):
    n, m = len(inputs), len(targets)
    row['encoder_inputs'][at_input:at_input + n] = inputs
    row['encoder_segment_ids'][at_input:at_input + n] = segment
    row['encoder_positions'][at_input:at_input + n] = np.arange(n)
    row['targets'][at_target:at_target + m] = targets
    row['inputs'][at_target:at_target + m] = np.concatenate([[start_id], targets])[:m]
    row['segment_ids'][at_target:at_target + m] = segment
    row['positions'][at_target:at_target + m] = np.arange(m)
    row['weights'][at_target:at_target + m] = 1.0
    at_input, at_target = at_input + n, at_target + m
  return row


@dataclasses.dataclass(frozen=True)
class Objective:
  """A checked objective: its denoisers (if any), the model layout, and the reserved token ids."""
  name: str
  architecture: str
  seq_len: int  # decoder row, or encoder row for encoder_decoder
  target_len: int  # decoder row of encoder_decoder
  denoisers: tuple[denoising.Denoiser, ...] = ()
  rates: tuple[float, ...] = ()
  mode_ids: tuple[tuple[str, int], ...] = ()  # mode token name -> id, empty without mode tokens
  sentinel_ids: tuple[int, ...] = ()
  # decoder: a bidirectional prefix; False reads it causally (objective.prefix_attention, as
  # CodeGen2 trains, and every format a causally trained model is evaluated on)
  prefix_attention: bool = True
  masking: masked_thought.MaskedThought | None = None  # Masked Thought on the inputs
  mlm: masked_lm.MaskedLM | None = None  # masked LM, bidirectional (kept by evaluation)
  start_id: int = 0  # what each segment's first decoder position reads (vocabularies.start_id)
  rewrite: (documents.Meco | documents.ControlTokens | documents.Fim | documents.Permute
            | None) = None  # before packing

  @property
  def denoising(self) -> bool:
    return bool(self.denoisers)

  @property
  def budgets(self) -> tuple[int, ...]:
    """The token budget of each row a packed example fills: (decoder,) or (encoder, decoder)."""
    if self.architecture == 'encoder_decoder':
      return (self.seq_len, self.target_len)
    return (self.seq_len,)

  @property
  def row_len(self) -> int:
    """The most raw tokens a packed row can hold."""
    return sum(self.budgets)

  def costs(self, lengths: np.ndarray) -> np.ndarray:
    """[P, len(budgets)]: the most tokens of each row a segment of each length can turn into."""
    lengths = np.asarray(lengths, np.int64)
    if not self.denoising:
      return lengths[:, None]
    mode_tokens = bool(self.mode_ids)
    if self.architecture == 'encoder_decoder':
      outputs = [denoising.output_lengths(d, lengths, mode_tokens) for d in self.denoisers]
      return np.stack([np.max([i for i, _ in outputs], axis=0),
                       np.max([t for _, t in outputs], axis=0)], axis=1)
    return np.max([denoising.sequence_length(d, lengths, mode_tokens) for d in self.denoisers],
                  axis=0)[:, None]

  @property
  def chunk_len(self) -> int:
    """The longest segment whose outputs fit a row: longer documents are cut into such chunks."""
    budgets = np.array(self.budgets)
    return denoising.max_raw_length(lambda n: np.all(self.costs(n) <= budgets, axis=1),
                                    self.row_len)

  def pack(self, store, seed: int, order_D: np.ndarray | None = None,
           num_rows: int | None = None) -> dict[str, np.ndarray]:
    """Every document of `store` packed into rows this objective's examples are made from
    (research/data/packing.py), visited in `order_D` (default: a permutation seeded by `seed`);
    with `num_rows`, only the first that many rows."""
    return packing.pack_documents(store, self.row_len, seed, self.chunk_len, self.costs,
                                  self.budgets, order_D, num_rows)

  def denoise(self, tokens: np.ndarray, rng: np.random.Generator):
    """(inputs, targets, record) of one segment: a denoiser drawn from the mixture, its noise.

    The record is {denoiser, mean_span, rate, noise (the mask over `tokens`, as 0/1)}.
    """
    denoiser = self.denoisers[denoising.choose(np.array(self.rates), rng)]
    inputs, targets, mask = denoising.denoise(tokens, denoiser, rng,
                                              np.array(self.sentinel_ids, np.int64),
                                              dict(self.mode_ids).get(denoiser.mode))
    return inputs, targets, {'denoiser': denoiser.name, 'mean_span': denoiser.mean_span,
                             'rate': denoiser.rate, 'noise': mask.astype(int).tolist()}

  def examples(self, rows: dict[str, np.ndarray], example_ids: np.ndarray, seed: int,
               step: int = 0, with_noise: bool = False):
    """The model batch of packed `rows` (targets, segment_ids: [B, row_len]; optional weights)
    read at training step `step`.

    With `with_noise`, also returns per row the list of its segments' {denoiser, mean_span, rate,
    noise (the mask over the segment's original tokens)}.
    """
    if not self.denoising:
      batch = {k: rows[k][:, :self.seq_len] for k in ('targets', 'segment_ids', 'positions')}
      batch['inputs'] = causal_lm.causal_lm_example(batch['targets'], batch['segment_ids'],
                                                    self.start_id)
      batch['weights'] = rows.get('weights', (batch['segment_ids'] > 0).astype(np.float32))
      if self.masking is not None:
        batch = self.masking.apply(batch, step, seed, example_ids)
      if self.mlm is not None:
        batch = self.mlm.apply(batch, seed, example_ids)
      return (batch, [[] for _ in example_ids]) if with_noise else batch
    out_rows, noise = [], []
    for targets_R, segments_R, example_id in zip(rows['targets'], rows['segment_ids'],
                                                 example_ids.tolist()):
      rng = np.random.default_rng([_EXAMPLE_STREAM, seed, example_id])
      pairs, row_noise = [], []
      for start, end in _segment_bounds(segments_R):
        inputs, targets, record = self.denoise(targets_R[start:end], rng)
        pairs.append((inputs, targets))
        row_noise.append(record)
      if self.architecture == 'encoder_decoder':
        out_rows.append(encoder_decoder_row(pairs, self.seq_len, self.target_len, self.start_id))
      else:
        out_rows.append(decoder_row(pairs, self.seq_len, self.start_id))
        if not self.prefix_attention:
          del out_rows[-1]['prefix']
      noise.append(row_noise)
    batch = {k: np.stack([r[k] for r in out_rows]) for k in out_rows[0]}
    return (batch, noise) if with_noise else batch


def causal_objective(seq_len: int, start_id: int = 0) -> Objective:
  """Causal LM on a decoder over rows of `seq_len` tokens (the default objective), each segment
  starting from `start_id`."""
  return Objective('causal_lm', 'decoder', seq_len, seq_len, start_id=start_id)


def _check_layout(config: ml_collections.ConfigDict) -> tuple[str, int]:
  architecture = config.model.architecture
  if architecture not in ('decoder', 'encoder_decoder'):
    raise errors.UserError(f"model.architecture={architecture!r} is not an architecture; choose "
                           "'decoder' or 'encoder_decoder'.")
  target_len = config.objective.target_len or config.data.seq_len
  if target_len < 0:
    raise errors.UserError(f'objective.target_len={target_len} must be >= 0 (0 = data.seq_len).')
  return architecture, target_len


def make_objective(config: ml_collections.ConfigDict, vocabulary: seqio.Vocabulary) -> Objective:
  """The objective `config.objective` names, checked against the model and the vocabulary."""
  name = config.objective.name
  if name not in OBJECTIVES:
    raise errors.UserError(f'objective.name={name!r} is not an objective; choose one of '
                           f'{list(OBJECTIVES)}.')
  architecture, target_len = _check_layout(config)
  start_id = vocabularies.start_id(vocabulary, config.data.start_id)
  if name == MASKED_LM:
    if architecture != 'decoder':
      raise errors.UserError("objective.name='mlm' trains an encoder-only model: the decoder stack "
                             "read bidirectionally; set model.architecture='decoder'.")
    masked_lm.check_config(config)
    settings = config.objective.mlm
    random_ids = np.flatnonzero(vocabularies.token_bytes(vocabulary) > 0)
    mlm = masked_lm.MaskedLM(settings.rate, settings.mask, settings.random,
                             vocabularies.control_token_id(vocabulary, '[MASK]'),
                             tuple(random_ids.tolist()))
    return dataclasses.replace(causal_objective(config.data.seq_len, start_id), name=name, mlm=mlm)
  if name in CAUSAL:
    if architecture != 'decoder':
      raise errors.UserError(f'objective.name={name!r} trains a decoder; set model.architecture='
                             "'decoder', or use a denoising objective (prefix_lm, ul2, ...) with "
                             'the encoder_decoder.')
    if config.objective.denoisers or config.objective.rates:
      raise errors.UserError(f'objective.denoisers and objective.rates apply to denoising '
                             f'objectives {list(DENOISING)}, not objective.name={name!r}.')
    return dataclasses.replace(causal_objective(config.data.seq_len, start_id), name=name,
                               **_causal_variant(config, vocabulary))
  if not config.objective.prefix_attention and architecture != 'decoder':
    raise errors.UserError('objective.prefix_attention=False (causal attention over the inputs) '
                           "applies to model.architecture='decoder'; an encoder reads its inputs "
                           'bidirectionally. Set it True or train a decoder.')
  objective = denoising_objective(name, architecture, config.data.seq_len, target_len,
                                  config.objective.denoisers, config.objective.rates,
                                  config.objective.mode_tokens, vocabulary, start_id)
  return dataclasses.replace(objective, prefix_attention=config.objective.prefix_attention)


# What a whole run shares, set once in objective.* (the train step's loss and teacher, the decoder
# row of an encoder-decoder): a phase cannot change them.
RUN_WIDE = ('loss', 'coverage_n', 'distill', 'target_len')


# objective.* keys whose ConfigDicts take any names (objective.denoisers, .rates)
FREE = {key.split('.', 1)[1] for key in defaults.FREE_KEYS if key.startswith('objective.')}


def _unknown_keys(changes: dict, section: ml_collections.ConfigDict, prefix: str) -> list[str]:
  """The dotted keys of `changes` that `section` (config key `prefix`) does not have."""
  unknown = []
  for name, value in changes.items():
    if name not in section:
      unknown.append(f'{prefix}.{name}')
    elif isinstance(value, dict) and name not in FREE:
      unknown += _unknown_keys(value, section[name], f'{prefix}.{name}')
  return unknown


def objective_phases(config: ml_collections.ConfigDict,
                     vocabulary: seqio.Vocabulary) -> tuple[tuple[int, Objective], ...]:
  """(start step, objective) of each objective of run `config`, by start: `objective.*` from step
  0 (the run's objective, whose rows are data.seq_len long), then one from each start of a phase
  that changes the objective or the shape (research/schedules.phase_changes): the objective of the
  last phase to change it (`config.phases.NAME.objective`: the run's objective keys with the
  phase's changes merged in), on rows of the length of the last phase to change the shape
  (`phases.NAME.seq_len`, research/data/shapes.py; a phase from step 0 follows the run's own).

  Switching the objective mid-run is cross-adaptation (causal -> prefix/span denoising and back;
  Wang et al. 2022, "What Language Model Architecture and Pretraining Objective Work Best for
  Zero-Shot Generalization?", arXiv 2204.05832) and the objective curriculum of CLIMB (Martinez et
  al. 2023, "CLIMB: Curriculum Learning for Infant-inspired Model Building", arXiv 2311.08886).
  """
  # (start, config, objective at data.seq_len) of the run and of each phase that changes it
  objectives = [(0, config, make_objective(config, vocabulary))]
  for start, key, changes in schedules.phase_changes(config.phases, 'objective',
                                                     config.train.steps):
    fixed = sorted(set(changes) & set(RUN_WIDE))
    if fixed:
      raise errors.UserError(f'{key}.objective sets {fixed}, which hold for the whole run; set '
                             f'them in objective.* (a phase changes the other objective.* keys).')
    unknown = _unknown_keys(changes, config.objective, 'objective')
    if unknown:
      raise errors.UserError(f'{key}.objective sets {unknown}, which are not objective.* keys; '
                             f'choose from {sorted(set(config.objective.keys()) - set(RUN_WIDE))}.')
    phase_config = copy.deepcopy(config)
    for free in FREE & set(changes):  # replaced whole: name -> ConfigDict, like objective.*
      phase_config.objective[free] = ml_collections.ConfigDict(changes.pop(free))
    try:
      phase_config.objective.update(changes)
    except TypeError as error:
      raise errors.UserError(f'{key}.objective: {error}') from error
    try:
      objectives.append((start, phase_config, make_objective(phase_config, vocabulary)))
    except errors.UserError as error:
      raise errors.UserError(f'{key}.objective: {error}') from error
  shapes = shapes_lib.shape_phases(config)
  phases = [(0, objectives[0][2])]
  for start in sorted({o[0] for o in objectives[1:]} | {s.start for s in shapes[1:]}):
    _, phase_config, objective = [o for o in objectives if o[0] <= start][-1]
    shape = shapes_lib.shape_at(shapes, start)
    if shape.seq_len != config.data.seq_len:
      phase_config = copy.deepcopy(phase_config)
      phase_config.data.seq_len = shape.seq_len
      try:
        objective = make_objective(phase_config, vocabulary)
      except errors.UserError as error:
        raise errors.UserError(f'{shape.key}.seq_len={shape.seq_len}: {error}') from error
    phases.append((start, objective))
  return tuple(phases)


def bidirectional_prompt(config: ml_collections.ConfigDict) -> bool:
  """Whether the decoder of run `config` reads a prompt bidirectionally, as it was trained at its
  last step: on a denoising objective (or MLM) with a bidirectional prefix
  (`objective.prefix_attention`), after any objective phase."""
  phases = schedules.phase_changes(config.phases, 'objective', config.train.steps)
  last = {**config.objective.to_dict(), **(phases[-1][2] if phases else {})}
  return (config.model.architecture == 'decoder' and last['name'] not in CAUSAL
          and last['prefix_attention'])


def _causal_variant(config: ml_collections.ConfigDict, vocabulary: seqio.Vocabulary) -> dict:
  """The Objective fields of the causal objectives that transform documents or inputs."""
  name, steps = config.objective.name, config.train.steps
  if name == 'masked_thought':
    masked_thought.check_config(config)
    settings = config.objective.masked_thought
    return {'masking': masked_thought.MaskedThought(
        settings.max_rate, settings.warmup_fraction, tuple(vocabulary.encode(settings.delimiter)),
        vocabularies.control_token_id(vocabulary, '[MASK]'), steps)}
  if name == 'meco':
    metadata.check_config(config)
    settings = config.objective.meco
    return {'rewrite': documents.Meco(settings.prefix, settings.suffix,
                                      settings.cooldown_fraction, steps)}
  if name == 'control_tokens':
    control_tokens.check_config(config)
    settings = config.objective.control
    for token in control_tokens.BANNED_AT_GENERATION:
      vocabularies.control_token_id(vocabulary, token)  # enough extra ids, or a clear error
    return {'rewrite': documents.ControlTokens(settings.scorer, settings.threshold,
                                               settings.drop_fraction)}
  if name == 'fim':
    fim.check_config(config)
    settings = config.objective.fim
    for token in fim.SENTINELS:
      vocabularies.control_token_id(vocabulary, token)  # enough extra ids, or a clear error
    return {'rewrite': documents.Fim(settings.rate, settings.spm_rate, settings.level)}
  if name == 'permute':
    permutation.check_config(config)
    settings = config.objective.permute
    return {'rewrite': documents.Permute(settings.rate, settings.unit, settings.order,
                                         settings.alternate)}
  return {}


def denoising_objective(name: str, architecture: str, seq_len: int, target_len: int,
                        denoisers_config, rates_config, mode_tokens: bool,
                        vocabulary: seqio.Vocabulary, start_id: int = 0) -> Objective:
  """The denoising objective `name` (a preset, or `denoisers_config`) for rows of these lengths,
  each decoder segment starting from `start_id`."""
  denoisers, rates = denoising.mixture_from_config(name, denoisers_config, rates_config)
  return _denoising_objective(Objective(name, architecture, seq_len, target_len, start_id=start_id),
                              denoisers, rates, mode_tokens, vocabulary)


def _denoising_objective(objective: Objective, denoisers, rates, mode_tokens: bool,
                         vocabulary: seqio.Vocabulary) -> Objective:
  mode_ids = tuple((d.mode, vocabularies.control_token_id(vocabulary, d.mode))
                   for d in denoisers if mode_tokens and d.mode)
  sentinel_ids = tuple(vocabularies.sentinel_id(vocabulary, k)
                       for k in range(vocabularies.num_sentinels(vocabulary)))
  objective = dataclasses.replace(objective, denoisers=tuple(denoisers), rates=tuple(rates),
                                  mode_ids=tuple(dict(mode_ids).items()),
                                  sentinel_ids=sentinel_ids)
  chunk_len = objective.chunk_len
  if chunk_len < 2:
    raise errors.UserError(f'data.seq_len={objective.seq_len} (and objective.target_len='
                           f'{objective.target_len}) leave no room for the denoisers '
                           f'{[d.name for d in denoisers]}; raise them.')
  _, spans = denoising.span_counts(chunk_len, np.array([d.rate for d in denoisers]),
                                   np.array([max(d.mean_span, 1) for d in denoisers]))
  needed = max([int(k) for k, d in zip(spans, denoisers) if not d.prefix], default=0)
  if needed > len(sentinel_ids):
    raise errors.UserError(
        f'data.extra_ids={vocabulary.extra_ids} gives {len(sentinel_ids)} sentinels, but the '
        f'denoisers need up to {needed} on segments of {chunk_len} tokens; set data.extra_ids to '
        f'at least {needed + len(vocabularies.CONTROL_TOKENS)}.')
  return objective


def eval_objectives(objective: Objective, names, vocabulary: seqio.Vocabulary,
                    reader: Objective | None = None) -> dict[str, Objective]:
  """The example formats a run evaluates, by metric name: '' (the training objective itself),
  each denoiser of a mixture of several, and `names` (config eval.objectives).

  'causal_lm' is left-to-right over packed rows (decoder models); a denoiser name (of the
  objective's own or of `denoising.DENOISERS`) evaluates that denoiser alone, read as the `reader`
  objective trains (default `objective`; a run whose objective phases switch it passes its last
  phase's): a model trained causally (a causal objective, or objective.prefix_attention=False)
  reads every format causally (no bidirectional prefix); one trained on a causal objective reads
  them with mode tokens.
  """
  reader = reader or objective
  own = {d.name: d for d in objective.denoisers}
  formats = {'': dataclasses.replace(objective, masking=None, rewrite=None)}
  for name in (list(own) if len(own) > 1 else []) + list(names):
    if name == 'causal_lm':
      if objective.architecture != 'decoder':
        raise errors.UserError("eval.objectives: 'causal_lm' needs model.architecture='decoder'.")
      formats[name] = causal_objective(objective.seq_len, objective.start_id)
      continue
    denoiser = own.get(name, denoising.DENOISERS.get(name))
    if denoiser is None:
      raise errors.UserError(f"eval.objectives: {name!r} is neither 'causal_lm' nor a denoiser; "
                             f'choose from {sorted(set(own) | set(denoising.DENOISERS))}.')
    base = dataclasses.replace(objective, name=name,
                               prefix_attention=reader.denoising and reader.prefix_attention)
    mode_tokens = bool(reader.mode_ids) or not reader.denoising
    formats[name] = _denoising_objective(base, [denoiser], [1.0], mode_tokens, vocabulary)
  return formats
