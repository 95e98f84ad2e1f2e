"""Model-free scores as a Beam step over a built store (research/data/score_build.py, `python -m
launch.score --scorer=...`): ZIP-FIT (Obbad et al. 2024, arXiv 2410.18194), a word-list toxicity
share and a metadata timestamp (the Pretrainer's Guide's filters, Longpre et al. 2023, arXiv
2305.13169), written as the score files data.select.by reads; and data.select.between, the range of
scores a selection keeps (a time slice)."""

import json
import os

import ml_collections
import numpy as np
import pytest

from launch import score as score_command
from research import errors
from research.data import build, pipeline, score_build, score_files, selection, tasks, vocabularies
from research.data import store as store_lib
from tests import commands

# Three documents: a rude one, a sum, a sentence; their times as C4 writes them, or a plain year.
THREE = [{'text': 'You stupid idiot, what a pathetic plan.', 'timestamp': '2020-07-02T00:00:00Z'},
         {'text': '12+34=46', 'timestamp': '2019-01-01'},
         {'text': 'The assert statement checks a condition.', 'timestamp': 2015}]


def _task(data_config, tmp_path, files: list[list[dict]]) -> ml_collections.ConfigDict:
  """A files task 'notes' of the documents of `files` (a file each, in this order; with the
  `small_parts` fixture a shard each) and the target task 'sums' (arithmetic)."""
  source = tmp_path / 'notes'
  source.mkdir()
  for f, documents in enumerate(files):
    (source / f'part{f}.jsonl').write_text(''.join(json.dumps(d) + '\n' for d in documents))
  held_out = tmp_path / 'held_out.jsonl'
  held_out.write_text(json.dumps({'text': 'held out'}) + '\n')
  data_config.tasks = ml_collections.ConfigDict({
      'notes': {'source': 'files', 'pattern': str(source / '*.jsonl'), 'format': 'jsonl',
                'validation_pattern': str(held_out)},
      'sums': {'source': 'arithmetic', 'num_documents': 60}})
  data_config.mixture = ml_collections.ConfigDict({'notes': 1.0})
  data_config.seq_len, data_config.mixture_block = 64, 16
  tasks.register_config_tasks(data_config)
  return data_config


def _score(data_config, scorer, settings=None, out=None, workers=1):
  return score_build.score_store('notes', 'train', 'byte', 0, data_config.store_dir, scorer,
                                 settings or {}, out,
                                 build.pipeline_options('DirectRunner', num_workers=workers))


def _values(path, field):
  with open(path) as f:
    return [json.loads(line)[field] for line in f]


def _many(count: int) -> list[dict]:
  """`count` documents: prose, with a sum every fifth one; years 2010-2021 as a number and as a
  date; one rude word in every seventh."""
  return [{'text': (f'{i}+{i + 7}={2 * i + 7}' if i % 5 == 0 else
                    f'Note {i} on the module {"stupid " * (i % 7 == 0)}and its functions.'),
           'year': 2010 + i % 12, 'timestamp': f'{2010 + i % 12}-0{1 + i % 9}-15'}
          for i in range(count)]


def test_each_scorer_equals_a_direct_computation(data_config, tmp_path):
  config = _task(data_config, tmp_path, [THREE])
  store = store_lib.load_store('notes', 'train', 'byte', config.store_dir)
  assert [m['timestamp'] for m in store.metadata] == [d['timestamp'] for d in THREE]  # store order

  path, manifest = _score(config, 'toxicity')
  assert path == score_files.stored_path(store.directory, 'toxicity')
  # 'you stupid idiot what a pathetic plan': 3 of 7 words are in the built-in list.
  assert _values(path, 'toxicity') == [3 / 7, 0.0, 0.0]
  with open(path) as f:
    first = json.loads(f.readline())
  assert first == {'id': store.doc_ids[0], 'num_tokens': len(THREE[0]['text']) + 1,
                   'toxicity': 3 / 7}  # the byte vocabulary: a token a byte, then EOS
  assert (manifest['task'], manifest['split'], manifest['vocabulary'], manifest['num_documents'],
          manifest['store_fingerprint']) == ('notes', 'train', 'byte', 3,
                                             store.manifest['fingerprint'])
  words = tmp_path / 'words.txt'
  words.write_text('# my list\nPlan\n\nassert  # a debugging word\n')
  path, manifest = _score(config, 'toxicity', {'words': str(words)}, str(tmp_path / 'own.jsonl'))
  assert _values(path, 'toxicity') == [1 / 7, 0.0, 1 / 6]
  assert manifest['settings']['num_words'] == 2

  path, _ = _score(config, 'timestamp')
  assert _values(path, 'timestamp') == [2020.5, 2019.0, 2015.0]  # July 2 is day 183 of 366

  settings = {'target': 'sums', 'size': 7, 'seed': 3}
  path, manifest = _score(config, 'zipfit', settings)
  zipfit = selection.ZipFit('sums', 'train', 7, 'byte', 0, config.store_dir)
  targets = selection.zipfit_targets(zipfit, 3)
  assert len(targets) == 7 and all('=' in t for t in targets)
  np.testing.assert_array_equal(_values(path, 'zipfit'), selection.zipfit_alignment(
      [d['text'] for d in THREE], targets))
  assert manifest['settings'] == {**settings, 'split': 'train'}


