"""Token-level knowledge distillation loss on device: KL from a teacher's softened distribution.

Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531. At every
weighted token the student matches the teacher's next-token distribution softened by temperature
T: T^2 * KL(softmax(teacher / T) || softmax(student / T)). The T^2 factor keeps the gradient's
scale independent of T (the softened gradient shrinks as 1 / T^2), so the term can be mixed with
the cross-entropy at a fixed `weight` whatever the temperature.

Like research/objectives/losses.py, the loss is a weighted *sum* with the total weight beside it,
so gradient accumulation and data-parallel shards combine exactly and the mean is taken once.

The weight can end early (`objective.distill.until`): SALT (Rawat et al. 2024, "A Little Help
Goes a Long Way: Efficient LLM Training by Leveraging Small LMs", arXiv 2410.18779) distills a
large student from a small teacher only in the early phase of training, where the small model
still knows more, and trains on the data alone after it; the transition is abrupt
(`shape='constant'`) or the weight decays linearly to 0 by `until` (`shape='linear'`). Past
`until` the step skips the teacher's forward pass (`weight_at` is 0 there).

Hidden-state matching (`hidden_weight`): Lee et al. 2022, "Self-Distillation for Further
Pre-training of Transformers" (arXiv 2210.02871), further pretrain a model on the target domain,
then distill it into a copy of the original while that copy is further pretrained, matching
their final hidden states by a squared error. Here the term is `hidden_weight` times the mean
squared difference of the final norm's outputs per weighted token (`hidden_sums`), on top of the
loss above, while distillation is on (`active_at`); teacher and student need the same d_model. The
paper's recipe is `teacher`=the further-pretrained run, `init.path`=the original, `weight`=0.

Logit swap (`swap`): Mix-CPT (Jiang et al. 2024, "Mix-CPT: A Domain Adaptation Framework via
Decoupling Knowledge Learning and Format Alignment", arXiv 2407.10804) continues pretraining a
model with itself (its starting checkpoint) as the teacher, to limit forgetting, and corrects the
teacher where it is wrong: at every token the teacher's logit of the target and its largest logit
are exchanged (`swap_logits`), so the target ranks first and the rest of the teacher's
distribution is kept. Self-distillation is `teacher` = the run `init.path` starts from.
"""

import jax
import jax.numpy as jnp
import ml_collections

from research import errors, finished, runs

SHAPES = ('constant', 'linear')  # objective.distill.shape: the weight's course up to `until`


def until_step(settings: ml_collections.ConfigDict, total_steps: int) -> int:
  """The step at which distillation ends: `settings.until` of `total_steps` when it is a fraction
  in (0, 1), that step when it is 1 or more; 0 (never: distillation throughout) when it is 0."""
  until = settings.until
  return round(until * total_steps) if 0 < until < 1 else int(until)


def active_at(settings: ml_collections.ConfigDict, step, total_steps: int):
  """Whether distillation is on at `step`: throughout when `until` is 0, else before `until_step`."""
  end = until_step(settings, total_steps)
  return jnp.asarray(True) if not end else jnp.asarray(step) < end


def weight_at(settings: ml_collections.ConfigDict, step, total_steps: int):
  """The distillation weight at `step` (an int or a traced int): `settings.weight` throughout when
  `until` is 0; else, before the `until_step` E, the weight (shape 'constant') or the weight times
  1 - step / E (shape 'linear'), and 0 from E on."""
  end = until_step(settings, total_steps)
  if not end:
    return jnp.float32(settings.weight)
  step = jnp.asarray(step, jnp.float32)
  course = 1.0 if settings.shape == 'constant' else 1.0 - step / end
  return jnp.where(step < end, settings.weight * course, 0.0).astype(jnp.float32)


def swap_logits(logits_BLV, targets_BL):
  """`logits_BLV` with each position's target logit and its largest logit exchanged (Mix-CPT's
  logit swap): the target becomes the most likely token, every other probability is kept, and a
  position whose largest logit is the target's is unchanged."""
  vocabulary_V = jnp.arange(logits_BLV.shape[-1])
  top_BL1 = jnp.argmax(logits_BLV, axis=-1)[..., None]
  top_value_BL1 = jnp.max(logits_BLV, axis=-1, keepdims=True)
  target_BL1 = targets_BL[..., None]
  target_value_BL1 = jnp.take_along_axis(logits_BLV, target_BL1, axis=-1)
  swapped_BLV = jnp.where(vocabulary_V == target_BL1, top_value_BL1, logits_BLV)
  return jnp.where(vocabulary_V == top_BL1, target_value_BL1, swapped_BLV)


