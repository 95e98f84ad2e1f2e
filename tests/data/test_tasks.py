"""seqio task registration, vocabularies and the md5 train/validation split."""

import functools
import importlib
import json

import ml_collections
import numpy as np
import pytest
import seqio
import tensorflow as tf

from research import errors
from research.data import pipeline, tasks, vocabularies
from research.data import store as store_lib

# md5-based split of these synthetic ids, fixed so that a change to the split shows up here.
_GOLDEN_VALIDATION = ['doc111', 'doc174', 'doc29', 'doc52', 'doc90']


@pytest.mark.parametrize('corpus', ['stdlib_code', 'stdlib_prose'])
def test_split_is_disjoint_complete_and_about_five_percent(corpus):
  train = [doc_id for doc_id, _ in tasks.split_documents(corpus, 'train')]
  validation = [doc_id for doc_id, _ in tasks.split_documents(corpus, 'validation')]
  assert not set(train) & set(validation)
  assert train == [doc_id for doc_id, _ in tasks.split_documents(corpus, 'train')]
  num_docs = len(train) + len(validation)
  assert 0.03 <= len(validation) / num_docs <= 0.08


def test_split_does_not_depend_on_the_process():
  ids = [f'doc{i}' for i in range(200)]
  assert sorted(i for i in ids if tasks.is_validation(i)) == sorted(_GOLDEN_VALIDATION)


def test_registration_is_idempotent():
  tasks.register_tasks()
  importlib.reload(tasks)
  tasks.register_tasks()
  assert {'stdlib_code', 'stdlib_prose'} <= set(seqio.TaskRegistry.names())


def test_unknown_task_names_config_key_and_registered_tasks():
  with pytest.raises(errors.UserError, match=r"unknown task 'stdlib_cod'; did you mean \['stdlib_code'"):
    tasks.get_task('stdlib_cod')


def test_task_pipeline_tokenizes_with_eos():
  dataset = tasks.get_task('stdlib_code').get_dataset(
      split='validation', shuffle=False, sequence_length=None)
  example = next(dataset.as_numpy_iterator())
  doc_id, text = tasks.split_documents('stdlib_code', 'validation')[0]
  assert example['id'].decode() == doc_id
  vocabulary = vocabularies.make_vocabulary('byte')
  np.testing.assert_array_equal(example['targets'],
                                vocabulary.encode(text) + [vocabulary.eos_id])


def _jsonl(tmp_path, name, rows):
  path = tmp_path / name
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')
  return str(path)


def test_config_tasks_train_through_the_store_with_metadata(data_config, tmp_path):
  _jsonl(tmp_path, 'a.jsonl', [{'body': f'document number {i}', 'quality': i % 3} for i in range(60)])
  data_config.tasks = ml_collections.ConfigDict({
      'notes': {'source': 'files', 'pattern': str(tmp_path / '*.jsonl'), 'format': 'jsonl',
                'text_field': 'body'},
      'sums': {'source': 'arithmetic', 'num_documents': 500, 'max_digits': 2,
               'operations': ('addition',)},
  })
  data_config.mixture = {'notes': 0.5, 'sums': 0.5}
  data_config.seq_len = 64
  data = pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=10)
  assert data.task_names == ['notes', 'sums']
  assert set(data.example_sources(0)[0]) == {0, 1}
  sums = store_lib.load_store('sums', 'train', 'byte', data_config.store_dir)
  assert sums.num_documents == 500
  assert {m['operation'] for m in sums.metadata} == {'addition'}
  assert {m['difficulty'] for m in sums.metadata} == {1, 2}
  notes = store_lib.load_store('notes', 'train', 'byte', data_config.store_dir)
  # Which lines land in validation depends on the md5 of the id (and so on tmp_path): check every
  # train document against the line its id names.
  byte_vocabulary = vocabularies.make_vocabulary('byte')
  assert 40 < notes.num_documents <= 60
  for index, doc_id in enumerate(notes.doc_ids):
    path, line = doc_id.rsplit(':', 1)
    assert path == str(tmp_path / 'a.jsonl')
    assert notes.metadata[index] == {'quality': (int(line) - 1) % 3}
    assert byte_vocabulary.decode(notes.document(index).tolist()) == f'document number {int(line) - 1}'


