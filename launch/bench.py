"""Benchmarks: measured numbers for docs/benchmarks.md, written as JSON, in one process.

  python -m launch.bench --out=bench.json [--sections=matmul,data,train,eval,generate]
      [--presets=tiny,small] [--dtypes=float32,bfloat16] [--train_steps=N] [--data_steps=N]
      [--config=experiments/NAME.py] [--galore_ranks=8,32,128]

Every section runs by default but `build`, `moe` and `optimizer`. --config (default
experiments/quickstart.py) is what the `data` and `moe` sections read; `train`, `eval`, `generate`
and `optimizer` build the model presets below from research/defaults.py's defaults (what a
researcher runs: scanned layers, remat dots_no_batch, AdamW with clipping, z-loss), vocabulary 256,
on one device, fed random token ids. Every timed call is blocked until its result is ready and
comes after a warm-up call (the first, which compiles); medians are reported with the min and max
of the repeats.

Sections:
  matmul    the machine's matmul ceiling: the best jitted square matmul FLOP/s over a few sizes,
            float32 and bfloat16 (research/peak_flops.matmul_flops_per_second), the denominator of
            the MFU reported here
  data      input-pipeline throughput: global batches of the --config's data and objective, and of
            the same data under UL2's mixture of denoisers, assembled on the host
            (research/data/pipeline.TrainData.batch), tokens (row positions) per second
  train     for each preset in --presets and compute dtype in --dtypes (model.dtype), the jitted
            train step (research/train.Trainer.step) on batches of the preset's shape: step ms,
            tokens/s, model FLOP/s (transformer.flops_per_token, causal attention at half, times
            tokens/s), MFU against this process's measured matmul ceiling of the same dtype (the
            matmul section runs first if not asked for), compile seconds (the first step's time
            less a median step) and the process's peak host memory so far (ru_maxrss)
  eval      the forward-only eval step (Trainer.eval_step) of the same presets and dtypes: tokens/s
  generate  KV-cache generation (research/generate.generate) with the tiny preset: 8 prompts of 64
            tokens, 64 new tokens each, greedy, no stop id; new tokens per second
  build     pod-scale data on this machine (opt-in): JSONL corpora of --build_mb MB and of 10 MB
            written from the standard library's sources (each file a document, numbered so no two
            are equal) in files of 64 MB, byte vocabulary, as the task of experiments/quickstart.py.
            The documents built by Beam's DirectRunner with 1 worker in this process; each corpus
            built by `launch.build_data` (one worker per core: documents, then rows): source MB/s;
            each trained for 1 step by `launch.train` (a fresh process: imports, store checks,
            compile, the step, the final evaluation and checkpoint): seconds and peak RSS; and the
            input tokens/s of the rows one host of 64 computes of a global batch of 512 x 2048
            tokens, causal LM and UL2 (their rows packed first: pack MB/s)
  moe       the --config's mixture-of-experts layer (model.moe_*; research/model/moe.py), forward
            and backward on one batch of train.batch_size x data.seq_len tokens, against a dense
            SwiGLU of the same active width (top_k x the expert width): milliseconds, median of
            repeats, and their ratio (the cost of routing, dispatch and capacity slack); opt-in,
            it needs a --config with experts (experiments/moe_load_balancing.py)
  optimizer for each preset in --presets, AdamW and GaLore (train.optimizer='galore'; Zhao et al.
            2024, "GaLore: Memory-Efficient LLM Training by Gradient Low-Rank Projection", arXiv
            2403.03507) at each rank of --galore_ranks (opt-in): the optimizer state's bytes and
            the parameters' (leaf sizes of the Trainer's initial state, from jax.eval_shape:
            nothing allocated), the train step's ms (median, float32, as the train section) and,
            for GaLore, the ms of a step that refreshes the projections (its SVDs, every
            train.galore.update_proj_gap steps). A rank at or above a matrix's smaller side
            leaves that matrix unprojected (plain Adam)

Output: --out holds {"machine": {...}, "wall_seconds": S, "benchmarks": {NAME: {...}}}, one object
per benchmark named SECTION/... (matmul/float32, data/ul2, train/tiny/bfloat16, ...), each with
its `section`; a markdown table of every benchmark (value, spread, details) is printed last.
"""

import copy
import dataclasses
import json
import math
import os
import platform
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from launch import cli  # first: quiets TensorFlow before research imports it

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags

from research import defaults
from research import errors, generate, optimizers, peak_flops, train
from research.data import build, corpora, pipeline, tasks, vocabularies
from research.data import rows as rows_lib
from research.model import layers, transformer
from research.objectives import causal_lm
from research.objectives import registry


@dataclasses.dataclass(frozen=True)
class Preset:
  """A decoder's sizes and the batch it trains on; every other setting is research/defaults.py's.

  head_dim is d_model / num_heads; `steps` is how many timed steps the train and eval sections run
  (after the compiling one) unless --train_steps says otherwise; `loss_chunk` is train.loss_chunk.
  """
  name: str
  d_model: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  seq_len: int
  batch_size: int
  steps: int
  vocab_size: int = 256
  loss_chunk: int = 0


