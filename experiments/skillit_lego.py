"""Skill-it on LEGO: does mixing the skills online reach the hardest chain length sooner?

Chen et al. 2023, "Skill-It! A Data-Driven Skills Framework for Understanding and Training
Language Models" (arXiv 2307.14430), section 5: LEGO chains of length 1..k are skills, the chain
of length k building on that of k - 1. The skills are tasks `lego_k` with only chains of length k
(research/data/synthetic/lego.py, shuffled clauses as in the paper). The paper has five; the
0.6M-parameter model of experiments/continual_rewarm.py resolves none of the chains of 5 (nor 1%
of those of 4) after 1,500 uniform steps, so here MAX_CHAIN = 4. At equal tokens (STEPS steps of
16 x 128 tokens), four mixtures train:

  :uniform      equal weights on the skills
  :target_only  only the longest chain, the skill the comparison is about
  :skillit      Skill-it from equal weights, updated every UPDATE_EVERY steps from the skills'
                answer losses with the paper's LEGO graph (each skill 1 to itself, 0.5 to the
                next chain length) and its defaults eta = 0.2, window 3
  :skillit_estimated  the same with the graph launch.skill_graph estimated from GRAPH_STEPS-step
                runs on one skill each (`:graph_run`, swept over the skills): the drop of each
                skill's answer loss from the first evaluation (step 50) to the last

and every run evaluates every skill's answer accuracy (eval/lego_k/answer_accuracy: the model's
greedy answer is the whole resolution, research/evaluate.py).

The attribution study (`:study`, a sweep of STUDY_STEPS-step runs, 3 seeds an arm) asks whether
the gain comes from the graph: Skill-it with the paper's graph, with no graph (the identity: each
skill helps only itself, so only the losses steer), with the paper's edges on a shuffled order of
the skills (SHUFFLED: each skill 0.5 to the next of lego_3, lego_1, lego_4, lego_2, none of them a
prerequisite), and eta 0 (the uniform mixture with the same re-staging and evaluations):

  python -m launch.sweep --config=experiments/skillit_lego.py:study \
      --workdir=workdirs/skillit_lego_study --parallel=2
  python -m launch.report workdirs/skillit_lego_study --out=docs/results/skillit_lego/study \
      --keep_runs

  python -m launch.train --config=experiments/skillit_lego.py:uniform \
      --workdir=workdirs/skillit_lego/uniform
  python -m launch.train --config=experiments/skillit_lego.py:target_only \
      --workdir=workdirs/skillit_lego/target_only
  python -m launch.train --config=experiments/skillit_lego.py:skillit \
      --workdir=workdirs/skillit_lego/skillit
  python -m launch.sweep --config=experiments/skillit_lego.py:graph_run \
      --workdir=workdirs/skillit_lego/graph_runs
  python -m launch.skill_graph workdirs/skillit_lego/graph_runs --metric=answer_loss \
      --out=workdirs/skillit_lego/graph.py
  python -m launch.train --config=experiments/skillit_lego.py:skillit_estimated \
      --workdir=workdirs/skillit_lego/skillit_estimated
"""

import os

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

MAX_CHAIN = 4
SKILLS = tuple(f'lego_{k}' for k in range(1, MAX_CHAIN + 1))
TARGET = SKILLS[-1]
NUM_DOCUMENTS = 20_000  # chains per skill and split
STEPS = 3000
STUDY_STEPS = 1500  # 12 runs in under 30 minutes
SEEDS = (0, 1, 2)
SHUFFLED = ('lego_3', 'lego_1', 'lego_4', 'lego_2')  # no edge of the paper's graph in its chain
GRAPH_STEPS = 300
UPDATE_EVERY = 100
PEAK_LR = 3e-3
GRAPH_FILE = 'workdirs/skillit_lego/graph.py'


def base_config() -> ml_collections.ConfigDict:
  """Equal weights on the skills, every skill evaluated."""
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = ml_collections.ConfigDict({
      name: {'source': 'lego', 'min_chain': k, 'max_chain': k, 'num_documents': NUM_DOCUMENTS}
      for k, name in enumerate(SKILLS, start=1)})
  config.data.mixture = ml_collections.ConfigDict({name: 1.0 for name in SKILLS})
  config.eval.tasks = SKILLS
  config.eval.every = 250
  config.train.steps = config.checkpoint.every = STEPS
  config.schedule.update(name='warmup_cosine', peak_lr=PEAK_LR, warmup_steps=STEPS // 20,
                         final_lr_fraction=0.1)
  return config