def test_cache_key_changes_with_the_task_parameters_and_files(data_config, tmp_path):
  path = _jsonl(tmp_path, 'a.jsonl', [{'text': 'one'}, {'text': 'two'}])
  spec = {'source': 'files', 'pattern': path, 'format': 'jsonl'}
  tasks.register(tasks.spec_from_config('files_task', spec))
  before = store_lib.store_path('files_task', 'train', 'byte', data_config.store_dir)
  _jsonl(tmp_path, 'a.jsonl', [{'text': 'one'}, {'text': 'two'}, {'text': 'three'}])
  # The files are stated once per registration (a run registers its tasks when it starts).
  assert store_lib.store_path('files_task', 'train', 'byte', data_config.store_dir) == before
  tasks.register(tasks.spec_from_config('files_task', spec))
  assert store_lib.store_path('files_task', 'train', 'byte', data_config.store_dir) != before
  tasks.register(tasks.spec_from_config('digits', {'source': 'arithmetic', 'max_digits': 2}))
  two = store_lib.store_path('digits', 'train', 'byte', data_config.store_dir)
  tasks.register(tasks.spec_from_config('digits', {'source': 'arithmetic', 'max_digits': 3}))
  assert store_lib.store_path('digits', 'train', 'byte', data_config.store_dir) != two


@pytest.mark.parametrize('spec, match', [
    ({'source': 'ftp'}, r"data.tasks.t.source='ftp' is not a known source"),
    ({'source': 'files', 'pattern': '*.txt', 'glob': 'x'}, r"data.tasks.t has unknown keys \['glob'\]"),
    ({'source': 'files'}, r'data.tasks.t.pattern is missing'),
    ({'source': 'tfds', 'name': 'c4'}, r'data.tasks.t.text_key is missing'),
    ({'source': 'arithmetic', 'max_digits': 0}, r'data.tasks.t.max_digits'),
    ({'source': 'files', 'pattern': '*.txt', 'validation_fraction': 1.5},
     r'data.tasks.t.validation_fraction=1.5 must be a number in \(0, 1\)'),
    ({'source': 'files', 'pattern': '*.txt', 'validation_pattern': 'v/*.txt',
      'validation_fraction': 0.1}, r'data.tasks.t sets both validation_pattern and '
     'validation_fraction'),
])
def test_bad_task_specs_name_the_key(spec, match):
  with pytest.raises(errors.UserError, match=match):
    tasks.spec_from_config('t', spec)


def test_a_task_with_no_training_documents_is_named(data_config, tmp_path):
  (tmp_path / 'empty.jsonl').write_text('', encoding='utf-8')
  data_config.tasks = ml_collections.ConfigDict({'empty': {
      'source': 'files', 'pattern': str(tmp_path / '*.jsonl'), 'format': 'jsonl'}})
  data_config.mixture = {'empty': 1.0}
  with pytest.raises(errors.UserError, match=r"Task 'empty' in the data mixture has no training"):
    pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=10)


