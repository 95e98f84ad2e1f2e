"""Continues prompts with a checkpoint's model: greedy decoding or sampling, with a key-value cache.

  python -m launch.generate --checkpoint=DIR --prompt='def f(x):' [--prompt=...] \
      [--prompt_file=F] [--max_new_tokens=64] [--temperature=0] [--sample_top_k=0] [--top_p=1] \
      [--seed=0] [--stop=eos] [--ban_control_tokens] [--num_samples=1] [--score=pep8] [--prepack]

DIR is a launch.train workdir (its latest checkpoint), one checkpoint WORKDIR/checkpoints/<step>, or
a launch.convert output; its config.json gives the model (decoder or encoder-decoder) and
data.vocabulary. Every --prompt and every non-blank line of --prompt_file is one prompt; they are
continued together as one batch (research/generate.py), on one device. A decoder reads the start
id the run trained with (data.start_id of its config.json: the vocabulary's BOS, or 0 for
vocabularies without one) and the prompt, as a bidirectional prefix when the run trained with a
denoising objective (prefix LM, UL2); an encoder-decoder's encoder reads the prompt and its decoder
starts from the start id. Control-token names in a prompt, such as '<|aligned|>' (conditional
training, research/objectives/control_tokens.py) or UL2's mode token '[S2S]', are those tokens when
the vocabulary has them (data.extra_ids).
--prepack packs the prompts of a causal decoder into fewer rows for the prefill
(research/generate.py; Zhao et al. 2024, arXiv 2404.09529): the same continuations from less
padded compute.

--temperature=0 is greedy decoding; above it tokens are sampled, from the --sample_top_k most
likely (0: all), then from the nucleus of probability --top_p, with --seed. A row ends at a --stop
id ('eos' or integer ids; empty: none) or after --max_new_tokens. With --ban_control_tokens (the
default) the control tokens and sentinels are never written, except the --allow names, which are
left out of the printed text (conditional training's '<|aligned|>', which the model learnt to put
before each line: --allow='<|aligned|>'); ids past the vocabulary's are never written. Each prompt
and its continuation are printed, decoded by the run's vocabulary; --num_samples continues every
prompt that many times (rows of one batch, each its own draw when sampling).

--score=SCORER scores the continuations instead of printing them: with a misalignment scorer of
conditional training ('pep8', research/objectives/control_tokens.py; Korbak et al. 2023, arXiv
2302.08582) it prints, per prompt, how misaligned the continuations are (`misalignment`: PEP 8
violations per line and per 1000 characters, the share of lines and of samples with one), the
mean ± standard error over the checkpoints (--checkpoint may then name several, such as the seeds
of one arm, or a launch.sweep directory: rows per arm, its runs those differing only in seed). A
continuation cut off by --max_new_tokens is scored without its unfinished last line.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

import math
import os

import jax
from absl import flags
from etils import epath

from research import errors, finished, generate

from research.analysis import report
from research.data import vocabularies
from research.objectives import control_tokens, registry

# --checkpoint is launch.score's and --seed launch.regmix's too, with the same types and defaults:
# allow_override lets the commands load in one process (tests). launch.regmix has --top_k.
_CHECKPOINT = cli.define_paths('checkpoint', None, 'The workdir or checkpoint directory to '
                               'generate with.', allow_override=True)
_PROMPT = flags.DEFINE_multi_string('prompt', [], 'A prompt to continue; repeat for several.')
_PROMPT_FILE = flags.DEFINE_string('prompt_file', None, 'A text file of prompts, one a line.')
_MAX_NEW_TOKENS = flags.DEFINE_integer('max_new_tokens', 64, 'Tokens to generate at most per '
                                       'prompt.')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.0, 'Sampling temperature; 0 = greedy.')
_TOP_K = flags.DEFINE_integer('sample_top_k', 0, 'Sample from the k most likely tokens (0 = all).')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Sample from the nucleus: the most likely tokens whose '
                            'probability reaches top_p (1 = all).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the sampling key.', allow_override=True)
_STOP = flags.DEFINE_list('stop', ['eos'], "Ids that end a continuation: 'eos' or integer token "
                          'ids (the byte vocabulary: byte + 3); empty for none.')
_NUM_SAMPLES = flags.DEFINE_integer('num_samples', 1, 'Continuations of every prompt.')
_SCORE = flags.DEFINE_string('score', None, "Print how misaligned the continuations are by this "
                             "scorer ('pep8') instead of the continuations.")
_ALLOW = flags.DEFINE_list('allow', [], "Control tokens the model may write despite "
                          "--ban_control_tokens, e.g. '<|aligned|>'; left out of the text.")
_PREPACK = flags.DEFINE_bool('prepack', False, 'Pack the prompts into fewer rows for the prefill '
                             '(Prepacking, arXiv 2404.09529): the same numbers from fewer padded '
                             'positions; a causal decoder only.')
_BAN_CONTROL_TOKENS = flags.DEFINE_bool('ban_control_tokens', True, 'Never write the control '
                                        'tokens and sentinels (the extra ids).')


def _checkpoint() -> str:
  return cli.one_checkpoint(_CHECKPOINT.value, 'generate with')


def _sampling() -> generate.Sampling:
  """The sampling flags, checked."""
  if _MAX_NEW_TOKENS.value < 1:
    raise errors.UserError(f'--max_new_tokens={_MAX_NEW_TOKENS.value} must be at least 1.')
  if not _TEMPERATURE.value >= 0 or math.isinf(_TEMPERATURE.value):
    raise errors.UserError(f'--temperature={_TEMPERATURE.value} must be a finite number >= 0 '
                           '(0 = greedy).')
  if _TOP_K.value < 0:
    raise errors.UserError(f'--sample_top_k={_TOP_K.value} must be >= 0 (0 = all tokens).')
  if not 0 < _TOP_P.value <= 1:
    raise errors.UserError(f'--top_p={_TOP_P.value} must be in (0, 1] (1 = all tokens).')
  return generate.Sampling(_TEMPERATURE.value, _TOP_K.value, _TOP_P.value)


def _prompts() -> list[str]:
  """The --prompt values, then the non-blank lines of --prompt_file."""
  prompts = list(_PROMPT.value)
  if _PROMPT_FILE.value is not None:
    path = epath.Path(_PROMPT_FILE.value)
    if not path.is_file():
      raise errors.UserError(f'--prompt_file={_PROMPT_FILE.value} is not a file; give a text file '
                             'of prompts, one a line.')
    try:
      lines = path.read_text(encoding='utf-8').splitlines()
    except UnicodeDecodeError as e:
      raise errors.UserError(f'--prompt_file={_PROMPT_FILE.value} is not valid UTF-8; re-encode '
                             'it as UTF-8.') from e
    prompts += [line for line in lines if line.strip()]
  if not prompts:
    raise errors.UserError('Give at least one --prompt=TEXT or a --prompt_file=F with prompts.')
  return prompts


def _stop_ids(vocabulary, vocab_size: int) -> tuple[int, ...]:
  """The --stop ids: 'eos' is the vocabulary's end-of-sequence id."""
  ids = []
  for value in _STOP.value:
    if value.strip().lower() == 'eos':
      ids.append(vocabulary.eos_id)
    elif value.strip().isdigit() and int(value) < vocab_size:
      ids.append(int(value))
    else:
      raise errors.UserError(f"--stop={','.join(_STOP.value)}: {value!r} is neither 'eos' nor a "
                             f'token id in [0, {vocab_size}) (model.vocab_size).')
  return tuple(ids)


