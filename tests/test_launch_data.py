"""python -m launch.data shows, counts and dumps exactly the examples training reads."""

import ast
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from launch import cli
from launch import data as data_command
from research import errors
from research.data import pipeline, tasks, vocabularies
from research.data import store as store_lib
from tests import commands

TASKS = ("--config.data.tasks={'sums': {'source': 'arithmetic', 'num_documents': 2000}, "
         "'chains': {'source': 'lego', 'num_documents': 500}}")
SEQ_LEN = 64
NUM_EXAMPLES = 20  # 2.5 global batches of 8


def _config(data_dir, *overrides):
  """The quickstart config with the command-line overrides, parsed as the command parses them."""
  argv = ['launch.data', '--config=experiments/quickstart.py', TASKS,
          f'--config.data.seq_len={SEQ_LEN}', f'--config.data.store_dir={data_dir}', *overrides]
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'experiment', flag_values=values,
                                  lock_config=True, sys_argv=argv)
  values(argv)
  return values.config


def _main(config, **flag_values) -> str:
  """Runs the command's main in-process with these flag values; returns what it printed."""
  return commands.run_main(data_command.main, config=config, **flag_values)


@pytest.fixture(scope='module')
def mixed(data_dir, tmp_path_factory):
  """One run over a 75/25 mixture of two synthetic tasks: config, printed text, dump lines."""
  config = _config(data_dir, "--config.data.mixture={'sums': 0.75, 'chains': 0.25}")
  out = tmp_path_factory.mktemp('dump') / 'examples.jsonl'
  printed = _main(config, show=NUM_EXAMPLES, dump=NUM_EXAMPLES, out=str(out))
  with open(out) as f:
    lines = [json.loads(line) for line in f]
  return config, printed, lines


def _train_data(config) -> pipeline.TrainData:
  return pipeline.TrainData(config.data, config.train.batch_size, config.seed, config.train.steps)


def _source_texts(task: str) -> dict[str, str]:
  return dict(tasks.split_documents(task, 'train'))