def test_subsets_keep_a_random_sample_or_the_best_scored_documents(data_config, tmp_path):
  docs = [{'text': f'note {i}', 'quality': i} for i in range(100)]
  _jsonl(tmp_path, 'notes.jsonl', docs)
  ids = [str(tmp_path / 'notes.jsonl') + f':{i + 1}' for i in range(100)]
  scores = tmp_path / 'scores.jsonl'
  scores.write_text(''.join(json.dumps({'id': doc_id, 'nll': 100 - i}) + '\n'
                            for i, doc_id in enumerate(ids)))
  data_config.tasks = ml_collections.ConfigDict({
      'best': {'source': 'subset', 'task': 'notes', 'num_documents': 10, 'scores': str(scores)},
      'sample': {'source': 'subset', 'task': 'notes', 'fraction': 0.2, 'seed': 3},
      'notes': {'source': 'files', 'pattern': str(tmp_path / 'notes.jsonl'), 'format': 'jsonl'},
  })  # a subset may come before the task it takes from
  tasks.register_config_tasks(data_config)
  train = [d['id'] for d in tasks._SPECS['notes'].documents('train')]
  best = [d['id'] for d in tasks._SPECS['best'].documents('train')]
  # The lowest nll: the last 10 training notes, in source order.
  assert best == train[-10:]
  sample = [d['id'] for d in tasks._SPECS['sample'].documents('train')]
  assert len(sample) == round(0.2 * len(train)) and set(sample) < set(train)
  assert sample == [d['id'] for d in tasks._SPECS['sample'].documents('train')]  # deterministic
  assert [d['id'] for d in tasks._SPECS['sample'].documents('validation')] == [
      d['id'] for d in tasks._SPECS['notes'].documents('validation')]
  data_config.tasks.best.num_documents = 1000
  tasks.register_config_tasks(data_config)
  with pytest.raises(errors.UserError, match=r"data.tasks.best keeps 1000 of the \d+ training "
                     r"documents of 'notes'"):
    list(tasks._SPECS['best'].documents('train'))
  data_config.tasks = ml_collections.ConfigDict({
      'sub': {'source': 'subset', 'task': 'nothing', 'fraction': 0.5}})
  with pytest.raises(errors.UserError, match=r"data.tasks.sub.task names an unknown task 'nothing'"):
    tasks.register_config_tasks(data_config)
  with pytest.raises(errors.UserError, match=r'needs task .* and one of fraction or num_documents'):
    tasks.spec_from_config('t', {'source': 'subset', 'task': 'notes'})


def test_a_subset_refuses_a_score_file_of_another_task(data_config, tmp_path):
  _jsonl(tmp_path, 'notes.jsonl', [{'text': f'note {i}'} for i in range(20)])
  scores = _jsonl(tmp_path, 'scores.jsonl', [{'id': str(tmp_path / 'notes.jsonl') + f':{i + 1}',
                                              'nll': i} for i in range(20)])
  (tmp_path / 'scores.jsonl.manifest.json').write_text(json.dumps(
      {'task': 'stdlib_code', 'split': 'train', 'vocabulary': 'byte'}))
  data_config.tasks = ml_collections.ConfigDict({
      'notes': {'source': 'files', 'pattern': str(tmp_path / 'notes.jsonl'), 'format': 'jsonl'},
      'best': {'source': 'subset', 'task': 'notes', 'num_documents': 5, 'scores': scores}})
  tasks.register_config_tasks(data_config)
  with pytest.raises(errors.UserError, match=rf"{scores} scores task 'stdlib_code' split 'train' "
                     r"\(its manifest\), but data\.tasks\.best keeps training documents of "
                     r"'notes'; .*--task=notes"):
    list(tasks._SPECS['best'].documents('train'))
  (tmp_path / 'scores.jsonl.manifest.json').write_text(json.dumps(
      {'task': 'notes', 'split': 'train', 'vocabulary': 'byte'}))
  assert len(list(tasks._SPECS['best'].documents('train'))) == 5


def _file_in_train(directory, stem: str) -> str:
  """A text file in `directory` whose id (its path) the md5 holdout puts in the train split."""
  path = next(str(directory / f'{stem}{i}.txt') for i in range(100)
              if not tasks.is_validation(str(directory / f'{stem}{i}.txt')))
  with open(path, 'w', encoding='utf-8') as f:
    f.write('the only document ' * 20)
  return path


def test_an_empty_validation_split_is_refused_with_its_count_and_the_fix(data_config, tmp_path):
  _file_in_train(tmp_path, 'one')
  data_config.tasks = ml_collections.ConfigDict({'one': {
      'source': 'files', 'pattern': str(tmp_path / '*.txt')}})
  data_config.mixture = {'one': 1.0}
  pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=10)  # it trains ...
  with pytest.raises(errors.UserError) as raised:  # ... but is not evaluated as a loss of 0.0
    pipeline.eval_batches(data_config, 'one', batch_size=8, num_batches=1)
  assert str(raised.value) == (
      "Task 'one' has no validation documents: its validation split got 0 of its 1 documents, so "
      "it cannot be evaluated; a files task holds out the documents whose id's md5 falls in the "
      'lowest 5% (data.tasks.one.validation_fraction), and none of these did; set '
      'data.tasks.one.validation_pattern to a glob of held-out files (e.g. one file of yours kept '
      'out of pattern), or a larger validation_fraction.')