def _continuations(path: str, sampling: generate.Sampling, texts: list[str]
                   ) -> tuple[list[str], list[str], list[str]]:
  """(the prompt, its continuation's text, how it ended) of every row: each of `texts` continued
  --num_samples times by the checkpoint at `path`, after a header line is printed."""
  config = finished.checkpoint_config(path, '--checkpoint', decoder_only=False)
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  stop_ids = _stop_ids(vocabulary, config.model.vocab_size)
  allowed_ids = {vocabularies.control_token_id(vocabulary, name) for name in _ALLOW.value}
  if _PREPACK.value and (config.model.architecture != 'decoder'
                         or registry.bidirectional_prompt(config)):
    raise errors.UserError(f'--prepack packs the causal prompts of a decoder; the run at {path} '
                           f'has model.architecture={config.model.architecture!r} and '
                           f'objective.name={config.objective.name!r}; drop --prepack.')
  loaded = finished.load_checkpoint(path, config, jax.local_devices()[:1])
  rows = [text for text in texts for _ in range(_NUM_SAMPLES.value)]
  tokens, lengths = generate.continue_texts(loaded, rows, jax.random.key(_SEED.value),
                                            _MAX_NEW_TOKENS.value, sampling, stop_ids,
                                            _BAN_CONTROL_TOKENS.value, tuple(allowed_ids),
                                            _PREPACK.value)
  how = ('greedy' if not sampling.temperature else
         f'sampled at temperature {sampling.temperature}, top-k {sampling.top_k or "all"}, '
         f'top-p {sampling.top_p}, seed {_SEED.value}')
  print(f'{path} (step {loaded.step}, {config.model.architecture}), {how}:')
  continuations, ends = [], []
  for row, length in zip(tokens, lengths):
    ids = row[:length].tolist()
    stopped = bool(ids) and ids[-1] in stop_ids
    continuations.append(vocabulary.decode([i for i in ids if i not in allowed_ids]))
    ends.append(f'{length} tokens, ' + (f'stopped by id {ids[-1]}' if stopped
                                        else f'--max_new_tokens={_MAX_NEW_TOKENS.value}'))
  return rows, continuations, ends


