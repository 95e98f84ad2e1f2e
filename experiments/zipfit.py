"""ZIP-FIT against random selection: which 10% of a prose pool helps a code target most?

Obbad et al. 2024, "ZIP-FIT: Embedding-Free Data Selection via Compression-Based Alignment"
(arXiv 2410.18194): ranking candidate documents by gzip alignment to a small target set (1 minus
their mean normalised compression distance to it) and training on the top of the ranking lowers
the target loss faster than other selections at the same budget.

Here the pool is the Python install's documentation prose (`stdlib_prose`), whose documents quote
code to different degrees, and the target is its source code: `data.select.by='zipfit'` keeps the
prose most aligned with 100 training documents of `stdlib_code` (research/data/selection.py),
`by='random'` seeded random documents, each up to 10% of the prose's tokens
(`data.select.unit='tokens'`: gzip alignment favours short documents, and 10% of the documents by
ZIP-FIT held 1-2% of the tokens, so a run read them 25-50 times). The 0.6M-parameter model of
experiments/continual_rewarm.py trains STEPS steps of 16 x 128 tokens on the kept prose only and is
evaluated on the code's validation split (the target loss; never trained on, and not the target
sample) and on the prose's. 3 seeds per arm; the seed also draws the random documents and ZIP-FIT's
target sample.

  python -m launch.sweep --config=experiments/zipfit.py --workdir=workdirs/zipfit --parallel=2
  python -m launch.report workdirs/zipfit --out=docs/results/zipfit --keep_runs
"""

import ml_collections

from experiments import continual_rewarm

STEPS = 400
SEEDS = (0, 1, 2)
SELECTIONS = ('zipfit', 'random')


def get_config():
  config = continual_rewarm.toy_run(STEPS)
  config.data.mixture = ml_collections.ConfigDict({'stdlib_prose': 1.0})
  config.data.select.update(by='zipfit', keep='highest', fraction=0.1, unit='tokens')
  config.data.select.zipfit.update(target='stdlib_code', split='train', size=100)
  config.eval.tasks = ('stdlib_code',)
  return config


def get_sweep():
  """Both selections (the same fraction of the same pool), every seed."""
  return [{'data.select.by': by, 'seed': seed} for by in SELECTIONS for seed in SEEDS]