def test_validation_pattern_names_the_held_out_files(data_config, tmp_path):
  (tmp_path / 'train').mkdir()
  (tmp_path / 'held').mkdir()
  train_path = _file_in_train(tmp_path / 'train', 'a')
  held = tmp_path / 'held' / 'b.txt'
  held.write_text('held out for evaluation', encoding='utf-8')
  data_config.tasks = ml_collections.ConfigDict({'mine': {
      'source': 'files', 'pattern': str(tmp_path / 'train' / '*.txt'),
      'validation_pattern': str(tmp_path / 'held' / '*.txt')}})
  data_config.mixture = {'mine': 1.0}
  tasks.register_config_tasks(data_config)
  assert [d for d, _ in tasks.split_documents('mine', 'validation')] == [str(held)]
  batch, = pipeline.eval_batches(data_config, 'mine', batch_size=8, num_batches=1)
  vocabulary = vocabularies.make_vocabulary('byte')
  assert vocabulary.decode(batch['targets'][0][batch['weights'][0] > 0].tolist()) == (
      'held out for evaluation')
  train = store_lib.load_store('mine', 'train', 'byte', data_config.store_dir)
  assert train.doc_ids == [train_path]
  data_config.tasks.mine.validation_pattern = str(tmp_path / '*' / '*.txt')
  with pytest.raises(errors.UserError, match=r'data.tasks.mine.validation_pattern=.* matches 1 '
                     r'files that pattern matches too \(.*/train/a\d+.txt, ...\)'):
    tasks.register_config_tasks(data_config)
    tasks.fingerprint('mine')


def test_validation_fraction_sets_the_md5_holdout(data_config, tmp_path):
  path = _jsonl(tmp_path, 'a.jsonl', [{'text': f'note {i}'} for i in range(40)])
  data_config.tasks = ml_collections.ConfigDict({'notes': {
      'source': 'files', 'pattern': path, 'format': 'jsonl', 'validation_fraction': 0.5}})
  tasks.register_config_tasks(data_config)
  ids = [f'{path}:{line}' for line in range(1, 41)]
  held = [doc_id for doc_id in ids if tasks.is_validation(doc_id, 0.5)]
  assert 10 <= len(held) <= 30
  store = store_lib.load_store('notes', 'validation', 'byte', data_config.store_dir)
  assert store.doc_ids == held == [d for d, _ in tasks.split_documents('notes', 'validation')]
  assert store_lib.load_store('notes', 'train', 'byte', data_config.store_dir).doc_ids == [
      doc_id for doc_id in ids if doc_id not in held]


_SEQIO_TEXTS = {'train': [f'story {i}: ' + 'la ' * (i % 7) for i in range(60)],
                'validation': [f'held {i}' for i in range(6)]}


def _shout(dataset):
  """The registered task's own preprocessor: its documents are upper-cased."""
  return dataset.map(lambda example: {'text': tf.strings.upper(example['text'])})


def _register_seqio_task(name: str, vocabulary: seqio.Vocabulary) -> None:
  """A seqio Task as a t5x user registers one: a local function source, its own preprocessors and
  output features."""
  dataset_fn = lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices(
      {'text': _SEQIO_TEXTS[split]})
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=seqio.FunctionDataSource(dataset_fn, splits=('train', 'validation')),
      preprocessors=[_shout,
                     functools.partial(seqio.preprocessors.rekey, key_map={'targets': 'text'}),
                     seqio.preprocessors.tokenize, seqio.preprocessors.append_eos],
      output_features={'targets': seqio.Feature(vocabulary, add_eos=True)})