def target_only_config() -> ml_collections.ConfigDict:
  config = base_config()
  config.data.mixture = ml_collections.ConfigDict({TARGET: 1.0})
  return config


def prerequisite_graph() -> ml_collections.ConfigDict:
  """The paper's LEGO graph: each skill 1 to itself and 0.5 to the next chain length."""
  return ml_collections.ConfigDict({
      name: {name: 1.0, **({SKILLS[k + 1]: 0.5} if k + 1 < len(SKILLS) else {})}
      for k, name in enumerate(SKILLS)})


def skillit_config(graph: ml_collections.ConfigDict | None = None) -> ml_collections.ConfigDict:
  config = base_config()
  config.data.skillit.update(every=UPDATE_EVERY, eta=0.2, window=3, metric='answer_loss')
  config.data.skillit.graph = graph if graph is not None else prerequisite_graph()
  return config


def skillit_estimated_config() -> ml_collections.ConfigDict:
  """Skill-it with the graph launch.skill_graph wrote to GRAPH_FILE."""
  if not os.path.isfile(GRAPH_FILE):
    raise ValueError(f'experiments/skillit_lego.py:skillit_estimated reads {GRAPH_FILE}, which '
                     'does not exist; write it with python -m launch.skill_graph '
                     f'workdirs/skillit_lego/graph_runs --metric=answer_loss --out={GRAPH_FILE}.')
  config = skillit_config(ml_collections.ConfigDict())
  with open(GRAPH_FILE, encoding='utf-8') as f:
    exec(compile(f.read(), GRAPH_FILE, 'exec'), {'config': config})  # sets data.skillit.graph
  return config


def graph_run_config() -> ml_collections.ConfigDict:
  """A short run on one skill (the sweep sets the mixture), every skill evaluated."""
  config = base_config()
  config.train.steps = config.checkpoint.every = GRAPH_STEPS
  config.eval.every = 50
  config.schedule.update(name='constant', warmup_steps=GRAPH_STEPS // 10)
  return config


def study_config() -> ml_collections.ConfigDict:
  """Skill-it with no graph (the identity, written out over every pair of skills so that a sweep
  point can set any edge) for STUDY_STEPS steps; the sweep's arms add edges or set eta."""
  config = skillit_config(ml_collections.ConfigDict({
      train: {name: float(name == train) for name in SKILLS} for train in SKILLS}))
  config.train.steps = config.checkpoint.every = STUDY_STEPS
  config.schedule.warmup_steps = STUDY_STEPS // 20
  return config


def _chain_edges(order: tuple[str, ...], weight: float) -> dict:
  """Overrides giving each skill of `order` `weight` towards the next one."""
  return {f'data.skillit.graph.{a}.{b}': weight for a, b in zip(order, order[1:])}


STUDY_ARMS = {
    'paper_graph': _chain_edges(SKILLS, 0.5),  # prerequisite_graph()
    'no_graph': {},  # the identity: each skill helps only itself
    'shuffled_graph': _chain_edges(SHUFFLED, 0.5),
    'uniform': {'data.skillit.eta': 0.0},  # the same re-staging and evaluations, mixture fixed
}


def get_config(arg: str = 'uniform') -> ml_collections.ConfigDict:
  configs = {'uniform': base_config, 'target_only': target_only_config,
             'skillit': skillit_config, 'skillit_estimated': skillit_estimated_config,
             'graph_run': graph_run_config, 'study': study_config}
  if arg not in configs:
    raise ValueError(f'experiments/skillit_lego.py:{arg}: choose one of {sorted(configs)}.')
  return configs[arg]()


def get_sweep(arg: str = 'graph_run'):
  """For :graph_run, one point per skill, training on it alone; for :study, every arm of
  STUDY_ARMS with every seed of SEEDS."""
  if arg == 'study':
    return [{**arm, 'seed': seed} for arm in STUDY_ARMS.values() for seed in SEEDS]
  if arg != 'graph_run':
    raise ValueError(f'experiments/skillit_lego.py:{arg} has no sweep; sweep :graph_run or :study.')
  return [{f'data.mixture.{other}': float(other == name) for other in SKILLS} for name in SKILLS]
