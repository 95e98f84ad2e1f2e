"""In-context learning needs task diversity (regression) and bursty, Zipfian data (classification).

Regression, "Pretraining task diversity and the emergence of non-Bayesian in-context learning for
regression" (Raventós et al. 2023, arXiv 2306.15063): below a threshold number K of pretraining
tasks, in-context regression tracks the Bayes estimator under the training prior (the posterior
over the K tasks) and fails on new tasks; above it, it matches ridge regression. Here
(research/data/synthetic/icl_regression.py) w is an integer vector in [-5, 5]^2, x in [0, 2]^2,
y = w.x exactly, 1-8 context pairs then a query; the 121 tasks are split by the seed into 30
held-out validation tasks and 91 training tasks, whose first K are the pool. The arms are
K in NUM_TASKS (0: a fresh task per document from all 91), each with SEEDS (the initialisation and
data order; the task seed is 0, so every arm has the same nested pools and held-out tasks, and the
same validation documents). Every run reports the answer
accuracy on held-out tasks, by number of context pairs (eval/regression/answer_accuracy/
difficulty_<n>), and on fresh inputs of its pool's tasks (eval/regression_pool/...);
research/analysis/icl.py tables them with ridge's and the training-prior Bayes estimator's on the
held-out tasks.

Classification (`:classification`), "Data Distributional Properties Drive Emergent In-Context
Learning in Transformers" (Chan et al. 2022, arXiv 2205.05055): ICL emerges only with bursty
sequences, and Zipfian classes let it coexist with in-weights learning (IWL). Here
(research/data/synthetic/icl_classification.py) 200 classes of noisy 4-letter exemplars with fixed
2-letter labels; the arms are burstiness 0.9 or 0 x class exponent zipf 0 (uniform) or 1, with
SEEDS; `classification` (its validation split: 2-way ICL on held-out classes with labels drawn per
sequence, chance 0.5) and `class_weights` (IWL: common classes, none of the query's class in the
context) are evaluated.

The 0.6M-parameter model of experiments/continual_rewarm.py trains STEPS[study] steps of 16 x 128
tokens (400 for regression, 300 for classification: both sweeps at --parallel=2 in about 20
minutes on 2 CPU cores), warmup then cosine to 0.1 x the 3e-3 peak, evaluated at the middle and
the end on 8 x 16 packed validation rows.

  python -m launch.sweep --config=experiments/icl_diversity.py \
      --workdir=workdirs/icl_diversity --parallel=2
  python -m launch.sweep --config=experiments/icl_diversity.py:classification \
      --workdir=workdirs/icl_classification --parallel=2
  python -m launch.report workdirs/icl_diversity --out=docs/results/icl_diversity --keep_runs
  python -m launch.report workdirs/icl_classification \
      --out=docs/results/icl_diversity/classification --keep_runs
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

REGRESSION = 'regression'
REGRESSION_POOL = 'regression_pool'
CLASSIFICATION = 'classification'
CLASS_WEIGHTS = 'class_weights'
STUDIES = (REGRESSION, CLASSIFICATION)
NUM_DOCUMENTS = 40_000  # documents per split, more than a run reads (no document is read twice)
STEPS = {'regression': 400, 'classification': 300}  # what fits 20 minutes for both sweeps
PEAK_LR = 3e-3
SEEDS = (0, 1, 2)
NUM_TASKS = (1, 0, 16, 4, 64)  # K; 0: a fresh task per document. The extremes run first.
BURSTINESS = (0.9, 0.0)
ZIPF = (0.0, 1.0)


def _tasks(study: str) -> ml_collections.ConfigDict:
  if study == REGRESSION:
    spec = {'source': 'icl_regression', 'num_documents': NUM_DOCUMENTS, 'num_tasks': 0, 'seed': 0}
    return ml_collections.ConfigDict({REGRESSION: spec,
                                      REGRESSION_POOL: {**spec, 'validation': 'pool'}})
  spec = {'source': 'icl_classification', 'num_documents': NUM_DOCUMENTS, 'seed': 0}
  return ml_collections.ConfigDict({
      CLASSIFICATION: {**spec, 'burstiness': 0.9, 'zipf': 0.0},
      CLASS_WEIGHTS: {**spec, 'validation': 'weights'}})


def _check(study: str) -> None:
  if study not in STUDIES:
    raise ValueError(f'experiments/icl_diversity.py:{study}: choose one of {list(STUDIES)}.')


def get_config(study: str = REGRESSION) -> ml_collections.ConfigDict:
  """The study's fresh-task or bursty-uniform arm with seed 0; the sweep sets the arm."""
  _check(study)
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = _tasks(study)
  config.data.mixture = ml_collections.ConfigDict({study: 1.0})
  config.eval.tasks = (CLASS_WEIGHTS,) if study == CLASSIFICATION else (REGRESSION_POOL,)
  steps = STEPS[study]
  config.eval.update(every=steps // 2, batches=8, batch_size=16)
  config.train.steps = config.checkpoint.every = steps
  config.schedule.update(name='warmup_cosine', peak_lr=PEAK_LR, warmup_steps=steps // 20,
                         final_lr_fraction=0.1)
  return config


def get_sweep(study: str = REGRESSION):
  """Every arm with every seed (the initialisation and data order; the tasks' seed stays 0)."""
  _check(study)
  if study == REGRESSION:
    arms = [{f'data.tasks.{task}.num_tasks': k for task in (REGRESSION, REGRESSION_POOL)}
            for k in NUM_TASKS]
  else:
    arms = [{f'data.tasks.{CLASSIFICATION}.burstiness': b, f'data.tasks.{CLASSIFICATION}.zipf': z}
            for b in BURSTINESS for z in ZIPF]
  return [{**arm, 'seed': seed} for arm in arms for seed in SEEDS]