_TINY = Preset('tiny', d_model=256, num_layers=4, num_heads=4, mlp_dim=1024, seq_len=256,
               batch_size=8, steps=10)
PRESETS = {p.name: p for p in (
    _TINY,
    Preset('small', d_model=512, num_layers=8, num_heads=8, mlp_dim=2048, seq_len=512,
           batch_size=8, steps=5),
    # A language model's vocabulary, where the output layer dominates: its logits whole, and 64
    # positions at a time (train.loss_chunk).
    dataclasses.replace(_TINY, name='tiny_v32k', vocab_size=32768, steps=5),
    dataclasses.replace(_TINY, name='tiny_v32k_chunked', vocab_size=32768, steps=5,
                        loss_chunk=64))}
SECTIONS = ('matmul', 'data', 'train', 'eval', 'generate', 'build', 'moe', 'optimizer')
# build, moe and optimizer: opt-in
DEFAULT_SECTIONS = ('matmul', 'data', 'train', 'eval', 'generate')
MATMUL_DTYPES = ('float32', 'bfloat16')
MATMUL_SIZES = (1024, 2048)

_OUT = flags.DEFINE_string('out', None, 'Where to write the JSON results.', required=True)
_SECTIONS = flags.DEFINE_list('sections', list(DEFAULT_SECTIONS),
                              f'Which benchmarks to run, of {SECTIONS}.')
_PRESETS = flags.DEFINE_list('presets', ['tiny', 'small'],
                             f'Model presets of the train and eval sections, of {list(PRESETS)}.')
_DTYPES = flags.DEFINE_list(
    'dtypes', list(transformer.DTYPES),
    'Compute dtypes (model.dtype) of the train, eval and generate sections.')
_TRAIN_STEPS = flags.DEFINE_integer(
    'train_steps', 0, 'Timed steps per preset and dtype in the train and eval sections, after the '
    "compiling one; 0 = the preset's own (tiny 10, small 5).", lower_bound=0)
_DATA_STEPS = flags.DEFINE_integer('data_steps', 200, 'Batches per data repeat.', lower_bound=1)
_GALORE_RANKS = flags.DEFINE_list(
    'galore_ranks', ['8', '32', '128'],
    'GaLore ranks (train.galore.rank) of the optimizer section.')
_BUILD_MB = flags.DEFINE_integer('build_mb', 1024, 'Corpus size of the build section, in MB.',
                                 lower_bound=1)
for _flag, _names in (('sections', SECTIONS), ('presets', tuple(PRESETS)),
                      ('dtypes', tuple(transformer.DTYPES))):
  flags.register_validator(_flag, lambda values, names=_names: set(values) <= set(names),
                           message=f'--{_flag} takes a comma-separated subset of {_names}.')
flags.register_validator('galore_ranks',
                         lambda values: all(v.isdigit() and int(v) > 0 for v in values),
                         message='--galore_ranks takes comma-separated positive integers.')


def _timed(call: Callable, repeats: int, carry=None) -> dict:
  """Wall times of `carry = call(carry)`, each call blocked until its result is ready: the first
  call's seconds (`first_seconds`; a jitted function compiles then), then the median, min and max
  milliseconds (`median_ms`, `min_ms`, `max_ms`) of `repeats` more calls.

  `call` gets the previous call's result (a training state to step on); a stateless one ignores it.
  """
  start = time.perf_counter()
  carry = jax.block_until_ready(call(carry))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    carry = jax.block_until_ready(call(carry))
    times.append(time.perf_counter() - start)
  return {'first_seconds': first, 'median_ms': 1000 * float(np.median(times)),
          'min_ms': 1000 * float(np.min(times)), 'max_ms': 1000 * float(np.max(times))}


def _rates(amount: float, timing: dict, name: str) -> dict:
  """`amount` per second at the median, slowest and fastest of `timing` (from `_timed`):
  {name_median, name_min, name_max}."""
  return {f'{name}_median': 1000 * amount / timing['median_ms'],
          f'{name}_min': 1000 * amount / timing['max_ms'],
          f'{name}_max': 1000 * amount / timing['min_ms']}


def _peak_host_mib() -> float:
  """This process's peak resident memory so far (ru_maxrss; KiB on Linux, bytes on macOS), MiB."""
  peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  return peak / (2 ** 20 if sys.platform == 'darwin' else 2 ** 10)


def matmul_section() -> dict:
  """{'matmul/DTYPE': {'flops_per_second', ...}} for float32 and bfloat16: the best FLOP/s of a
  jitted square matmul over MATMUL_SIZES, each size's the median of 5 calls."""
  return {f'matmul/{dtype}': {
      'section': 'matmul', 'dtype': dtype, 'sizes': list(MATMUL_SIZES),
      'flops_per_second': peak_flops.matmul_flops_per_second(jnp.dtype(dtype), MATMUL_SIZES)}
          for dtype in MATMUL_DTYPES}