def test_one_or_two_workers_write_the_same_bytes(data_config, tmp_path, small_parts):
  documents = _many(36)
  config = _task(data_config, tmp_path, [documents[:12], documents[12:24], documents[24:]])
  store = store_lib.load_store('notes', 'train', 'byte', config.store_dir)
  assert len(store.manifest['shards']) == 3
  settings = {'target': 'sums', 'size': 10}
  one, _ = _score(config, 'zipfit', settings, str(tmp_path / 'one.jsonl'))
  two, _ = _score(config, 'zipfit', settings, str(tmp_path / 'two.jsonl'), workers=2)
  with open(one, 'rb') as a, open(two, 'rb') as b:
    assert a.read() == b.read()
  assert len(_values(one, 'zipfit')) == 36
  assert sorted(os.listdir(tmp_path)) == ['held_out.jsonl', 'notes', 'one.jsonl',
                                          'one.jsonl.manifest.json', 'two.jsonl',
                                          'two.jsonl.manifest.json']  # no parts left


def _run_score(**flag_values) -> str:
  values = {'checkpoint': None, 'task': 'notes', 'text_file': None, 'out': None, 'name': None,
            'split': 'train', 'store_dir': None, 'num_workers': 1, **flag_values}
  return commands.run_main(score_command.main, **values)


def test_the_score_file_keeps_what_load_time_zipfit_keeps(data_config, tmp_path):
  config = _task(data_config, tmp_path, [_many(40)])
  printed = _run_score(scorer='zipfit', name='web', zipfit_target='sums', zipfit_size=12,
                       zipfit_seed=5, store_dir=config.store_dir)
  assert "data.select.by='web:zipfit'" in printed
  config.select.update({'by': 'zipfit', 'keep': 'highest', 'fraction': 0.2,
                        'zipfit': {'target': 'sums', 'split': 'train', 'size': 12}})
  at_load = pipeline.TrainData(config, batch_size=8, seed=5, total_steps=100).rows
  config.select.by = 'web:zipfit'
  from_file = pipeline.TrainData(config, batch_size=8, seed=5, total_steps=100).rows
  kept = from_file.stores['notes'].doc_ids
  assert kept == at_load.stores['notes'].doc_ids and len(kept) == 8
  store = store_lib.load_store('notes', 'train', 'byte', config.store_dir)
  zipfit = selection.ZipFit('sums', 'train', 12, 'byte', 0, config.store_dir)
  np.testing.assert_array_equal(  # the very scores, not only their ranks
      _values(score_files.stored_path(store.directory, 'web'), 'zipfit'),
      selection.zipfit_scores(store, zipfit, 5))
  assert sum('=' in t for t in from_file.stores['notes'].texts(vocabularies.make_vocabulary(
      'byte'))) == 8  # the 8 sums among 40 documents


def test_a_time_slice_by_a_metadata_year_or_a_timestamp_score(data_config, tmp_path):
  documents = _many(48)
  config = _task(data_config, tmp_path, [documents])
  expected = [d['year'] for d in documents if 2013 <= d['year'] <= 2016]
  config.select.update({'by': 'year', 'between': (2013, 2016)})  # a numeric metadata field
  data = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  assert [m['year'] for m in data.rows.stores['notes'].metadata] == expected
  _run_score(scorer='timestamp', name='dates', store_dir=config.store_dir)  # from '2013-04-15'
  config.select.update({'by': 'dates:timestamp', 'between': (2013, 2017)})  # before 2017
  by_date = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100).rows
  assert [m['year'] for m in by_date.stores['notes'].metadata] == expected
  assert by_date.selected['notes'].kept_documents == len(expected) == 16
  config.select.update({'between': (None, 2013), 'keep': 'highest', 'fraction': 1 / 3})
  newest = pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100).rows
  assert [m['year'] for m in newest.stores['notes'].metadata] == [2012] * 4  # 4 of the 12 before
  config.select.update({'between': (2030, None)})
  with pytest.raises(errors.UserError, match=r"data\.select\.between=\[2030\.0, None\] keeps none "
                     r"of the 48 .* scores run from 2010\..* to 2021\..*; widen it"):
    pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)


@pytest.mark.parametrize('between', [(2019, 2015), (2015,), ('2015', 2019), (float('nan'), 1)])
def test_a_bad_range_names_the_key(data_config, between):
  data_config.select.update({'by': 'random', 'between': between})
  with pytest.raises(errors.UserError, match=r'data\.select\.between=.* must be \(low, high\)'):
    pipeline.mixture_plan(data_config, 8, 100)
  data_config.select.by = ''
  with pytest.raises(errors.UserError, match=r'between=.* select by no score'):
    pipeline.mixture_plan(data_config, 8, 100)


