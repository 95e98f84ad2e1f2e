"""Shows what an experiment trains on: the examples of any step, and the realised data mixture.

  python -m launch.data --config=experiments/NAME.py [--config.a.b=V ...] [--step=S] [--show=N] \
      [--dump=N --out=F.jsonl] [--proportion_steps=M]

reads exactly the batches `launch.train` would (research/data/pipeline.py; no workdir needed) and

- `--show=N` prints the first N examples (rows) of the global batches from step S on, step by step
  and row by row: the row's task and packed row, then per segment the document id, its metadata,
  its tokens and loss-bearing tokens, and its decoded text (control characters escaped, long texts
  cut); for denoising objectives also the segment's denoiser and its inputs and targets, decoded
  with sentinel k shown as `<Xk>` as seqio shows it and the mode tokens by name ('[NLU]', ...);
- always prints the mixture realised over steps S .. S+M-1, counted from the sampler alone (no
  batch is assembled), next to the configured weights of the stages those steps fall in and the
  replay mixture, and how many epochs of each task have been read by the end of those steps;
- `--dump=N --out=F.jsonl` writes the same first N examples as JSON lines: step, index (row in the
  batch), task, row (packed row in the task), the per-token lists of the model batch (inputs,
  targets, segment_ids, positions, weights; prefix or encoder_* for denoising objectives), and
  documents: [{'segment', 'id', 'metadata'}] per segment, with, for denoising objectives, the
  segment's 'denoiser', 'mean_span', 'rate' and 'noise' (its 0/1 noise mask over the segment's
  original tokens), so the denoisers' statistics can be checked from outside.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import functools
import itertools
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import ml_collections
import numpy as np
import seqio
from absl import flags

from research import defaults
from research import config as config_lib
from research import errors
from research.data import pipeline, sampler, shapes, vocabularies
from research.objectives import registry

_STEP = flags.DEFINE_integer('step', 0, 'First global step shown, dumped and counted.')
_SHOW = flags.DEFINE_integer('show', 1, 'Print the first this many examples (rows of the global '
                             'batches) from --step on.')
_DUMP = flags.DEFINE_integer('dump', 0, 'Write the first this many examples from --step on to '
                             '--out, one JSON object a line.')
# Other commands define --out too; allow_override lets their modules load in one process (tests).
_OUT = flags.DEFINE_string('out', None, 'The JSONL file --dump writes (atomically).',
                           allow_override=True)
_PROPORTION_STEPS = flags.DEFINE_integer('proportion_steps', 1000, 'Count the realised mixture '
                                         'over this many steps from --step on.')
flags.mark_flag_as_required('config')

MAX_SHOWN_CHARS = 300  # of a segment's text


def check_flags(step: int, show: int, dump: int, out: str | None, proportion_steps: int) -> None:
  """Fails naming the flag unless the flags make sense together (before any data is read)."""
  for name, value in (('step', step), ('show', show), ('dump', dump)):
    if value < 0:
      raise errors.UserError(f'--{name}={value} must be >= 0.')
  if proportion_steps <= 0:
    raise errors.UserError(f'--proportion_steps={proportion_steps} must be positive.')
  if dump and not out:
    raise errors.UserError(f'--dump={dump} needs --out=F.jsonl, the file the examples are written '
                           'to.')
  if out and not dump:
    raise errors.UserError(f'--out={out} is written only with --dump=N; add --dump with the number '
                           'of examples to write.')


def examples(data: pipeline.TrainData, start_step: int) -> Iterator[dict]:
  """The examples of the global batches from `start_step` on, step by step, row by row.

  Each is a dict of `step`, `index` (its row in the batch), `task`, `row` (its packed row in the
  task), `arrays` (its arrays of the model batch: inputs, targets, segment_ids, ... as the
  objective lays them out), `packed` (the packed row before the objective: its original tokens
  `targets`, `segment_ids` and `documents`, each token's index in the task's train store) and
  `noise` (per segment, the denoising record of denoising objectives; empty otherwise).
  """
  for step in itertools.count(start_step):
    batch, noise = data.batch(step, with_noise=True)
    tasks_B, rows_B = data.example_sources(step)
    for index, (task, row) in enumerate(zip(tasks_B.tolist(), rows_B.tolist())):
      yield {'step': step, 'index': index, 'task': data.task_names[task], 'row': row,
             'arrays': {k: v[index] for k, v in batch.items()},
             'packed': data.row(task, row, step), 'noise': noise[index]}


def segments(example: dict, document: Callable[[int], tuple[str, dict]]) -> list[dict]:
  """The segments of `example` in order, each with its document (`document(index)`: its id and
  metadata, TaskRows.document) and its tokens.

  Each is a dict of `segment` (the segment id), the document's `id` and `metadata`, the segment's
  original `tokens`, its number of `loss_tokens` in the model batch and, for denoising objectives,
  its `denoiser`, `mean_span`, `rate` and `noise` (0/1 per original token).
  """
  packed, arrays = example['packed'], example['arrays']
  found = []
  for segment in np.unique(packed['segment_ids'][packed['segment_ids'] > 0]).tolist():
    in_segment = packed['segment_ids'] == segment
    doc_id, metadata = document(int(packed['documents'][in_segment][0]))  # one document's chunk
    found.append({'segment': segment, 'id': doc_id,
                  'metadata': metadata, 'tokens': packed['targets'][in_segment],
                  'loss_tokens': int(np.sum(arrays['weights'][arrays['segment_ids'] == segment]
                                            > 0)),
                  **(example['noise'][segment - 1] if example['noise'] else {})})
  return found


def shown_text(text: str, max_chars: int = MAX_SHOWN_CHARS) -> str:
  """`text` as a one-line Python literal (control characters escaped), cut after `max_chars`."""
  if len(text) <= max_chars:
    return repr(text)
  return f'{text[:max_chars]!r}... (+{len(text) - max_chars} characters)'


def decoded(ids: np.ndarray, vocabulary: seqio.Vocabulary) -> str:
  """Token ids as text as seqio shows them: sentinel k as `<Xk>`, a control token by its name
  ('[NLU]', ...), the ids between them decoded by `vocabulary`."""
  named = {vocabularies.sentinel_id(vocabulary, k): f'<X{k}>'
           for k in range(vocabularies.num_sentinels(vocabulary))}
  named.update({vocabularies.control_token_id(vocabulary, name): name
                for name in vocabularies.CONTROL_TOKENS[:vocabulary.extra_ids]})
  pieces, run = [], []
  for token in ids.tolist():
    if token in named:
      pieces += [vocabulary.decode(run), named[token]]
      run = []
    else:
      run.append(token)
  return ''.join(pieces + [vocabulary.decode(run)])


def format_example(example: dict, example_segments: Sequence[dict],
                   vocabulary: seqio.Vocabulary) -> str:
  """An example as text: a header line, then two lines per segment (its document, its text), and
  for denoising objectives a third with the denoiser and the model's inputs and targets."""
  padding = int(np.sum(example['packed']['segment_ids'] == 0))
  lines = [f"step {example['step']}, row {example['index']} of the batch: task "
           f"{example['task']}, packed row {example['row']}, {len(example_segments)} segments, "
           f'{padding} padding tokens']
  arrays = example['arrays']
  for segment in example_segments:
    lines.append(f"  segment {segment['segment']}: document {segment['id']} "
                 f"{json.dumps(segment['metadata'], sort_keys=True)}, {len(segment['tokens'])} "
                 f"tokens, {segment['loss_tokens']} loss-bearing")
    lines.append('    ' + shown_text(vocabulary.decode(segment['tokens'].tolist())))
    if 'denoiser' in segment:
      in_segment = arrays['segment_ids'] == segment['segment']
      inputs = (arrays['encoder_inputs'][arrays['encoder_segment_ids'] == segment['segment']]
                if 'encoder_inputs' in arrays else
                arrays['targets'][in_segment & (arrays['weights'] == 0)])
      targets = arrays['targets'][in_segment & (arrays['weights'] > 0)]
      lines.append(f"    {segment['denoiser']} (mean span {segment['mean_span']}, rate "
                   f"{segment['rate']}, {sum(segment['noise'])} noise tokens): inputs "
                   f'{shown_text(decoded(inputs, vocabulary))} targets '
                   f'{shown_text(decoded(targets, vocabulary))}')
  return '\n'.join(lines)


