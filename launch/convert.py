"""Imports Hugging Face checkpoints into this project's format and exports ours back.

  python -m launch.convert --from=hf --src=HF_DIR --dst=CKPT
  python -m launch.convert --to=hf --src=CKPT_OR_WORKDIR --dst=HF_DIR

HF_DIR: config.json and safetensors (one file or shards with model.safetensors.index.json) of a
LlamaForCausalLM, MistralForCausalLM or GPTNeoXForCausalLM (Pythia), with its tokenizer.json if
any. CKPT: config.json (the full config, model.* of the imported architecture, data.seq_len and
data.start_id from its max_position_embeddings and bos_token_id, data.vocabulary 'hf:tokenizer.json'
for the tokenizer copied into CKPT, named relative to it so that CKPT can be moved) and
checkpoints/0 (orbax, {'params': ...}); research/interop/hf_checkpoint.py describes both. Export reads a
CKPT or a training workdir (its latest checkpoint's parameters) and writes config.json (with
max_position_embeddings = data.seq_len and bos_token_id = the start id) and model.safetensors that
transformers' AutoModelForCausalLM loads. --dst must be new or empty; it appears only when complete.
"""

from launch import cli  # first: sets TensorFlow's log level before research imports it

from absl import flags

from research import errors

from research.interop import hf_checkpoint

_FROM = flags.DEFINE_enum('from', None, ['hf'], 'Import: the format of --src (hf: a Hugging Face '
                          'model directory).')
_TO = flags.DEFINE_enum('to', None, ['hf'], 'Export: the format to write to --dst (hf: a Hugging '
                        'Face model directory).')
_SRC = flags.DEFINE_string('src', None, 'The directory to read.')
_DST = flags.DEFINE_string('dst', None, 'The directory to write (new or empty).')
flags.mark_flags_as_required(['src', 'dst'])


@cli.exits_on_user_error
def main(argv):
  cli.no_arguments(argv)
  cli.quiet_absl_logging()
  if (_FROM.value is None) == (_TO.value is None):
    raise errors.UserError('Give exactly one of --from=hf (import SRC into our format) and --to=hf '
                           '(export SRC to a Hugging Face directory).')
  if _FROM.value:
    done = hf_checkpoint.import_checkpoint(_SRC.value, _DST.value)
    print(f'Imported {done.architecture} from {_SRC.value} into {_DST.value}: '
          + ' '.join(f'model.{k}={v}' for k, v in done.model.items()))
    if done.vocabulary:
      print(f'data.vocabulary={done.vocabulary}')
  else:
    done = hf_checkpoint.export_checkpoint(_SRC.value, _DST.value)
    print(f'Exported {_SRC.value} as {done.architecture} into {_DST.value}.')
  for note in done.notes:
    print(f'note: {note}')


if __name__ == '__main__':
  cli.run(main)
