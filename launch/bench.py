"""Benchmarks: measured numbers for docs/benchmarks.md, written as JSON.

  python -m launch.bench --out=bench.json [--sections=matmul,data] [--config=experiments/NAME.py]

--config defaults to experiments/quickstart.py.

Sections:
  matmul  the machine's matmul ceiling: the best jitted square matmul FLOP/s, float32 and bfloat16
  data    input-pipeline throughput: global batches of the experiment's data config and objective
          (UL2's denoisers, ...) assembled on the host (research/data/pipeline.TrainData.batch),
          tokens (row positions) per second as median and spread over repeats
"""

import json
import os
import platform
import time

from launch import cli  # first: quiets TensorFlow before research imports it

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from research import peak_flops
from research.data import pipeline, vocabularies
from research.objectives import examples

_OUT = flags.DEFINE_string('out', None, 'Where to write the JSON results.', required=True)
_SECTIONS = flags.DEFINE_list('sections', ['matmul', 'data'], 'Which benchmarks to run.')
_DATA_STEPS = flags.DEFINE_integer('data_steps', 200, 'Batches per data repeat.')
SECTIONS = ('matmul', 'data')
flags.register_validator('sections', lambda names: set(names) <= set(SECTIONS),
                         message=f'--sections takes a comma-separated subset of {SECTIONS}.')


def matmul_section() -> dict:
  return {f'{dtype}_flops_per_second': peak_flops.matmul_flops_per_second(jnp.dtype(dtype))
          for dtype in ('float32', 'bfloat16')}


def data_section(config, steps: int, repeats: int = 5) -> dict:
  """Host-side tokens/s of `TrainData.batch` over `steps` consecutive steps, `repeats` times."""
  start = time.perf_counter()
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  objective = examples.make_objective(config, vocabulary)
  data = pipeline.TrainData(config.data, config.train.batch_size, config.seed, config.train.steps,
                            objective)
  setup = time.perf_counter() - start
  tokens_per_batch = config.train.batch_size * objective.budgets[-1]
  rates = []
  for repeat in range(repeats):
    start = time.perf_counter()
    for step in range(repeat * steps, (repeat + 1) * steps):
      data.batch(step)
    rates.append(tokens_per_batch * steps / (time.perf_counter() - start))
  return {'tokens_per_second_median': float(np.median(rates)),
          'tokens_per_second_min': float(np.min(rates)),
          'tokens_per_second_max': float(np.max(rates)),
          'setup_seconds': setup, 'batch_size': config.train.batch_size,
          'objective': objective.name, 'architecture': objective.architecture,
          'seq_len': config.data.seq_len, 'steps_per_repeat': steps, 'repeats': repeats}


@cli.exits_on_user_error
def main(argv):
  del argv
  results = {'machine': {'processor': platform.processor() or platform.machine(),
                         'cpus': os.cpu_count(), 'jax': jax.__version__,
                         'python': platform.python_version(),
                         'devices': [d.device_kind for d in jax.local_devices()]}}
  sections = {'matmul': matmul_section,
              'data': lambda: data_section(cli.CONFIG.value, _DATA_STEPS.value)}
  for name in _SECTIONS.value:
    results[name] = sections[name]()
    print(name, json.dumps(results[name], indent=1))
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)


if __name__ == '__main__':
  flags.FLAGS.set_default('config', 'experiments/quickstart.py')
  cli.run(main)
