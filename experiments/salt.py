"""SALT: a small teacher's soft labels early in training, then the data alone.

Rawat et al. 2024, "A Little Help Goes a Long Way: Efficient LLM Training by Leveraging Small LMs"
(arXiv 2410.18779): a large student distilled from a smaller, weaker teacher gains early in
training, where the teacher still knows more, and loses once it has caught up; distilling only
in the early phase (`objective.distill.until`) keeps the gain and drops the loss, and ends below
both training without distillation and distilling throughout.

Here the teacher is the 0.6M-parameter model of experiments/continual_rewarm.py trained
TEACHER_STEPS steps on prose and code; the student has 1.5 times its width and 3 layers (1.8M matmul
parameters, 3.2 times the teacher's 0.57M) and trains STUDENT_STEPS steps on the same mixture in
three arms, 3 seeds each: no distillation, distillation throughout (weight 0.5, temperature 1), and
SALT (the same, only for the first EARLY_FRACTION of the steps, then cross-entropy alone).

  python -m launch.train --config=experiments/salt.py:teacher --workdir=workdirs/salt/teacher
  python -m launch.sweep --config=experiments/salt.py --workdir=workdirs/salt/students --parallel=2
  python -m launch.report workdirs/salt/students workdirs/salt/teacher --out=docs/results/salt \
      --keep_runs
"""

import ml_collections

from experiments import continual_rewarm

TEACHER_DIR = 'workdirs/salt/teacher'
TEACHER_STEPS = 600
STUDENT_STEPS = 400
EARLY_FRACTION = 0.25  # SALT's distillation phase, a share of the student's steps
SEEDS = (0, 1, 2)
ARMS = {
    'none': {'objective.distill.teacher': ''},
    'throughout': {'objective.distill.until': 0.0},
    'salt': {'objective.distill.until': EARLY_FRACTION},
}


def _common(steps: int) -> ml_collections.ConfigDict:
  config = continual_rewarm.toy_run(steps)
  config.data.mixture = ml_collections.ConfigDict({'stdlib_prose': 0.5, 'stdlib_code': 0.5})
  return config


def teacher_config() -> ml_collections.ConfigDict:
  """The small teacher: the toy model of the continual-pretraining studies."""
  return _common(TEACHER_STEPS)


def student_config() -> ml_collections.ConfigDict:
  """The larger student, distilling from the teacher at weight 0.5 until EARLY_FRACTION."""
  config = _common(STUDENT_STEPS)
  config.model.update(d_model=192, num_layers=3, num_heads=3, head_dim=64, mlp_dim=768)
  config.objective.distill.update(teacher=TEACHER_DIR, weight=0.5, temperature=1.0,
                                  until=EARLY_FRACTION, shape='constant')
  return config


def get_config(arg: str = 'student') -> ml_collections.ConfigDict:
  configs = {'teacher': teacher_config, 'student': student_config}
  if arg not in configs:
    raise ValueError(f'experiments/salt.py takes one of {sorted(configs)}, got {arg!r}.')
  return configs[arg]()


def get_sweep():
  """The three arms of the student, every seed."""
  return [{**overrides, 'seed': seed} for overrides in ARMS.values() for seed in SEEDS]
