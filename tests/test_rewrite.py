"""launch.rewrite (research/rewrite.py): a task's documents rewritten by a checkpoint into part
files, resumable, read back as a files task."""

import json

import ml_collections
import pytest

from experiments import base
from launch import rewrite as rewrite_command
from research import errors, finished, prox
from research import rewrite as rewrite_lib
from research.analysis import scores
from research.data import store as store_lib
from research.data import tasks, vocabularies
from tests import commands
from tests.test_scores import save_run

TEXTS = ['def f(x):\n    return x + 1', 'hello world', 'import os', 'a = 1', 'print("hi")']
TEMPLATE = 'Rewrite: {text}\nRewritten:'


@pytest.fixture(scope='module')
def run(data_dir, tmp_path_factory):
  """A freshly initialised decoder's checkpoint whose run trains on the task 'notes' (TEXTS, every
  document in train)."""
  root = tmp_path_factory.mktemp('rewrite')
  (root / 'notes.jsonl').write_text(''.join(json.dumps({'text': t}) + '\n' for t in TEXTS))
  (root / 'held_out.jsonl').write_text(json.dumps({'text': 'held out'}) + '\n')
  config = base.get_config()
  config.model.update(d_model=32, num_layers=1, num_heads=2, head_dim=16, mlp_dim=64)
  config.data.seq_len, config.data.store_dir = 64, data_dir
  config.data.tasks = ml_collections.ConfigDict({'notes': {
      'source': 'files', 'pattern': str(root / 'notes.jsonl'), 'format': 'jsonl',
      'validation_pattern': str(root / 'held_out.jsonl')}})
  config.data.mixture = ml_collections.ConfigDict({'notes': 1.0})
  return save_run(config, str(root / 'run'))


def _rewrite(run, out, **flags) -> str:
  values = {'checkpoint': [run], 'task': 'notes', 'split': 'train', 'out': str(out),
            'template': TEMPLATE, 'num_documents': 0, 'max_new_tokens': 6,
            'max_document_tokens': 0, 'temperature': 0.0, 'seed': 0, 'batch_size': 2,
            'part_size': 2, 'mode': 'rewrite', **flags}
  return commands.run_main(rewrite_command.main, **values)


def _lines(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_document_is_rewritten_into_parts_that_resume_and_load_as_a_task(run, tmp_path):
  out = tmp_path / 'out'
  printed = _rewrite(run, out)
  assert 'into 3 parts' in printed and '3 made now, 0 found done' in printed
  parts = [out / rewrite_lib.part_name(k) for k in range(3)]
  lines = [_lines(part) for part in parts]
  assert [len(part) for part in lines] == [2, 2, 1]
  run_data = finished.checkpoint_config(run).data
  tasks.register_config_tasks(run_data)
  notes = store_lib.load_store('notes', 'train', 'byte', run_data.store_dir)
  assert [line['source_id'] for part in lines for line in part] == notes.doc_ids
  assert json.loads((out / rewrite_lib.MANIFEST).read_text())['max_document_tokens'] == 64 - 6
  # A lost part is made again, the same (greedy), and only it.
  before = parts[1].read_text()
  parts[1].unlink()
  assert '1 made now, 2 found done' in _rewrite(run, out)
  assert parts[1].read_text() == before
  # Other settings are refused, naming the one that changed.
  with pytest.raises(SystemExit, match=r"holds a rewrite with template='Rewrite: \{text\}"):
    _rewrite(run, out, template='Summarise: {text}\nSummary:')
  # The parts are a files task: here part 0 is its validation split, parts 1 and 2 its train split.
  data_config = base.get_config().data
  data_config.tasks = ml_collections.ConfigDict({'rewritten': {
      'source': 'files', 'pattern': str(out / 'part-0000[12].jsonl'), 'format': 'jsonl',
      'validation_pattern': str(parts[0])}})
  tasks.register_config_tasks(data_config)
  rewritten = store_lib.load_store('rewritten', 'train', 'byte', str(tmp_path / 'stores'))
  byte = vocabularies.make_vocabulary('byte', 0)
  assert rewritten.texts(byte) == [line['text'] for line in lines[1] + lines[2]]


def test_prompts_put_each_document_cut_to_its_tokens_in_the_template():
  byte = vocabularies.make_vocabulary('byte', 0)
  store = scores.tokenize_documents([{'id': 'a', 'text': 'abcdef'}, {'id': 'b', 'text': 'xy'}],
                                    byte)
  assert rewrite_lib.prompts(store, [0, 1], TEMPLATE, byte, 3) == [
      'Rewrite: abc\nRewritten:', 'Rewrite: xy\nRewritten:']


def test_a_template_needs_one_placeholder():
  for template in ('Rewrite this.', '{text} and {text}'):
    with pytest.raises(errors.UserError, match=r'must hold \{text\} exactly once'):
      rewrite_lib.check_template(template)
  rewrite_lib.check_template(TEMPLATE)


def test_prox_programs_drop_remove_lines_and_normalize():
  """ProX (arXiv 2409.17115): the four functions, by hand."""
  text = 'Header: ads\nline one\nline two\nClick here!\nlast line'
  assert prox.refine('drop_doc()', text) == (None, True)
  assert prox.refine('keep_doc()', text) == (text, True)
  assert prox.refine('remove_lines(0, 0)\nremove_lines(3, 3)', text) == (
      'line one\nline two\nlast line', True)
  assert prox.refine("remove_lines(3, 99)\nnormalize('line', 'row')", text) == (
      'Header: ads\nrow one\nrow two', True)
  # Anything else is not run, and the document is kept as it is.
  for program in ('', ' \n', 'os.remove("x")', 'remove_lines(1)', "remove_lines('1', 2)",
                  'keep_doc(', 'drop_doc(); x', 'eval("1")',
                  'normalize(source_str="a", target_str="b")'):
    assert prox.refine(program, text) == (text, False), program


def test_prox_mode_runs_each_documents_program_on_it(run, tmp_path):
  """A random model's continuations are no programs: every document is kept unchanged, flagged
  as unparsed, with the program it was given."""
  out = tmp_path / 'prox'
  _rewrite(run, out, mode='prox', template='{text}\nProgram:')
  lines = [line for k in range(3) for line in _lines(out / rewrite_lib.part_name(k))]
  assert [line['text'] for line in lines] == TEXTS
  assert all(line['parsed'] is False and isinstance(line['program'], str) for line in lines)


def test_label_mode_keeps_the_prompt_before_the_continuation(run, tmp_path):
  """Pseudo-labels: the document is its prompt and the continuation the rewrite mode writes."""
  for mode in ('rewrite', 'label'):
    _rewrite(run, tmp_path / mode, mode=mode, num_documents=2)
  rewrites, labelled = (_lines(tmp_path / mode / rewrite_lib.part_name(0))
                        for mode in ('rewrite', 'label'))
  assert [line['text'] for line in labelled] == [
      TEMPLATE.replace('{text}', text) + line['text'] for text, line in zip(TEXTS, rewrites)]
