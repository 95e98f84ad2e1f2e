"""Token-level knowledge distillation from a trained teacher into a smaller student.

Hinton et al. 2015, "Distilling the Knowledge in a Neural Network", arXiv 1503.02531. The teacher
is any finished run's workdir (its config.json and latest checkpoint), e.g. the quickstart's; the
student (2 layers of d_model 128) learns from (1 - w) * cross-entropy + w * T^2 * KL(teacher ||
student) at temperature T on the same batches:

  python -m launch.train --config=experiments/quickstart.py --workdir=W/teacher
  python -m launch.train --config=experiments/distillation.py:W/teacher --workdir=W/student
"""

from experiments import quickstart


def get_config(teacher: str = ''):
  if not teacher:
    raise ValueError('experiments/distillation.py needs the teacher run: '
                     '--config=experiments/distillation.py:TEACHER_WORKDIR.')
  config = quickstart.get_config()
  config.model.d_model = 128
  config.model.num_layers = 2
  config.model.num_heads = 2
  config.model.mlp_dim = 512
  config.objective.distill.teacher = teacher
  config.objective.distill.temperature = 1.0
  config.objective.distill.weight = 0.5
  return config