def test_a_registered_seqio_task_and_mixture_train_by_name(data_config):
  vocabulary = vocabularies.make_vocabulary('byte')
  _register_seqio_task('t5x_stories', vocabulary)
  if 't5x_mix' in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove('t5x_mix')
  seqio.MixtureRegistry.add('t5x_mix', [('t5x_stories', 3.0), ('stdlib_code', 1.0)])
  data_config.mixture = {'t5x_mix': 1.0}
  data_config.seq_len = 64
  data = pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=10)
  assert data.task_names == ['stdlib_code', 't5x_stories']
  assert data.mixture_weights(0) == {'stdlib_code': 0.25, 't5x_stories': 0.75}
  for split in tasks.SPLITS:  # the task's own preprocessor ran; our store holds its ids
    store = store_lib.load_store('t5x_stories', split, 'byte', data_config.store_dir)
    assert store.doc_ids == [f't5x_stories/{split}/{i}' for i in range(len(_SEQIO_TEXTS[split]))]
    assert [vocabulary.decode(store.document(i).tolist()) for i in range(store.num_documents)] == [
        text.upper() for text in _SEQIO_TEXTS[split]]
    assert all(store.document(i)[-1] == vocabulary.eos_id for i in range(store.num_documents))
  story = data.task_names.index('t5x_stories')
  tasks_B, _ = data.example_sources(0)
  batch = data.batch(0)
  shown = vocabulary.decode(batch['targets'][tasks_B == story][0].tolist())
  assert shown in {text.upper() for text in _SEQIO_TEXTS['train']}  # decoded up to its EOS
  eval_batch, = pipeline.eval_batches(data_config, 't5x_stories', batch_size=8, num_batches=1)
  held = {vocabulary.decode(targets[segment_ids == segment].tolist())
          for targets, segment_ids in zip(eval_batch['targets'], eval_batch['segment_ids'])
          for segment in set(segment_ids.tolist()) - {0}}
  assert held == {text.upper() for text in _SEQIO_TEXTS['validation']}


def test_a_seqio_task_of_another_vocabulary_or_split_is_refused(data_config):
  _register_seqio_task('t5x_other_ids', seqio.PassThroughVocabulary(300))
  data_config.mixture = {'t5x_other_ids': 1.0}
  with pytest.raises(errors.UserError, match=r"Task 't5x_other_ids' is a seqio Task tokenized by "
                     r'its own output features, with a PassThroughVocabulary of 300 ids, which is '
                     r'not data.vocabulary \(a ByteVocabulary of 259 ids\)'):
    pipeline.TrainData(data_config, batch_size=8, seed=0, total_steps=10)
  _register_seqio_task('t5x_stories', vocabularies.make_vocabulary('byte'))
  data_config.tasks = ml_collections.ConfigDict({'stories': {
      'source': 'seqio', 'task': 't5x_stories', 'validation_split': 'test'}})
  with pytest.raises(errors.UserError, match=r"seqio task 't5x_stories' has no split 'test' \(its "
                     r"splits: \['train', 'validation'\]\), which task 'stories' reads as its "
                     r'validation split'):
    tasks.register_config_tasks(data_config)


def test_a_source_error_inside_tf_data_is_raised_as_it_was(data_config, tmp_path):
  path = tmp_path / 'bad.jsonl'
  path.write_text('{"text": "fine"}\n{"body": "no text"}\n', encoding='utf-8')
  data_config.tasks = ml_collections.ConfigDict({'bad_lines': {
      'source': 'files', 'pattern': str(path), 'format': 'jsonl'}})
  tasks.register_config_tasks(data_config)
  dataset = tasks.get_task('bad_lines').source.get_dataset(split='train', shuffle=False)
  with pytest.raises(errors.UserError) as raised:  # not tf.data's InvalidArgumentError
    list(tasks.numpy_examples(dataset))
  assert str(raised.value) == (
      f"{path} line 2 has no string field 'text' (its fields: ['body']); set "
      'data.tasks.bad_lines.text_field to the field holding the text.')