def _arms(paths: list[str]) -> list[tuple[str, list[str]]]:
  """(label, checkpoint paths) of each arm: the runs of a sweep directory (one without a
  config.json) grouped into arms by report.arms, else all of `paths` as one arm."""
  if len(paths) == 1 and os.path.isdir(paths[0]) and not os.path.exists(
      os.path.join(paths[0], 'config.json')):
    return [(arm.label, [run.path for run in arm.runs])
            for arm in report.arms([report.load_run(p) for p in cli.sweep_runs(paths[0])])]
  return [(', '.join(paths), paths)]


def _print_scores(paths: list[str], sampling: generate.Sampling, texts: list[str]) -> None:
  """The misalignment of each prompt's continuations per arm, mean ± SE over its checkpoints."""
  if _SCORE.value not in control_tokens.SCORERS:
    raise errors.UserError(f'--score={_SCORE.value} is not a known scorer; choose one of '
                           f'{sorted(control_tokens.SCORERS)}.')
  rows_out = []
  for label, arm_paths in _arms(paths):
    found = {text: [] for text in texts}
    for path in arm_paths:
      rows, continuations, ends = _continuations(path, sampling, texts)
      for text in texts:
        complete = [control_tokens.complete_lines(c, 'stopped' in end)
                    for row, c, end in zip(rows, continuations, ends) if row == text]
        found[text].append(control_tokens.misalignment(complete, _SCORE.value))
    for text, scores in found.items():
      rows_out.append((f'{label} ({len(arm_paths)})', repr(text), {
          key: report.mean_cell([s[key] for s in scores]) for key in scores[0]}))
  keys = list(rows_out[0][2])
  print(f'\n{_SCORE.value}: {_NUM_SAMPLES.value} samples per prompt and checkpoint; mean ± SE '
        'over the checkpoints of each arm (their number in brackets)\n')
  print('| arm | prompt | ' + ' | '.join(keys) + ' |\n|---|---|' + '---:|' * len(keys))
  for label, prompt, cells in rows_out:  # '<|aligned|>' escaped for a markdown cell
    print(f'| {label} | ' + prompt.replace('|', '\\|') + ' | ' + ' | '.join(cells.values()) + ' |')


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  sampling, texts = _sampling(), _prompts()
  if _NUM_SAMPLES.value < 1:
    raise errors.UserError(f'--num_samples={_NUM_SAMPLES.value} must be at least 1.')
  if _SCORE.value is not None:
    if not _CHECKPOINT.value:
      raise errors.UserError('--score needs --checkpoint=DIR[,DIR...]: the runs to sample from.')
    _print_scores(_CHECKPOINT.value, sampling, texts)
    return
  rows, continuations, ends = _continuations(_checkpoint(), sampling, texts)
  for i, (text, continuation, end) in enumerate(zip(rows, continuations, ends), start=1):
    print(f'--- prompt {i} ---\n{text}\n--- continuation ({end}) ---\n{continuation}')


if __name__ == '__main__':
  cli.run(main)