def dump_record(example: dict, example_segments: Sequence[dict]) -> dict:
  """An example as one JSON-ready dict (the --dump line)."""
  return {**{k: example[k] for k in ('step', 'index', 'task', 'row')},
          **{k: v.tolist() for k, v in example['arrays'].items()},
          'documents': [{k: v for k, v in s.items() if k not in ('tokens', 'loss_tokens')}
                        for s in example_segments]}


def write_jsonl(path: str, records: Sequence[dict]) -> None:
  """Writes one JSON object a line to a temporary sibling of `path`, then renames it into place."""
  tmp_path = f'{path}.tmp-{os.getpid()}'
  try:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp_path, 'w', encoding='utf-8') as f:
      f.writelines(json.dumps(record) + '\n' for record in records)
    os.replace(tmp_path, path)
  except OSError as e:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
    raise errors.UserError(f'Cannot write --out={path} ({e.strerror}); give a file path in a '
                           'writable directory.') from e


def realised_proportions(data: pipeline.TrainData, start_step: int, num_steps: int) -> np.ndarray:
  """[num_tasks] share of each of `data.task_names` in the examples of `num_steps` steps."""
  counts = np.zeros(len(data.task_names), np.int64)
  for step in range(start_step, start_step + num_steps):
    tasks_B, _ = data.example_sources(step)
    counts += np.bincount(tasks_B, minlength=len(counts))
  return counts / counts.sum()


