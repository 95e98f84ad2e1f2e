"""Benchmarks: measured numbers for docs/benchmarks.md, written as JSON.

  python -m launch.bench --out=bench.json [--sections=matmul,data] [--config=experiments/NAME.py]

--config defaults to experiments/quickstart.py.

Sections:
  matmul  the machine's matmul ceiling: the best jitted square matmul FLOP/s, float32 and bfloat16
  data    input-pipeline throughput: global batches of the experiment's data config and objective
          (UL2's denoisers, ...) assembled on the host (research/data/pipeline.TrainData.batch),
          tokens (row positions) per second as median and spread over repeats
  moe     the experiment's mixture-of-experts layer (model.moe_*; research/model/moe.py), forward
          and backward on one batch of train.batch_size x data.seq_len tokens, against a dense
          SwiGLU of the same active width (top_k x the expert width): milliseconds, median of
          repeats, and their ratio (the cost of routing, dispatch and capacity slack)
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

from research import errors, peak_flops
from research.data import pipeline, vocabularies
from research.model import layers, transformer
from research.objectives import examples

_OUT = flags.DEFINE_string('out', None, 'Where to write the JSON results.', required=True)
_SECTIONS = flags.DEFINE_list('sections', ['matmul', 'data'], 'Which benchmarks to run.')
_DATA_STEPS = flags.DEFINE_integer('data_steps', 200, 'Batches per data repeat.')
SECTIONS = ('matmul', 'data', 'moe')
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


def _median_milliseconds(fn, args, repeats: int) -> float:
  """The median wall time of `fn(*args)` over `repeats` calls after one compiling call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))


def moe_section(config, repeats: int = 10) -> dict:
  """Forward + backward milliseconds of the config's MoE layer and of a dense SwiGLU of the same
  active width, on one global batch of random activations."""
  c = transformer.ModelConfig.from_config(config.model)
  if not c.moe_experts:
    raise errors.UserError(f'--sections=moe needs a mixture-of-experts model, but --config has '
                           f'model.moe_experts={c.moe_experts}; pass an experiment with experts '
                           '(experiments/moe_load_balancing.py).')
  shape = (config.train.batch_size, config.data.seq_len, c.d_model)
  x_BLD = jax.random.normal(jax.random.key(0), shape, c.compute_dtype)
  valid_BL = jnp.ones(shape[:2], bool)
  dense = layers.SwiGLU(c.moe_top_k * c.expert_dim, c.init_std, c.compute_dtype)
  modules = {'moe': (transformer.moe_mlp(c), (x_BLD, valid_BL)), 'dense': (dense, (x_BLD,))}
  results = {}
  for name, (module, args) in modules.items():
    params = module.init(jax.random.key(1), *args)
    loss = lambda p, x, m=module, a=args: jnp.sum(jnp.square(m.apply(p, x, *a[1:])))
    results[f'{name}_milliseconds'] = _median_milliseconds(
        jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x_BLD), repeats)
  return {**results, 'moe_over_dense': results['moe_milliseconds'] / results['dense_milliseconds'],
          'experts': c.moe_experts, 'top_k': c.moe_top_k, 'expert_dim': c.expert_dim,
          'capacity_factor': c.moe_capacity_factor, 'tokens': shape[0] * shape[1],
          'd_model': c.d_model, 'dtype': c.dtype}


@cli.exits_on_user_error
def main(argv):
  del argv
  results = {'machine': {'processor': platform.processor() or platform.machine(),
                         'cpus': os.cpu_count(), 'jax': jax.__version__,
                         'python': platform.python_version(),
                         'devices': [d.device_kind for d in jax.local_devices()]}}
  sections = {'matmul': matmul_section,
              'data': lambda: data_section(cli.CONFIG.value, _DATA_STEPS.value),
              'moe': lambda: moe_section(cli.CONFIG.value)}
  for name in _SECTIONS.value:
    results[name] = sections[name]()
    print(name, json.dumps(results[name], indent=1))
  with open(_OUT.value, 'w', encoding='utf-8') as f:
    json.dump(results, f, indent=2)


if __name__ == '__main__':
  flags.FLAGS.set_default('config', 'experiments/quickstart.py')
  cli.run(main)