@pytest.mark.parametrize('flag_values, match', [
    (dict(scorer='toxic'), r"--scorer='toxic' is not a model-free scorer; choose one of "
                           r"\['timestamp', 'toxicity', 'zipfit'\]"),
    (dict(scorer='zipfit'), r"--scorer=zipfit needs --zipfit_target='' to name the task"),
    (dict(scorer='zipfit', zipfit_target='sumz'), r'--zipfit_target.*sumz'),
    (dict(scorer='zipfit', zipfit_target='sums', zipfit_split='test'),
     r"--zipfit_split='test' must be one of \['train', 'validation'\]"),
    (dict(scorer='zipfit', zipfit_target='sums', zipfit_size=0),
     r'--zipfit_size=0 must be a positive integer'),
    (dict(scorer='zipfit', zipfit_target='sums', zipfit_seed=-1),
     r'--zipfit_seed=-1 must be an integer >= 0'),
    (dict(scorer='toxicity', toxicity_words='/nowhere/words.txt'),
     r'--toxicity_words=/nowhere/words\.txt does not exist'),
    (dict(scorer='timestamp', timestamp_field=''), r"--timestamp_field='' must name the metadata"),
    (dict(scorer='toxicity', zipfit_size=5), r'--zipfit_size is not read by --scorer=toxicity; '
                                              r"drop it \(its settings: \['--toxicity_words'\]"),
    (dict(scorer='toxicity', text_file='notes.txt'), r'--text_file is not read by --scorer'),
    (dict(scorer='toxicity', checkpoint=['runs/ref']),
     r'Give --checkpoint=DIR \(model scores\) or --scorer=NAME \(model-free\), not both'),
    (dict(scorer='toxicity', name='a/b'), r"--name='a/b'"),
    (dict(scorer='toxicity', task=None), r'--scorer=toxicity scores the store of a task'),
    (dict(), r"Give --checkpoint=DIR \(model scores\) or --scorer=NAME \(model-free, one of \["),
    (dict(checkpoint=['runs/ref'], toxicity_words='w.txt'),
     r'--toxicity_words is read by --scorer'),
])
def test_a_bad_scorer_or_setting_is_one_error_naming_the_flag(data_config, flag_values, match):
  _task_spec = {'source': 'arithmetic', 'num_documents': 60}
  data_config.tasks = ml_collections.ConfigDict({'notes': _task_spec, 'sums': _task_spec})
  tasks.register_config_tasks(data_config)
  with pytest.raises(SystemExit, match=r'^error: ' + match):
    _run_score(**{'store_dir': data_config.store_dir, **flag_values})


def test_a_bad_word_list_names_its_line(tmp_path):
  words = tmp_path / 'words.txt'
  words.write_text('stupid\nshut up\n')
  with pytest.raises(errors.UserError, match=r"words\.txt line 2 is 'shut up': give one word"):
    score_build.read_words(str(words))


def test_a_failed_run_leaves_the_earlier_file_and_nothing_else(data_config, tmp_path, small_parts):
  documents = _many(12)
  del documents[8]['timestamp']  # the first of the third shard
  config = _task(data_config, tmp_path, [documents[:4], documents[4:8], documents[8:]])
  path, _ = _score(config, 'toxicity', out=str(tmp_path / 'scores' / 'web.jsonl'))
  before = {name: (tmp_path / 'scores' / name).read_bytes()
            for name in os.listdir(tmp_path / 'scores')}
  assert sorted(before) == ['web.jsonl', 'web.jsonl.manifest.json']
  with pytest.raises(errors.UserError, match=r"--scorer=timestamp: document '.*part2\.jsonl:1' has "
                     r"no 'timestamp' \(its metadata: \['year'\]\); name the metadata field .* "
                     r'with --timestamp_field'):
    _score(config, 'timestamp', out=path)
  assert {name: (tmp_path / 'scores' / name).read_bytes()
          for name in os.listdir(tmp_path / 'scores')} == before


def test_a_worker_process_user_error_is_that_error_alone():
  text = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
          "research.errors.UserError: --scorer=timestamp: document 'a:1' has no 'timestamp'.\n\n"
          "research.errors.UserError: --scorer=timestamp: document 'a:1' has no 'timestamp'. "
          "[while running 'Score']\n")
  error = score_build.worker_error(RuntimeError(text))
  assert isinstance(error, errors.UserError)
  assert str(error) == "--scorer=timestamp: document 'a:1' has no 'timestamp'."
  assert score_build.worker_error(RuntimeError('disk full')) is None


def test_a_missing_model_free_score_names_the_scorer_command(data_config, tmp_path):
  config = _task(data_config, tmp_path, [THREE])
  config.select.update({'by': 'web:toxicity', 'fraction': 0.5})
  with pytest.raises(errors.UserError, match=r"score 'toxicity' of 'web' was not computed .* "
                     r'Compute it: python -m launch\.score --scorer=toxicity --task=notes '
                     r'--name=web --store_dir='):
    pipeline.TrainData(config, batch_size=8, seed=0, total_steps=100)
  assert set(score_files.MODEL_FREE) == set(score_build.SCORERS) == set(score_build.SETTINGS)