def stage_steps(stages: Sequence[sampler.Stage], start_step: int,
                stop_step: int) -> list[tuple[sampler.Stage, int]]:
  """The stages that steps [start_step, stop_step) fall in, each with its number of those steps."""
  ends = [stage.start_step for stage in stages[1:]] + [stop_step]
  spans = [(stage, min(end, stop_step) - max(stage.start_step, start_step))
           for stage, end in zip(stages, ends)]
  return [(stage, steps) for stage, steps in spans if steps > 0]


def _weights_vector(weights: Mapping[str, float], key: str,
                    task_names: Sequence[str]) -> np.ndarray:
  """[num_tasks] normalised `weights` of `task_names` (0 for a task they do not name)."""
  normalised = sampler.normalised_weights(weights, key)
  return np.array([normalised.get(name, 0.0) for name in task_names])


def _percent(share: float) -> str:
  return f'{100 * share:.2f}%'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  """Text table lines: the first column left-aligned, the others right-aligned."""
  widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
  return ['  ' + '  '.join(cell.ljust(w) if i == 0 else cell.rjust(w)
                           for i, (cell, w) in enumerate(zip(row, widths)))
          for row in [header, *rows]]


def format_mixture(data: pipeline.TrainData, config: ml_collections.ConfigDict, start_step: int,
                   num_steps: int) -> str:
  """The realised mixture of steps [start_step, start_step + num_steps), next to the configured one.

  Columns: realised share, expected share (the stages' weights by their number of those steps,
  mixed with the replay mixture at its share of the batch; with power-law replay, each step's
  mixture weights averaged), each stage's weights, the constant replay weights, and the epochs of
  each task read by the end of the last step.
  """
  names, last = data.task_names, start_step + num_steps - 1
  batch_size = config.train.batch_size
  spans = stage_steps(data.plan.stages, start_step, last + 1)
  vectors = [_weights_vector(stage.weights, 'data.mixture', names) for stage, _ in spans]
  main_mixture = sum(v * steps for v, (_, steps) in zip(vectors, spans)) / num_steps
  columns = {'realised': realised_proportions(data, start_step, num_steps),
             'expected': main_mixture,
             **{f'stage@{stage.start_step}': v for v, (stage, _) in zip(vectors, spans)}}
  replay_rows, replay_config = data.plan.num_replay, config.data.replay
  if replay_rows and replay_config.sampler == 'constant':
    replay = _weights_vector(data.plan.replay[0].weights, 'data.replay.mixture', names)
    share = replay_rows / batch_size
    columns['expected'] = (1 - share) * main_mixture + share * replay
    columns['replay'] = replay
  elif replay_rows:  # the power law's weights change with the step
    columns['expected'] = np.mean([list(data.mixture_weights(step).values())
                                   for step in range(start_step, last + 1)], axis=0)
  epochs = data.epochs_before(last + 1)
  rows = [[name, *(_percent(column[i]) for column in columns.values()), f'{epochs[name]:.2f}']
          for i, name in enumerate(names)]
  lines = [f'Mixture of steps {start_step} to {last} ({num_steps * batch_size} examples):',
           *_table(['task', *columns, 'epochs'], rows),
           'stage@S: the weights of the mixture stage from step S on (data.mixture, data.stages).',
           f"epochs: how often each task's packed rows have been read by the end of step {last}."]
  if replay_rows and replay_config.sampler == 'constant':
    lines.append(f'replay: the last {replay_rows} of every {batch_size} rows come from '
                 f'data.replay.mixture (data.replay.fraction={replay_config.fraction}).')
  elif replay_rows:
    lines.append(f'replay: the last {replay_rows} of every {batch_size} rows replay the tasks of '
                 'earlier stages, each by (steps since last trained + 1)^-'
                 f'{replay_config.exponent} (data.replay.sampler=power_law), once one exists.')
  return '\n'.join(lines)


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  step, show, dump, out = _STEP.value, _SHOW.value, _DUMP.value, _OUT.value
  check_flags(step, show, dump, out, _PROPORTION_STEPS.value)
  config = cli.CONFIG.value
  config_lib.check_schema(config, defaults.get_config())
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  (_, objective), *phases = registry.objective_phases(config, vocabulary)
  data = pipeline.TrainData(config.data, config.train.batch_size, config.seed, config.train.steps,
                            objective, phases=phases, shapes=shapes.shape_phases(config))
  chosen = [(example, segments(example, functools.partial(
      data.phase_at(example['step']).rows.document, example['task'])))
            for example in itertools.islice(examples(data, step), max(show, dump))]
  for example, example_segments in chosen[:show]:
    print(format_example(example, example_segments, vocabulary), end='\n\n')
  print(format_mixture(data, config, step, _PROPORTION_STEPS.value))
  if dump:
    write_jsonl(out, [dump_record(example, example_segments)
                      for example, example_segments in chosen[:dump]])
    print(f'Wrote {dump} examples (steps {step} to {chosen[dump - 1][0]["step"]}) to {out}.')


if __name__ == '__main__':
  cli.run(main)