def distillation_sums(student_logits_BLV, teacher_logits_BLV, weights_BL, temperature: float,
                      swap_targets_BL=None):
  """Weighted sum of T^2 * KL(teacher || student) over tokens, and the total weight; with
  `swap_targets_BL`, the teacher's logits are those of `swap_logits` for these targets.

  Logits are taken in float32; the teacher is under stop_gradient, so only the student learns.
  Returns a dict of scalars: `kl_sum` (what is differentiated) and `weight_sum`.
  """
  weights_BL = weights_BL.astype(jnp.float32)
  student_BLV = student_logits_BLV.astype(jnp.float32) / temperature
  teacher_BLV = jax.lax.stop_gradient(teacher_logits_BLV.astype(jnp.float32))
  if swap_targets_BL is not None:
    teacher_BLV = swap_logits(teacher_BLV, swap_targets_BL)
  teacher_BLV = teacher_BLV / temperature
  log_student_BLV = jax.nn.log_softmax(student_BLV, axis=-1)
  log_teacher_BLV = jax.nn.log_softmax(teacher_BLV, axis=-1)
  kl_BL = jnp.sum(jnp.exp(log_teacher_BLV) * (log_teacher_BLV - log_student_BLV), axis=-1)
  return {
      'kl_sum': temperature**2 * jnp.sum(kl_BL * weights_BL),
      'weight_sum': jnp.sum(weights_BL),
  }


def hidden_sums(student_x_BLD, teacher_x_BLD, weights_BL):
  """Weighted sum over tokens of the mean squared difference between the student's and the
  teacher's hidden states (float32; the teacher under stop_gradient)."""
  difference_BLD = (student_x_BLD.astype(jnp.float32)
                    - jax.lax.stop_gradient(teacher_x_BLD.astype(jnp.float32)))
  return jnp.sum(jnp.mean(jnp.square(difference_BLD), axis=-1) * weights_BL.astype(jnp.float32))


def teacher_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The config of the run in `objective.distill.teacher` (its config.json), checked to match.

  The teacher reads the student's batches, so its vocabulary, model vocabulary size and
  architecture must be the student's; its mesh becomes the student's so its parameters sit on the
  same devices; the teacher's own teacher, if it had one, is dropped.
  """
  teacher = config.objective.distill.teacher
  where = f'objective.distill.teacher={teacher!r}'
  loaded = finished.load_config(teacher, where)  # first: a path with no run says it has no config.json
  runs.find_checkpoint(teacher, where)
  keys = ('data.vocabulary', 'model.vocab_size', 'model.architecture')
  for key in keys + (('model.d_model',) if config.objective.distill.hidden_weight else ()):
    section, field = key.split('.')
    if loaded[section][field] != config[section][field]:
      raise errors.UserError(f'{where} has {key}={loaded[section][field]!r} but this run has '
                             f'{config[section][field]!r}; distillation needs them equal.')
  loaded.mesh = config.mesh
  loaded.objective.distill.teacher = ''  # the teacher's own teacher is not needed
  return loaded


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError on an experiment config whose `objective.distill` is unusable (its
  settings, and the teacher's run when one is named)."""
  settings = config.objective.distill
  if not settings.temperature > 0:
    raise errors.UserError(f'objective.distill.temperature={settings.temperature!r} must be '
                           "positive; 1.0 distills the teacher's distribution unchanged, larger "
                           'values soften it.')
  if not 0.0 <= settings.weight <= 1.0:
    raise errors.UserError(f'objective.distill.weight={settings.weight!r} must be in [0, 1]: the '
                           'share of the distillation term in the loss, the rest being '
                           'cross-entropy.')
  until = settings.until
  if isinstance(until, bool) or not isinstance(until, (int, float)) or until < 0 or (
      until >= 1 and until != int(until)):
    raise errors.UserError(f'objective.distill.until={until!r} must be 0 (distill throughout), a '
                           'fraction of train.steps in (0, 1) or a whole step: the step '
                           'distillation ends at (SALT: the early phase).')
  if not settings.hidden_weight >= 0:
    raise errors.UserError(f'objective.distill.hidden_weight={settings.hidden_weight!r} must be >= '
                           "0: the weight of the hidden states' squared error (0 = off).")
  if settings.teacher:
    teacher_config(config)
