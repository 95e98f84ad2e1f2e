"""Knowledge-injection probes: documents put into chosen training batches, and their loss tracked.

Chang et al. 2024 ("How Do Large Language Models Acquire Factual Knowledge During Pretraining?",
arXiv 2406.11813) inject new facts into pretraining batches and track their log-probability: it
jumps at each exposure, then decays as a power law in the steps since the last one, faster for
duplicated injections and slower with larger batches. Hubble ("a Model Suite to Advance the Study
of LLM Memorization") inserts documents at controlled frequencies and phases; "Train Once, Answer
All" runs such insertions as a config field of probes that puts documents into the data stream.

`data.probes` maps a probe name to ConfigDict(task, documents, at_step or at_fraction, times=1,
every=1). The first `documents` training documents of `task` are the probe; they are packed as the
run packs its data (its objective and seed) and take the first rows of the batch at steps
`at`, `at + every`, ..., `at + (times - 1) * every`. The next `documents` of the task, never trained
on, are its control. The task must be in no training mixture (nothing else may show the model its
documents): e.g. a `biographies` generator task with a seed of its own and `augmented_fraction=0`,
so that every document is a new individual's one biography.

The training loop evaluates both sets at every evaluation, as `eval/probe/<name>/...` (the
injected documents) and `eval/probe/<name>/control/...`; `eval/probe/<name>/gap`, the control's
loss minus the probe's (nats per token), is what the model holds of the injected documents beyond
what it knows of their task: 0 before the first exposure. research/analysis/forgetting.py fits
its decay after the last exposure.
"""

import dataclasses

import ml_collections
import numpy as np

from research import errors
from research.data import exposures, selection, store as store_lib, tasks

_KEYS = {'task', 'documents', 'at_step', 'at_fraction', 'times', 'every'}


def gap_metrics(results: dict[str, float], names) -> dict[str, float]:
  """`eval/probe/<name>/gap`: the control's eval loss minus the probe's, for each probe name."""
  return {f'eval/probe/{name}/gap': results[f'eval/probe/{name}/control/loss']
          - results[f'eval/probe/{name}/loss'] for name in names}


@dataclasses.dataclass(frozen=True)
class ProbeSpec:
  """A checked `data.probes` entry: the first `documents` training documents of `task`, in the
  batches of `steps`."""
  name: str
  task: str
  documents: int
  steps: tuple[int, ...]


def probe_specs(data_config: ml_collections.ConfigDict, total_steps: int,
                training_tasks: set[str]) -> list[ProbeSpec]:
  """The checked `data.probes` (tasks registered first); fails naming the bad key."""
  specs = []
  for name, spec in data_config.probes.items():
    key = f'data.probes.{name}'
    if not isinstance(spec, ml_collections.ConfigDict) or not set(spec.keys()) <= _KEYS:
      raise errors.UserError(f'{key} must be a ConfigDict with keys from {sorted(_KEYS)}, got '
                             f'{spec!r}; e.g. {{"task": "bio_probe", "documents": 16, '
                             '"at_step": 100, "times": 1}.')
    if 'task' not in spec or 'documents' not in spec:
      raise errors.UserError(f'{key} needs a task and a number of documents.')
    tasks.check_task(spec.task, f'{key}.task')
    if spec.task in training_tasks:
      raise errors.UserError(f'{key}.task={spec.task!r} is in the training mixture, which would '
                             'show the model its documents outside the injections; define a task '
                             'of its own in data.tasks (e.g. the same generator with another '
                             'seed).')
    steps = exposures.exposure_steps(spec, name, total_steps)
    if steps[-1] >= total_steps:
      raise errors.UserError(f'{key}: its last exposure, step {steps[-1]} (at + (times - 1) * '
                             f'every), is not inside train.steps={total_steps}; inject earlier, '
                             'fewer times or closer together.')
    specs.append(ProbeSpec(name, spec.task, exposures.count(spec, 'documents', name), steps))
  return specs


@dataclasses.dataclass(frozen=True)
class Probe:
  """A probe's packed rows: `rows` (what its exposures put into the batch) and `control_rows`."""
  spec: ProbeSpec
  rows: dict[str, np.ndarray]
  control_rows: dict[str, np.ndarray]


def make_probes(specs: list[ProbeSpec], data_config: ml_collections.ConfigDict, objective,
                seed: int, rows_per_batch: int) -> list[Probe]:
  """Packs each probe's documents and its control's with `objective` (examples.Objective) and
  `seed`; fails when a task has too few documents or the probes of a step need more than
  `rows_per_batch` rows."""
  probes = []
  for spec in specs:
    store = store_lib.load_prefix(spec.task, 'train', data_config.vocabulary,
                                  data_config.store_dir, documents=2 * spec.documents)
    if store.num_documents < 2 * spec.documents:
      raise errors.UserError(
          f'data.probes.{spec.name}.documents={spec.documents}: task {spec.task!r} has '
          f'{store.num_documents} training documents, fewer than the {2 * spec.documents} the '
          'probe and its control need; lower documents or give the task more.')
    pack = lambda documents: objective.pack(selection.subset(store, documents), seed)
    probes.append(Probe(spec, pack(np.arange(spec.documents)),
                        pack(np.arange(spec.documents, 2 * spec.documents))))
  for step in sorted({s for probe in probes for s in probe.spec.steps}):
    names = [p.spec.name for p in probes if step in p.spec.steps]
    rows = injected_rows(step, probes)
    if rows > rows_per_batch:
      raise errors.UserError(f'data.probes {names} put {rows} rows into the batch of step {step}, '
                             f'which has {rows_per_batch} (train.batch_size less the replay rows); '
                             'inject fewer documents at a time or raise train.batch_size.')
  return probes


def injected_rows(step: int, probes: list[Probe]) -> int:
  """How many of the first rows of the batch of `step` the probes exposed at that step replace."""
  return sum(len(p.rows['targets']) for p in probes if step in p.spec.steps)


def inject(packed: dict[str, np.ndarray], rows_R: np.ndarray, step: int,
           probes: list[Probe]) -> None:
  """Writes the rows of every probe exposed at `step` over the first rows of the batch: `packed`
  holds the batch's rows `rows_R` (ascending indices into the global batch)."""
  start = 0
  for probe in probes:
    if step in probe.spec.steps:
      count = len(probe.rows['targets'])
      # Global rows start .. start + count - 1 are the probe's rows 0 .. count - 1.
      here = (rows_R >= start) & (rows_R < start + count)
      for key, rows in packed.items():
        source = probe.rows[key] if key in probe.rows else (
            probe.rows['segment_ids'] > 0)  # loss weights of tasks that have them: 1 on tokens
        rows[here] = source[rows_R[here] - start]
      start += count