def ceilings(benchmarks: dict) -> dict:
  """{dtype: FLOP/s} of the matmul benchmarks among `benchmarks` (from `matmul_section`)."""
  return {b['dtype']: b['flops_per_second'] for b in benchmarks.values()
          if b['section'] == 'matmul'}


def data_benchmark(config: ml_collections.ConfigDict, steps: int, repeats: int = 5) -> dict:
  """Host-side tokens/s of `TrainData.batch` over `steps` consecutive steps, `repeats` times."""
  start = time.perf_counter()
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  objective = registry.make_objective(config, vocabulary)
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
  return {'section': 'data', 'tokens_per_second_median': float(np.median(rates)),
          'tokens_per_second_min': float(np.min(rates)),
          'tokens_per_second_max': float(np.max(rates)),
          'setup_seconds': setup, 'batch_size': config.train.batch_size,
          'objective': objective.name, 'architecture': objective.architecture,
          'seq_len': config.data.seq_len, 'steps_per_repeat': steps, 'repeats': repeats}


def ul2_variant(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with UL2's mixture of denoisers as its objective and the 100 extra ids (control
  tokens and sentinels) experiments/ul2_mixture_of_denoisers.py gives it."""
  config = copy.deepcopy(config)
  config.objective.name = 'ul2'
  config.data.extra_ids = max(config.data.extra_ids, 100)
  return config


def data_section(config: ml_collections.ConfigDict, steps: int, repeats: int = 5) -> dict:
  """{'data/OBJECTIVE': data_benchmark} for `config`'s objective and for UL2 on the same data."""
  results = {}
  for variant in (config, ul2_variant(config)):
    name = f'data/{variant.objective.name}'
    if name not in results:
      results[name] = data_benchmark(variant, steps, repeats)
  return results


def _write_corpus(directory: str, megabytes: int, file_mb: int = 64) -> int:
  """Writes a JSONL corpus of about `megabytes` MB into `directory`, files of `file_mb` MB;
  returns its bytes."""
  texts = [text for _, text in corpora.stdlib_code_documents()]
  written, number, files = 0, 0, 0
  while written < megabytes * 10**6:
    with open(os.path.join(directory, f'corpus{files:05d}.jsonl'), 'w', encoding='utf-8') as out:
      while out.tell() < file_mb * 10**6 and written < megabytes * 10**6:
        written += out.write(json.dumps({'text': f'# {number}\n' + texts[number % len(texts)]})
                             + '\n')
        number += 1
    files += 1
  return sum(os.path.getsize(os.path.join(directory, f)) for f in os.listdir(directory))


_CORPUS_EXPERIMENT = """
from experiments import quickstart

def get_config():
  config = quickstart.get_config()
  config.data.tasks = {{'corpus': {{'source': 'files', 'pattern': {pattern!r}, 'format': 'jsonl'}}}}
  config.data.mixture = {{'corpus': 1.0}}
  config.data.store_dir = {stores!r}
  config.train.steps = 1
  return config
"""
POD_BATCH_ROWS, POD_SEQ_LEN, POD_HOSTS = 512, 2048, 64  # a global batch of 1M tokens, 64 hosts


def _corpus(root: str, name: str, megabytes: int) -> tuple[str, int]:
  """An experiment file (experiments/quickstart.py, 1 step, on a `megabytes` MB JSONL corpus as
  task `corpus`, stores under `root`/name) and the corpus's bytes."""
  source = os.path.join(root, name, 'corpus')
  os.makedirs(source)
  size = _write_corpus(source, megabytes)
  experiment = os.path.join(root, name, 'experiment.py')
  with open(experiment, 'w', encoding='utf-8') as f:
    f.write(_CORPUS_EXPERIMENT.format(pattern=os.path.join(source, '*.jsonl'),
                                      stores=os.path.join(root, name, 'stores')))
  return experiment, size


def _command(args: list[str], workdir: str | None = None) -> dict:
  """Runs `python -m ARGS` in `workdir`; its wall seconds, peak resident memory (MiB, its own
  and its children's: wait4's rusage) and output."""
  with tempfile.TemporaryFile('w+') as out, tempfile.TemporaryFile('w+') as err:
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, '-m', *args], cwd=workdir, stdout=out, stderr=err)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    out.seek(0)
    err.seek(0)
    if os.waitstatus_to_exitcode(status):
      raise RuntimeError(f'{args} failed:\n{err.read()[-3000:]}')
    return {'seconds': seconds, 'peak_rss_mib': usage.ru_maxrss / 1024, 'stdout': out.read()}


