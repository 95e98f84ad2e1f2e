"""Knowledge acquisition and forgetting: inject new biographies into pretraining, track their loss.

SEEDS.md section 9 item 11 (Chang et al. 2024, "How Do Large Language Models Acquire Factual
Knowledge During Pretraining?", arXiv 2406.11813): the log-probability of an injected fact jumps
at its exposure, then decays as a power law in the steps since; duplicated injections are
forgotten faster once exposure stops, and larger batches slow forgetting.

The 0.6M-parameter model of experiments/continual_rewarm.py pretrains STEPS steps of 128-token
rows on the Python install's prose and code. One probe (research/data/probes.py), the biographies
of DOCUMENTS new individuals (one plain biography each, from a biography generator with a seed of
its own, so nothing else in training mentions them), enters the batch by one of three schedules,
one per run (probes in one run interact: the duplicated probe teaches the biography template, which
moved a second probe's pre-exposure gap by 0.06 nats when both shared runs):

  once        one exposure at step INJECT_AT
  duplicated  TIMES exposures, EVERY steps apart, from step INJECT_AT + 1 (the last at LAST = 291)
  once_late   one exposure at step LAST

so `once` against `once_late` varies only the position of a single exposure, and `once_late`
against `duplicated` only the number of exposures ending at the same step. The probe's control
(the next DOCUMENTS biographies of its generator, never trained on) gives `eval/probe/probe/gap`
(control loss minus probe loss, nats per token), evaluated every eval.every steps. The default
sweep runs each schedule with the seeds of SEEDS (initialisation and data order; the probe's
documents stay the same) at batch 16; `:batch` runs the duplicated schedule at batch BATCH with
the same seeds, steps and learning rate (more background data per step, the probe's rows the
same), to compare with the default sweep's duplicated runs.

  python -m launch.sweep --config=experiments/knowledge_probes.py \
      --workdir=workdirs/knowledge_probes
  python -m launch.sweep --config=experiments/knowledge_probes.py:batch \
      --workdir=workdirs/knowledge_probes_batch
  python -m launch.report workdirs/knowledge_probes --out=docs/results/knowledge_probes --keep_runs
  python -m launch.report workdirs/knowledge_probes workdirs/knowledge_probes_batch \
      --out=docs/results/knowledge_probes/batch --keep_runs
"""

import ml_collections

from experiments import base
from experiments import continual_rewarm as rewarm

STEPS = 900
INJECT_AT = 200
DOCUMENTS = 4  # biographies in the probe, about 8 rows of 128 tokens
TIMES, EVERY = 10, 10
LAST = INJECT_AT + 1 + (TIMES - 1) * EVERY  # the duplicated schedule's last exposure: 291
SCHEDULES = {'once': (INJECT_AT, 1), 'duplicated': (INJECT_AT + 1, TIMES),
             'once_late': (LAST, 1)}  # name -> (first exposure step, exposures)
SEEDS = (0, 1, 2)
BATCH = 32
SWEEPS = ('schedules', 'batch')


def _schedule(name: str) -> dict:
  """The overrides of the probe's exposure schedule `name` (see SCHEDULES)."""
  at_step, times = SCHEDULES[name]
  return {'data.probes.probe.at_step': at_step, 'data.probes.probe.times': times}


def get_config(sweep: str = 'schedules') -> ml_collections.ConfigDict:
  """The duplicated schedule; the sweeps set the others and the batch size."""
  if sweep not in SWEEPS:
    raise ValueError(f'experiments/knowledge_probes.py:{sweep} is not a sweep; use one of '
                     f'{list(SWEEPS)}.')
  config = base.get_config()
  rewarm.small_model(config)
  config.data.tasks = ml_collections.ConfigDict({'bios': {
      'source': 'biographies', 'seed': 101, 'num_documents': 4 * DOCUMENTS,
      'augmented_fraction': 0.0}})
  config.data.probes = ml_collections.ConfigDict({'probe': {
      'task': 'bios', 'documents': DOCUMENTS, 'at_step': INJECT_AT + 1, 'times': TIMES,
      'every': EVERY}})
  config.train.steps = config.checkpoint.every = STEPS
  config.eval.update(every=10, batches=2)
  config.schedule.update(name='warmup_cosine', peak_lr=3e-3, warmup_steps=60,
                         final_lr_fraction=0.1)
  return config


def get_sweep(sweep: str = 'schedules'):
  """Every schedule with every seed, or (`batch`) the duplicated one at batch BATCH."""
  get_config(sweep)  # the same check
  if sweep == 'batch':
    return [{**_schedule('duplicated'), 'train.batch_size': BATCH, 'seed': seed}
            for seed in SEEDS]
  return [{**_schedule(name), 'seed': seed} for name in SCHEDULES for seed in SEEDS]
