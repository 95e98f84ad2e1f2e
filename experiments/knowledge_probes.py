"""Knowledge acquisition and forgetting: inject new biographies into pretraining, track their loss.

SEEDS.md section 9 item 11 (Chang et al. 2024, "How Do Large Language Models Acquire Factual
Knowledge During Pretraining?", arXiv 2406.11813): the log-probability of an injected fact jumps
at its exposure, then decays as a power law in the steps since; duplicated injections are
forgotten faster once exposure stops, and larger batches slow forgetting.

The 0.6M-parameter model of experiments/continual_rewarm.py pretrains STEPS steps of 128-token
rows on the Python install's prose and code. Two probes (research/data/probes.py), each the
biographies of DOCUMENTS new individuals (one plain biography each, from biography generators
with seeds of their own, so nothing else in training mentions them), enter the batch at step
INJECT_AT:

  once        one exposure
  duplicated  TIMES exposures, EVERY steps apart, from step INJECT_AT + 1

Each has a control (the next DOCUMENTS biographies of its generator, never trained on), and
`eval/probe/<name>/gap` (control loss minus probe loss, nats per token) is evaluated every
eval.every steps. The sweep runs the batch sizes of BATCH_SIZES at the same steps and learning
rate: the larger batch sees more background data per step, the probe's rows being the same.

  python -m launch.sweep --config=experiments/knowledge_probes.py \
      --workdir=workdirs/knowledge_probes
  python -m launch.report workdirs/knowledge_probes --out=docs/results/knowledge_probes
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

STEPS = 1200
INJECT_AT = 200
DOCUMENTS = 4  # biographies per probe, about 2 rows of 128 tokens each
TIMES, EVERY = 10, 10
BATCH_SIZES = (16, 64)


def _biographies(seed: int) -> dict:
  return {'source': 'biographies', 'seed': seed, 'num_documents': 4 * DOCUMENTS,
          'augmented_fraction': 0.0}


def get_config() -> ml_collections.ConfigDict:
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = ml_collections.ConfigDict({'bios_once': _biographies(101),
                                                 'bios_duplicated': _biographies(102)})
  config.data.probes = ml_collections.ConfigDict({
      'once': {'task': 'bios_once', 'documents': DOCUMENTS, 'at_step': INJECT_AT},
      'duplicated': {'task': 'bios_duplicated', 'documents': DOCUMENTS, 'at_step': INJECT_AT + 1,
                     'times': TIMES, 'every': EVERY}})
  config.train.steps = config.checkpoint.every = STEPS
  config.eval.update(every=5, batches=2)
  config.schedule.update(name='warmup_cosine', peak_lr=3e-3, warmup_steps=60,
                         final_lr_fraction=0.1)
  return config


def get_sweep():
  """The batch sizes."""
  return [{'train.batch_size': size} for size in BATCH_SIZES]