def host_input_benchmark(config: ml_collections.ConfigDict, steps: int) -> dict:
  """Tokens/s of the rows one host of POD_HOSTS computes of a global batch of POD_BATCH_ROWS x
  POD_SEQ_LEN tokens (TrainData.batches: Grain, data.prefetch threads), as training reads them."""
  config = copy.deepcopy(config)
  config.data.seq_len, config.train.batch_size = POD_SEQ_LEN, POD_BATCH_ROWS
  if config.objective.name != 'causal_lm':  # UL2's R-denoiser spans on 2048 tokens: 256 sentinels
    config.data.extra_ids = max(config.data.extra_ids, 262)
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  objective = registry.make_objective(config, vocabulary)
  tasks.register_config_tasks(config.data)
  start = time.perf_counter()
  packing = rows_lib.build_rows('corpus', config.data.vocabulary, config.data.store_dir,
                                rows_lib.recipe(objective),
                                build.pipeline_options('DirectRunner'))
  pack_seconds = time.perf_counter() - start
  data = pipeline.TrainData(config.data, POD_BATCH_ROWS, config.seed, config.train.steps,
                            objective)
  rows = np.arange(POD_BATCH_ROWS // POD_HOSTS)  # host 0's rows when the data axis spans hosts
  batches = data.batches(0, steps + 1, rows, config.data.prefetch)
  next(batches)  # the first batch: threads started, the shards' indices read
  start = time.perf_counter()
  for _ in range(steps):
    next(batches)
  seconds = time.perf_counter() - start
  return {'section': 'build', 'tokens_per_second': len(rows) * objective.budgets[-1] * steps
          / seconds, 'rows_per_step': len(rows), 'global_batch_rows': POD_BATCH_ROWS,
          'seq_len': POD_SEQ_LEN, 'steps': steps, 'objective': objective.name,
          'prefetch_threads': config.data.prefetch, 'pack_seconds': pack_seconds,
          'pack_source_mb_per_second': packing['num_tokens'] / 1e6 / pack_seconds,
          'num_rows': packing['num_rows']}


def build_section(megabytes: int, steps: int) -> dict:
  """Pod-scale data on this machine, a `megabytes` MB corpus against a 10 MB one:
  `build/documents_workers_1` (Beam, in this process), `build/command_MB` (launch.build_data with
  one worker per core: documents and rows), `build/first_step_MB` (launch.train for 1 step: wall
  seconds and peak RSS), `build/host_input/OBJECTIVE` (`host_input_benchmark`)."""
  results = {}
  repository = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as root:
    corpora_ = {mb: _corpus(root, f'corpus_{mb}mb', mb) for mb in (10, megabytes)}
    experiment, size = corpora_[megabytes]
    tasks.register(tasks.spec_from_config('bench_corpus', {
        'source': 'files', 'pattern': os.path.join(root, f'corpus_{megabytes}mb', 'corpus',
                                                   '*.jsonl'), 'format': 'jsonl'}))
    start = time.perf_counter()
    build.build([('bench_corpus', 'train'), ('bench_corpus', 'validation')], 'byte',
                os.path.join(root, 'documents_1'), build.pipeline_options('DirectRunner',
                                                                          num_workers=1))
    seconds = time.perf_counter() - start
    results['build/documents_workers_1'] = {
        'section': 'build', 'source_mb_per_second': size / 1e6 / seconds, 'seconds': seconds,
        'source_mb': size / 1e6, 'workers': 1}
    for mb, (experiment, size) in corpora_.items():
      built = _command(['launch.build_data', f'--config={experiment}'], repository)
      results[f'build/command_{mb}mb'] = {
          'section': 'build', 'source_mb_per_second': size / 1e6 / built['seconds'],
          'seconds': built['seconds'], 'source_mb': size / 1e6, 'workers': os.cpu_count(),
          'printed': built['stdout'].strip().splitlines()}
    for mb, (experiment, _) in corpora_.items():
      run = _command(['launch.train', f'--config={experiment}',
                      f'--workdir={os.path.join(root, f"run_{mb}mb")}'], repository)
      results[f'build/first_step_{mb}mb'] = {
          'section': 'build', 'seconds': run['seconds'], 'peak_rss_mib': run['peak_rss_mib'],
          'corpus_mb': mb}
    config = runpy.run_path(experiment)['get_config']()
    for variant in (config, ul2_variant(config)):
      results[f'build/host_input/{variant.objective.name}'] = host_input_benchmark(variant, steps)
  return results


def preset_config(preset: Preset, dtype: str) -> ml_collections.ConfigDict:
  """research/defaults.py's config with `preset`'s sizes and compute dtype, not validated (the byte
  vocabulary is larger than the preset's; the benchmarks feed ids below vocab_size themselves)."""
  config = defaults.get_config()
  config.model.update(d_model=preset.d_model, num_layers=preset.num_layers,
                      num_heads=preset.num_heads, head_dim=preset.d_model // preset.num_heads,
                      mlp_dim=preset.mlp_dim, vocab_size=preset.vocab_size, dtype=dtype)
  config.data.seq_len, config.train.batch_size = preset.seq_len, preset.batch_size
  config.train.loss_chunk = preset.loss_chunk
  return config


def random_batch(preset: Preset, seed: int = 0) -> dict:
  """A causal-LM host batch of `preset`'s shape (research/data/pipeline.py's format): random
  `targets` below vocab_size, one document per row, `inputs` the targets shifted right."""
  shape = (preset.batch_size, preset.seq_len)
  targets = np.random.default_rng(seed).integers(0, preset.vocab_size, shape, dtype=np.int32)
  segment_ids = np.ones(shape, np.int32)
  return {'inputs': causal_lm.causal_lm_example(targets, segment_ids), 'targets': targets,
          'segment_ids': segment_ids,
          'positions': np.broadcast_to(np.arange(preset.seq_len, dtype=np.int32), shape).copy(),
          'weights': np.ones(shape, np.float32)}


def _trainer(preset: Preset, dtype: str) -> train.Trainer:
  """A Trainer of `preset` in compute dtype `dtype` on the first device."""
  return train.Trainer(preset_config(preset, dtype), jax.devices()[:1])


def _model_numbers(trainer: train.Trainer, preset: Preset, dtype: str, steps: int) -> dict:
  """The fields every train and eval benchmark shares: what ran, and its size."""
  sizes = {k: v for k, v in dataclasses.asdict(preset).items() if k not in ('name', 'steps')}
  return {'preset': preset.name, 'dtype': dtype, **sizes,
          'tokens_per_step': preset.batch_size * preset.seq_len, 'timed_steps': steps,
          'matmul_params': transformer.matmul_params(trainer.model_config)}


def train_benchmark(preset: Preset, dtype: str, ceiling: float, steps: int) -> dict:
  """Training throughput of `preset` in `dtype`: Trainer.step timed over `steps` steps after the
  first, on one random batch.

  Returns step ms and tokens/s (median, min, max), model FLOP/s (flops_per_token x median
  tokens/s), MFU against `ceiling` (the measured matmul FLOP/s of `dtype`), `compile_seconds` (the
  first step's time less a median step's: tracing and compilation) and
  `process_peak_host_mib_so_far` (ru_maxrss after the steps: the process's peak so far, which
  includes every benchmark run before this one), and `step_temp_mib`, the temporary memory XLA
  allocates for the compiled step (activations and the like: what is not parameters, optimizer
  state or the batch).
  """
  trainer = _trainer(preset, dtype)
  batch = trainer.place(random_batch(preset))
  rng = jax.random.key(0)
  timing = _timed(lambda state: trainer.step(state, batch, rng)[0], steps, trainer.init_state())
  # After the timed steps, whose first compiles: this lowering then hits the compilation cache.
  temp_mib = trainer.step_memory(batch, rng).temp_size_in_bytes / 2 ** 20
  tokens = preset.batch_size * preset.seq_len
  flops_per_token = transformer.flops_per_token(trainer.model_config, preset.seq_len)
  tokens_per_second = _rates(tokens, timing, 'tokens_per_second')
  model_flops = flops_per_token * tokens_per_second['tokens_per_second_median']
  return {'section': 'train', **_model_numbers(trainer, preset, dtype, steps),
          'step_ms_median': timing['median_ms'], 'step_ms_min': timing['min_ms'],
          'step_ms_max': timing['max_ms'], **tokens_per_second,
          'flops_per_token': flops_per_token, 'model_flops_per_second': model_flops,
          'matmul_ceiling_flops_per_second': ceiling, 'mfu': model_flops / ceiling,
          'first_step_seconds': timing['first_seconds'],
          'compile_seconds': timing['first_seconds'] - timing['median_ms'] / 1000,
          'process_peak_host_mib_so_far': _peak_host_mib(), 'step_temp_mib': temp_mib}


def eval_benchmark(preset: Preset, dtype: str, steps: int) -> dict:
  """Forward-only throughput of `preset` in `dtype`: Trainer.eval_step (loss sums of a validation
  batch) timed over `steps` calls after the first."""
  trainer = _trainer(preset, dtype)
  host = random_batch(preset)
  batch = trainer.place({**host, 'text_weights': host['weights']})
  params = trainer.init_state().params
  timing = _timed(lambda _: trainer.eval_step(params, batch), steps)
  return {'section': 'eval', **_model_numbers(trainer, preset, dtype, steps),
          'step_ms_median': timing['median_ms'], 'step_ms_min': timing['min_ms'],
          'step_ms_max': timing['max_ms'],
          **_rates(preset.batch_size * preset.seq_len, timing, 'tokens_per_second'),
          'compile_seconds': timing['first_seconds'] - timing['median_ms'] / 1000}


def _steps(preset: Preset, steps: int) -> int:
  return steps or preset.steps


def train_section(presets: Sequence[Preset], dtypes: Sequence[str], matmul_ceilings: dict,
                  steps: int = 0) -> dict:
  """{'train/PRESET/DTYPE': train_benchmark} for every preset and dtype; `steps` 0 = the
  preset's; `matmul_ceilings` {dtype: FLOP/s} (`ceilings`) gives each its MFU's denominator."""
  return {f'train/{p.name}/{d}': train_benchmark(p, d, matmul_ceilings[d], _steps(p, steps))
          for p in presets for d in dtypes}


def eval_section(presets: Sequence[Preset], dtypes: Sequence[str], steps: int = 0) -> dict:
  """{'eval/PRESET/DTYPE': eval_benchmark} for every preset and dtype; `steps` 0 = the preset's."""
  return {f'eval/{p.name}/{d}': eval_benchmark(p, d, _steps(p, steps))
          for p in presets for d in dtypes}


def generate_benchmark(preset: Preset, dtype: str, prompt_len: int = 64, new_tokens: int = 64,
                       repeats: int = 3) -> dict:
  """New tokens per second of greedy KV-cache generation: preset.batch_size random prompts of
  `prompt_len` tokens, `new_tokens` each (no stop id, so every row runs to the end); one
  generate call (prefill and decoding) timed `repeats` times after a warm-up call."""
  trainer = _trainer(preset, dtype)
  params = trainer.init_state().params
  prompts_BP = np.random.default_rng(0).integers(0, preset.vocab_size,
                                                 (preset.batch_size, prompt_len), dtype=np.int32)
  lengths_B = np.full(preset.batch_size, prompt_len, np.int32)
  key = jax.random.key(0)
  timing = _timed(lambda _: generate.generate(trainer.model, params, prompts_BP, lengths_B, key,
                                              new_tokens, stop_ids=()), repeats)
  return {'section': 'generate', 'preset': preset.name, 'dtype': dtype,
          'batch_size': preset.batch_size, 'prompt_len': prompt_len, 'new_tokens': new_tokens,
          'sampling': 'greedy', 'repeats': repeats, 'call_ms_median': timing['median_ms'],
          'call_ms_min': timing['min_ms'], 'call_ms_max': timing['max_ms'],
          **_rates(preset.batch_size * new_tokens, timing, 'new_tokens_per_second'),
          'compile_seconds': timing['first_seconds'] - timing['median_ms'] / 1000}


def generate_section(preset: Preset, dtypes: Sequence[str], **kwargs) -> dict:
  """{'generate/PRESET/DTYPE': generate_benchmark} for every dtype; `kwargs` go to it."""
  return {f'generate/{preset.name}/{d}': generate_benchmark(preset, d, **kwargs) for d in dtypes}


def moe_section(config, repeats: int = 10) -> dict:
  """{'moe': ...}: forward + backward milliseconds of the config's MoE layer and of a dense SwiGLU
  of the same active width, on one global batch of random activations."""
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
    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    results[f'{name}_milliseconds'] = _timed(lambda _, g=grad, p=params: g(p, x_BLD),
                                             repeats)['median_ms']
  return {'moe': {
      'section': 'moe', **results,
      'moe_over_dense': results['moe_milliseconds'] / results['dense_milliseconds'],
      'experts': c.moe_experts, 'top_k': c.moe_top_k, 'expert_dim': c.expert_dim,
      'capacity_factor': c.moe_capacity_factor, 'tokens': shape[0] * shape[1],
      'd_model': c.d_model, 'dtype': c.dtype}}


def _nbytes(tree) -> int:
  """The bytes of `tree`'s array leaves (arrays or ShapeDtypeStructs)."""
  return sum(math.prod(x.shape) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def _is_galore(node) -> bool:
  return isinstance(node, optimizers.ScaleByGaLoreState)


def _state_bytes(trainer: train.Trainer) -> dict:
  """{'opt_state_bytes', 'param_bytes'} of `trainer`'s abstract initial state, and under GaLore
  'projected_kernels': the kernels it projects (a scanned stack of layers counts once)."""
  state = trainer.abstract_state
  result = {'opt_state_bytes': _nbytes(state.opt_state), 'param_bytes': _nbytes(state.params)}
  galore = [s for s in jax.tree.leaves(state.opt_state, is_leaf=_is_galore) if _is_galore(s)]
  if galore:
    result['projected_kernels'] = sum(len(jax.tree.leaves(s.projection)) for s in galore)
  return result


def optimizer_state_bytes(config: ml_collections.ConfigDict) -> dict:
  """`_state_bytes` of a Trainer of `config` on the first device, from its abstract initial
  state (jax.eval_shape: nothing allocated)."""
  return _state_bytes(train.Trainer(config, jax.devices()[:1]))


def _at_refresh(state: train.TrainState) -> train.TrainState:
  """`state` with GaLore's update count at 0, so that its next step refreshes the projections."""
  return state.replace(opt_state=jax.tree.map(
      lambda s: s._replace(count=jnp.zeros_like(s.count)) if _is_galore(s) else s,
      state.opt_state, is_leaf=_is_galore))


def optimizer_benchmark(preset: Preset, optimizer: str, steps: int, rank: int = 0,
                        refresh_repeats: int = 3) -> dict:
  """Optimizer-state memory and step time of `preset` (float32) under train.optimizer
  `optimizer` ('galore' at rank `rank`): `opt_state_bytes`, `param_bytes` and for GaLore
  `projected_kernels` (`optimizer_state_bytes`), the step ms (median, min, max of `steps` after
  the compiling one; no projection is refreshed in them), `step_temp_mib` (XLA's temporaries of
  the step) and, for GaLore, `refresh_step_ms_median` (steps that compute the projections' SVDs,
  median of `refresh_repeats` after a first)."""
  config = preset_config(preset, 'float32')
  config.train.optimizer = optimizer
  if optimizer == 'galore':
    config.train.galore.rank = rank
  trainer = train.Trainer(config, jax.devices()[:1])
  batch = trainer.place(random_batch(preset))
  rng = jax.random.key(0)
  step = lambda state: trainer.step(state, batch, rng)[0]
  timing = _timed(step, steps, trainer.init_state())
  result = {'section': 'optimizer', **_model_numbers(trainer, preset, 'float32', steps),
            'optimizer': optimizer, **_state_bytes(trainer),
            'step_ms_median': timing['median_ms'], 'step_ms_min': timing['min_ms'],
            'step_ms_max': timing['max_ms'],
            'step_temp_mib': trainer.step_memory(batch, rng).temp_size_in_bytes / 2 ** 20}
  if optimizer == 'galore':
    refresh = _timed(lambda state: step(_at_refresh(state)), refresh_repeats,
                     trainer.init_state())
    result.update({'rank': rank, 'update_proj_gap': config.train.galore.update_proj_gap,
                   'scale': config.train.galore.scale,
                   'refresh_step_ms_median': refresh['median_ms']})
  return result


def optimizer_section(presets: Sequence[Preset], ranks: Sequence[int], steps: int = 0,
                      refresh_repeats: int = 3) -> dict:
  """{'optimizer/PRESET/adamw', 'optimizer/PRESET/galore_rRANK': optimizer_benchmark} for every
  preset and rank; `steps` 0 = the preset's."""
  results = {}
  for p in presets:
    results[f'optimizer/{p.name}/adamw'] = optimizer_benchmark(p, 'adamw', _steps(p, steps))
    for rank in ranks:
      results[f'optimizer/{p.name}/galore_r{rank}'] = optimizer_benchmark(
          p, 'galore', _steps(p, steps), rank, refresh_repeats)
  return results

def _si(value: float, unit: str) -> str:
  """`value` to 3 significant digits with an SI prefix: '170 GFLOP/s', '8.4 M tokens/s'."""
  factor, prefix = next(((f, p) for f, p in ((1e12, 'T'), (1e9, 'G'), (1e6, 'M'), (1e3, 'k'))
                         if abs(value) >= f), (1, ''))
  number = f'{value / factor:.3g}'
  if unit[:1].isupper():
    return f'{number} {prefix}{unit}'
  return ' '.join(filter(None, (number, prefix, unit)))


def _spread(benchmark: dict, key: str, unit: str) -> str:
  """'16.8 M - 23.5 M tokens/s': the min and max of `key` in `benchmark`."""
  return f"{_si(benchmark[key + '_min'], '')} - {_si(benchmark[key + '_max'], unit)}"


def _ms(milliseconds: float) -> str:
  return f'{milliseconds:.0f}' if milliseconds >= 100 else f'{milliseconds:.3g}'


def table_row(name: str, b: dict) -> str:
  """One markdown table row of benchmark `b`: | name | value | spread | details |."""
  section = b['section']
  if section == 'matmul':
    cells = (_si(b['flops_per_second'], 'FLOP/s'), '',
             f"best of sizes {', '.join(map(str, b['sizes']))}, median of 5 each")
  elif section == 'data':
    cells = (_si(b['tokens_per_second_median'], 'tokens/s'),
             _spread(b, 'tokens_per_second', 'tokens/s'),
             f"{b['objective']} {b['architecture']}, {b['batch_size']} x {b['seq_len']} per batch, "
             f"{b['repeats']} x {b['steps_per_repeat']} batches, setup {b['setup_seconds']:.1f} s")
  elif section in ('train', 'eval'):
    details = (f"{b['batch_size']} x {b['seq_len']}, step {_ms(b['step_ms_median'])} ms "
               f"({_ms(b['step_ms_min'])} - {_ms(b['step_ms_max'])}, {b['timed_steps']} steps), "
               f"compile {b['compile_seconds']:.1f} s")
    if section == 'train':
      details += (f", model {_si(b['model_flops_per_second'], 'FLOP/s')}, MFU "
                  f"{100 * b['mfu']:.1f}% of {_si(b['matmul_ceiling_flops_per_second'], 'FLOP/s')}"
                  f", XLA temporaries {b['step_temp_mib']:.0f} MiB, peak host memory so far "
                  f"{b['process_peak_host_mib_so_far']:.0f} MiB")
    cells = (_si(b['tokens_per_second_median'], 'tokens/s'),
             _spread(b, 'tokens_per_second', 'tokens/s'), details)
  elif section == 'generate':
    cells = (_si(b['new_tokens_per_second_median'], 'new tokens/s'),
             _spread(b, 'new_tokens_per_second', 'new tokens/s'),
             f"{b['batch_size']} x ({b['prompt_len']} prompt + {b['new_tokens']} new), "
             f"{b['sampling']}, call {_ms(b['call_ms_median'])} ms, compile "
             f"{b['compile_seconds']:.1f} s")
  elif section == 'build' and 'tokens_per_second' in b:
    cells = (_si(b['tokens_per_second'], 'tokens/s'), '',
             f"{b['objective']}: {b['rows_per_step']} of {b['global_batch_rows']} rows x "
             f"{b['seq_len']} per step, {b['steps']} steps, {b['prefetch_threads']} Grain threads; "
             f"{b['num_rows']} rows packed in {b['pack_seconds']:.1f} s "
             f"({b['pack_source_mb_per_second']:.1f} MB of tokens/s)")
  elif section == 'build' and 'peak_rss_mib' in b:
    cells = (f"{b['seconds']:.1f} s", '',
             f"launch.train, 1 step on the {b['corpus_mb']} MB corpus, peak RSS "
             f"{b['peak_rss_mib']:.0f} MiB")
  elif section == 'build':
    cells = (f"{b['source_mb_per_second']:.1f} MB/s", '',
             f"{b['source_mb']:.0f} MB of JSONL in {b['seconds']:.1f} s, {b['workers']} DirectRunner "
             'worker(s), byte vocabulary')
  elif section == 'optimizer':
    details = (f"{b['optimizer']}"
               + (f" rank {b['rank']} ({b['projected_kernels']} kernels projected, refresh every "
                  f"{b['update_proj_gap']} steps)" if 'rank' in b else '')
               + f", parameters {b['param_bytes'] / 2 ** 20:.2f} MiB (state "
               f"{b['opt_state_bytes'] / b['param_bytes']:.2f} x), {b['batch_size']} x "
               f"{b['seq_len']}, step {_ms(b['step_ms_median'])} ms ({_ms(b['step_ms_min'])} - "
               f"{_ms(b['step_ms_max'])}, {b['timed_steps']} steps)"
               + (f", refreshing step {_ms(b['refresh_step_ms_median'])} ms"
                  if 'refresh_step_ms_median' in b else '')
               + f", XLA temporaries {b['step_temp_mib']:.0f} MiB")
    cells = (f"{b['opt_state_bytes'] / 2 ** 20:.2f} MiB state", '', details)
  else:
    cells = (f"{b['moe_over_dense']:.2f} x dense", '',
             f"MoE {_ms(b['moe_milliseconds'])} ms, dense {_ms(b['dense_milliseconds'])} ms, "
             f"{b['experts']} experts top-{b['top_k']}, {b['tokens']} tokens")
  return '| ' + ' | '.join((name, *cells)) + ' |'


def table(benchmarks: dict) -> str:
  """The markdown table of `benchmarks`, one row each."""
  return '\n'.join(['| benchmark | value (median) | spread (min - max) | details |',
                    '|---|---:|---|---|', *(table_row(n, b) for n, b in benchmarks.items())])


@cli.exits_on_user_error
def main(argv):
  del argv
  start = time.perf_counter()
  config = cli.CONFIG.value
  presets = [PRESETS[name] for name in _PRESETS.value]
  dtypes, steps = _DTYPES.value, _TRAIN_STEPS.value
  wanted = _SECTIONS.value
  # The train section's MFU needs this process's ceiling: the matmul section runs first.
  order = [s for s in SECTIONS if s in wanted or (s == 'matmul' and 'train' in wanted)]
  benchmarks = {}
  sections = {
      'matmul': matmul_section,
      'data': lambda: data_section(config, _DATA_STEPS.value),
      'train': lambda: train_section(presets, dtypes, ceilings(benchmarks), steps),
      'eval': lambda: eval_section(presets, dtypes, steps),
      'generate': lambda: generate_section(PRESETS['tiny'], dtypes),
      'build': lambda: build_section(_BUILD_MB.value, _DATA_STEPS.value),
      'moe': lambda: moe_section(config),
      'optimizer': lambda: optimizer_section(presets, [int(r) for r in _GALORE_RANKS.value],
                                             steps)}
  for section in order:
    for name, benchmark in sections[section]().items():
      benchmarks[name] = benchmark
      print(table_row(name, benchmark), file=sys.stderr, flush=True)
  results = {'machine': {'processor': platform.processor() or platform.machine(),
                         'cpus': os.cpu_count(), 'jax': jax.__version__,
                         'python': platform.python_version(),
                         'devices': [d.device_kind for d in jax.local_devices()]},
             'wall_seconds': time.perf_counter() - start, 'benchmarks': benchmarks}
  cli.write_atomically(_OUT.value, json.dumps(results, indent=2))
  print(table(benchmarks))


if __name__ == '__main__':
  flags.FLAGS.set_default('config', 'experiments/quickstart.py')
  cli.run(main)