def test_show_names_the_tasks_and_the_documents_text(mixed):
  config, printed, _ = mixed
  headers = re.findall(r'^step (\d+), row (\d+) of the batch: task (\w+), packed row (\d+)',
                       printed, re.M)
  assert [(int(s), int(r)) for s, r, _, _ in headers] == [(i // 8, i % 8)
                                                          for i in range(NUM_EXAMPLES)]
  data = _train_data(config)
  for step, row, task, packed_row in headers:
    tasks_B, rows_B = data.example_sources(int(step))
    assert (task, int(packed_row)) == (data.task_names[tasks_B[int(row)]], rows_B[int(row)])
  assert {task for _, _, task, _ in headers} == {'sums', 'chains'}

  segments = re.findall(r'^  segment \d+: document (\S+) (\{.*\}), (\d+) tokens, (\d+) '
                        r'loss-bearing\n    (.*)$', printed, re.M)
  texts = {**_source_texts('sums'), **_source_texts('chains')}
  whole = 0
  for doc_id, metadata, num_tokens, loss_tokens, shown in segments:
    text = ast.literal_eval(shown)  # one line: the newlines of lego documents are escaped
    assert text in texts[doc_id] and num_tokens == loss_tokens
    if int(num_tokens) == len(texts[doc_id]) + 1:  # the whole document and its EOS
      assert text == texts[doc_id]
      whole += 1
    assert json.loads(metadata)['skill']
  assert len(segments) > 3 * NUM_EXAMPLES and whole > 2 * NUM_EXAMPLES
  assert any('\\n' in shown for *_, shown in segments)


def test_realised_proportions_match_the_weights_and_epochs(mixed):
  config, printed, _ = mixed
  assert 'Mixture of steps 0 to 999 (8000 examples):' in printed
  table = dict(re.findall(r'^  (sums|chains) +(.*)$', printed, re.M))
  data = _train_data(config)
  epochs = data.epochs_before(1000)
  for task, weight in (('sums', 0.75), ('chains', 0.25)):
    realised, expected, stage_weight, task_epochs = table[task].split()
    assert abs(float(realised.rstrip('%')) / 100 - weight) < 0.02
    assert expected == stage_weight == f'{100 * weight:.2f}%'
    assert task_epochs == f'{epochs[task]:.2f}'
  assert epochs['sums'] > 1  # a repeated task shows it


def test_stages_and_replay_give_the_expected_mixture(data_dir):
  config = _config(
      data_dir, "--config.data.mixture={'sums': 1.0}",
      "--config.data.stages={'late': {'at_fraction': 0.5, 'mixture': {'chains': 1.0}}}",
      '--config.data.replay.fraction=0.25', "--config.data.replay.mixture={'sums': 1.0}")
  printed = _main(config, show=0, step=140, proportion_steps=100)  # 10 steps before step 150
  table = dict(re.findall(r'^  (sums|chains) +(.*)$', printed, re.M))
  # chains: 90 of the 100 steps give it all 6 main rows of 8 (exactly): 0.75 * 0.9 = 67.5%.
  realised, expected, *weights = table['chains'].split()
  assert realised == expected == '67.50%' and weights[:3] == ['0.00%', '100.00%', '0.00%']
  assert 'replay: the last 2 of every 8 rows come from data.replay.mixture' in printed


def test_dump_holds_the_shown_examples_and_their_documents(mixed, data_dir):
  config, _, lines = mixed
  assert len(lines) == NUM_EXAMPLES
  assert [(line['step'], line['index']) for line in lines] == [(i // 8, i % 8)
                                                               for i in range(NUM_EXAMPLES)]
  data = _train_data(config)
  vocabulary = vocabularies.make_vocabulary('byte')
  stores = {task: store_lib.load_store(task, 'train', 'byte', data_dir)
            for task in ('sums', 'chains')}
  texts = {task: _source_texts(task) for task in stores}
  padding = whole = 0
  for line in lines:
    assert set(line) == {'step', 'index', 'task', 'row', 'inputs', 'targets', 'segment_ids',
                         'positions', 'weights', 'documents'}
    batch = data.batch(line['step'])
    for key in ('inputs', 'targets', 'segment_ids', 'positions', 'weights'):
      assert line[key] == batch[key][line['index']].tolist()
    inputs, targets, segment_ids, weights = (np.array(line[k]) for k in (
        'inputs', 'targets', 'segment_ids', 'weights'))
    same = (segment_ids[1:] == segment_ids[:-1]) & (segment_ids[1:] > 0)
    np.testing.assert_array_equal(inputs[1:][same], targets[:-1][same])
    np.testing.assert_array_equal(weights == 0, segment_ids == 0)
    padding += int(np.sum(weights == 0))

    store = stores[line['task']]
    assert [d['segment'] for d in line['documents']] == sorted(set(segment_ids) - {0})
    for document in line['documents']:
      index = store.doc_ids.index(document['id'])
      assert document['metadata'] == store.metadata[index]
      segment = targets[segment_ids == document['segment']]
      tokens = store.document(index)
      chunks = [tokens[start:start + len(segment)] for start in range(0, len(tokens), SEQ_LEN)]
      assert any(np.array_equal(segment, chunk) for chunk in chunks)
      if len(segment) == len(tokens):
        assert vocabulary.decode(segment.tolist()) == texts[line['task']][document['id']]
        whole += 1
  assert padding > 0 and whole > 2 * NUM_EXAMPLES


def test_long_text_is_cut_and_control_characters_escaped():
  shown = data_command.shown_text('a\tb\x1b\n' * 100)
  assert shown.startswith(repr('a\tb\x1b\n' * 60)) and shown.endswith('... (+200 characters)')
  assert '\n' not in shown and '\x1b' not in shown
  assert data_command.shown_text('7+5=21') == "'7+5=21'"


def test_dump_is_written_whole_or_not_at_all(tmp_path):
  out = tmp_path / 'examples.jsonl'
  out.mkdir()  # a directory where the file should go: the rename fails
  with pytest.raises(errors.UserError, match=f'Cannot write --out={out} '):
    data_command.write_jsonl(str(out), [{'step': 0}])
  assert os.listdir(tmp_path) == ['examples.jsonl'] and not os.listdir(out)
  out.rmdir()
  data_command.write_jsonl(str(out), [{'step': 0}, {'step': 1}])
  assert out.read_text() == '{"step": 0}\n{"step": 1}\n'


def test_a_bad_flag_is_one_line_naming_it():
  # absl may suggest a flag another launch module defines in this process (Did you mean ...?).
  unknown = r"^error: Unknown command line flag 'bogus'\. (Did you mean: .*\. )?--helpfull"
  with pytest.raises(SystemExit, match=unknown):
    cli.parse_flags(['launch.data', '--bogus'])


def test_dump_without_out_names_out(data_dir):
  with pytest.raises(SystemExit, match=r'^error: --dump=3 needs --out=F.jsonl'):
    _main(_config(data_dir), dump=3)


def test_unknown_task_in_the_mixture_is_one_line_naming_it(data_dir):
  result = subprocess.run(
      [sys.executable, '-m', 'launch.data', '--config=experiments/quickstart.py', TASKS,
       f'--config.data.store_dir={data_dir}', "--config.data.mixture={'sums': 0.5, 'sumz': 0.5}"],
      capture_output=True, text=True, check=False)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("error: A data mixture (data.mixture, data.stages or data.replay.mixture) "
                         "names an unknown task 'sumz'; did you mean ['sums']?")
  assert 'Traceback' not in result.stderr and not result.stdout


def test_ul2_dump_records_each_segments_denoiser_and_noise_mask(data_dir, tmp_path):
  config = _config(data_dir, "--config.data.mixture={'sums': 0.5, 'chains': 0.5}",
                   '--config.objective.name=ul2', '--config.data.extra_ids=100')
  out = tmp_path / 'ul2.jsonl'
  printed = _main(config, show=2, dump=200, out=str(out))
  assert re.search(r'(R|X)\d+_\d+ \(mean span \d+, rate 0\.\d+, \d+ noise tokens\): inputs',
                   printed)
  with open(out) as f:
    lines = [json.loads(line) for line in f]
  stores = {task: store_lib.load_store(task, 'train', 'byte', data_dir)
            for task in ('sums', 'chains')}
  documents = [d for line in lines for d in line['documents']]
  assert {'prefix', 'weights', 'inputs', 'targets'} <= set(lines[0])
  for line in lines[:20]:
    targets, weights, segment_ids = (np.array(line[k]) for k in ('targets', 'weights',
                                                                 'segment_ids'))
    for document in line['documents']:
      noise = document['noise']
      assert {'denoiser', 'mean_span', 'rate'} <= set(document)
      store = stores[line['task']]
      assert 0 < len(noise) <= len(store.document(store.doc_ids.index(document['id'])))
      in_segment = segment_ids == document['segment']
      sentinels = int(np.sum(targets[in_segment & (weights > 0)] >= 265))  # ids above the controls
      assert sum(noise) == int(np.sum(in_segment & (weights > 0))) - sentinels
  # The denoisers' corruption rates, measured from the dump alone (short synthetic documents).
  for name in ('R3_15', 'X3_50', 'S_25'):
    masks = [d['noise'] for d in documents if d['denoiser'] == name]
    realised = sum(map(sum, masks)) / sum(map(len, masks))
    expected = {'R3_15': 0.15, 'X3_50': 0.5, 'S_25': 0.25}[name]
    assert len(masks) > 30 and abs(realised - expected) < 0.1, (name, realised, len(masks))


@pytest.mark.parametrize('lines, message', [
    ([b'{"text": "one"}', b'{"text": "two"', b'{"text": "three"}'],
     r'bad\.jsonl line 2 is not valid JSON \(Expecting .* at column 1\); with '
     r"data\.tasks\.mine\.format='jsonl' every line must be one JSON object\."),
    ([b'{"text": "one"}', b'{"text": "two"}', b'{"body": "three"}'],
     r"bad\.jsonl line 3 has no string field 'text' \(its fields: \['body'\]\); set "
     r'data\.tasks\.mine\.text_field to the field holding the text\.'),
    ([b'{"text": "one"}', b'{"text": "caf\xe9"}'],
     r'bad\.jsonl is not valid UTF-8 at byte offset 29 \(line 2\); re-encode the file as UTF-8 '
     r'\(e\.g\. iconv -f LATIN1 -t UTF-8 .*/bad\.jsonl > fixed\.txt\)\.'),
])
def test_a_bad_source_file_is_one_error_naming_it(tmp_path, lines, message):
  """The UserError raised while the document store is built (by Beam) reaches the command."""
  overrides = _bad_source(tmp_path, lines)
  with pytest.raises(SystemExit, match=f'^error: {re.escape(str(tmp_path))}/{message}$'):
    _main(_config(tmp_path / 'stores', *overrides))


def _bad_source(tmp_path, lines: list[bytes]) -> list[str]:
  """The overrides of a task 'mine' of these lines in TMP/bad.jsonl, the whole mixture."""
  path = tmp_path / 'bad.jsonl'
  path.write_bytes(b'\n'.join(lines) + b'\n')
  return [f"--config.data.tasks={{'mine': {{'source': 'files', 'pattern': '{path}', "
          "'format': 'jsonl'}}", "--config.data.mixture={'mine': 1.0}"]


def test_a_bad_source_file_is_one_line_on_the_command_line_not_a_traceback(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'launch.data', '--config=experiments/quickstart.py',
       *_bad_source(tmp_path, [b'{"text": "one"}', b'{"body": "two"}']),
       f'--config.data.store_dir={tmp_path / "stores"}'],
      capture_output=True, text=True, check=False)
  assert result.returncode == 2 and not result.stdout
  stderr = result.stderr.strip().splitlines()
  assert stderr[-1].startswith(f"error: {tmp_path}/bad.jsonl line 2 has no string field 'text'")
  assert 'Traceback' not in result.stderr and len(stderr) <= 3, result.stderr


def test_ul2_show_decodes_inputs_and_targets_with_sentinels(data_dir):
  config = _config(data_dir, "--config.data.mixture={'sums': 1.0}", '--config.objective.name=ul2',
                   '--config.data.extra_ids=100')
  printed = _main(config, show=8)
  shown = re.findall(r'^    (.*)\n    (\w+) \(mean span [\d.]+, rate [\d.]+, \d+ noise tokens\): '
                     r'inputs (.*) targets (.*)$', printed, re.M)
  assert len(shown) > 20
  spans = 0
  for text, denoiser, inputs, targets in shown:
    text, inputs, targets = (ast.literal_eval(s) for s in (text, inputs, targets))
    mode = {'R': '[NLU]', 'X': '[NLG]', 'S': '[S2S]'}[denoiser[0]]
    assert inputs.startswith(mode)
    inputs = inputs[len(mode):]
    if denoiser.startswith('S'):  # prefix LM: the text continues in the targets
      assert inputs + targets == text
      continue
    # Span corruption: sentinel k stands for the span after <Xk> in the targets, as seqio shows it.
    pieces = re.split(r'(<X\d+>)', targets)
    assert pieces[0] == '' and pieces[1] == '<X0>'
    filled = inputs
    for sentinel, span in zip(pieces[1::2], pieces[2::2]):
      assert filled.count(sentinel) == 1
      filled = filled.replace(sentinel, span)
      spans += 1
    assert filled == text
  assert spans > 20


_SEQIO_MODULE = '''
import seqio
import tensorflow as tf

TEXTS = {'train': [f'tale {i} ' + 'x' * i for i in range(40)], 'validation': ['held']}
seqio.TaskRegistry.add(
    'my_tales', source=seqio.FunctionDataSource(
        lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices({'targets': TEXTS[split]}),
        splits=('train', 'validation')),
    preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
    output_features={'targets': seqio.Feature(seqio.ByteVocabulary(), add_eos=True)})
'''


def test_a_seqio_task_of_a_registering_module_is_shown_by_name(tmp_path):
  (tmp_path / 'my_tasks.py').write_text(_SEQIO_MODULE, encoding='utf-8')
  result = subprocess.run(
      [sys.executable, '-m', 'launch.data', '--config=experiments/quickstart.py',
       "--config.data.seqio_modules=('my_tasks',)", "--config.data.mixture={'my_tales': 1.0}",
       f'--config.data.store_dir={tmp_path / "stores"}', '--show=2', '--proportion_steps=10'],
      capture_output=True, text=True, check=False,
      env={**os.environ, 'PYTHONPATH': f'{tmp_path}{os.pathsep}{os.environ.get("PYTHONPATH", "")}'})
  assert result.returncode == 0, result.stderr[-3000:]
  documents = re.findall(r'^  segment \d+: document my_tales/train/(\d+) \{\}, (\d+) tokens.*\n'
                         r"    '(.*)'$", result.stdout, re.M)
  assert len(documents) > 4
  for index, num_tokens, text in documents:
    assert text == f'tale {index} ' + 'x' * int(index) and int(num_tokens) == len(text) + 1
  assert re.search(r'^  my_tales +100\.00% ', result.stdout, re.M)
