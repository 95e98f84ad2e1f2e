"""Reading a finished run (research/runs.py) from a local directory and from a bucket, and a bucket
that cannot be reached. TensorFlow's ram:// file system stands in for a bucket: like gs:// it is
not a local path, so os.path cannot read it. gs:// itself cannot be reached from the tests (no
credentials, no network), which is the case the one-line error is for."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from experiments import base
from research import errors, finished, runs
from research.analysis import report
from research.data import sources
from research.objectives import distillation

_UNREACHABLE = 'gs://no-such-bucket-for-tests'


def _write(path: str, text: str) -> None:
  tf.io.gfile.makedirs(os.path.dirname(path))
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(text)


@pytest.fixture(name='run', params=['local', 'bucket'])
def _run_fixture(request, tmp_path):
  """A finished run's directory (config.json of a d_model=96 model, checkpoints 3 and 6, two
  metrics lines), on local disk or in a bucket (ram://)."""
  root = str(tmp_path) if request.param == 'local' else f'ram://{tmp_path}'
  workdir = f'{root}/teacher'
  config = base.get_config()
  config.model.d_model = 96
  _write(f'{workdir}/config.json', json.dumps(config.to_dict()))
  for step in (3, 6):
    _write(f'{workdir}/checkpoints/{step}/default/manifest.ocdbt', 'arrays')
  _write(f'{workdir}/metrics.jsonl', '{"step": 1, "loss": 4.5}\n{"step": 2, "loss": 3.25}\n')
  return workdir


def test_a_run_reads_the_same_locally_and_in_a_bucket(run):
  assert runs.find_checkpoint(run, 'x') == (f'{run}/checkpoints', 6)
  assert runs.find_checkpoint(f'{run}/checkpoints/3', 'x') == (f'{run}/checkpoints', 3)
  assert runs.workdir(f'{run}/checkpoints/3/') == run
  assert runs.read_config(f'{run}/checkpoints/3', 'x')['model']['d_model'] == 96
  loaded = report.load_run(run)
  assert (loaded.name, loaded.config['model']['d_model']) == ('teacher', 96)
  assert loaded.metrics == {1: {'loss': 4.5}, 2: {'loss': 3.25}}


def test_a_teacher_in_a_bucket_is_read_and_checked(run):
  student = base.get_config()
  student.objective.distill.teacher = run
  teacher = distillation.teacher_config(student)
  assert teacher.model.d_model == 96 and teacher.objective.distill.teacher == ''
  student.model.vocab_size = 512
  with pytest.raises(errors.UserError, match=rf"objective.distill.teacher='{run}' has "
                     r'model.vocab_size=\d+ but this run has 512; distillation needs them equal'):
    distillation.teacher_config(student)


def test_scores_and_init_read_a_checkpoint_config_in_a_bucket(run):
  config = finished.checkpoint_config(f'{run}/checkpoints/3', '--checkpoint')
  assert config.model.d_model == 96 and config.train.steps == base.get_config().train.steps
  missing = os.path.join(run, 'checkpoints', '9')
  with pytest.raises(errors.UserError, match=f'init.path={missing} holds no checkpoint'):
    runs.find_checkpoint(missing, f'init.path={missing}')
  with pytest.raises(errors.UserError, match=f'--checkpoint={run}/nowhere does not exist'):
    finished.checkpoint_config(f'{run}/nowhere')


def test_a_run_without_config_names_the_key_and_the_file(tmp_path):
  workdir = f'ram://{tmp_path}/empty'
  _write(f'{workdir}/checkpoints/1/x', '')
  config = base.get_config()
  config.objective.distill.teacher = workdir
  with pytest.raises(errors.UserError, match=rf"objective.distill.teacher='{workdir}' has no "
                     rf'config.json \({workdir}/config.json\)'):
    distillation.teacher_config(config)
  _write(f'{workdir}/config.json', '[1, 2]')
  with pytest.raises(errors.UserError, match=f'{workdir}/config.json is not a JSON object'):
    runs.read_config(workdir, 'x')


def test_an_unreachable_bucket_is_one_line_naming_the_path_and_how_to_authenticate():
  teacher = f'{_UNREACHABLE}/teacher'
  config = base.get_config()
  config.objective.distill.teacher = teacher
  with pytest.raises(errors.UserError, match=rf"^Cannot reach objective.distill.teacher="
                     rf"'{teacher}' \(.*\)\. Authenticate .* `gcloud auth application-default "
                     'login`') as error:
    distillation.teacher_config(config)
  assert '\n' not in str(error.value)
  with pytest.raises(errors.UserError, match=rf'^Cannot reach init.path={_UNREACHABLE}/run '):
    runs.find_checkpoint(f'{_UNREACHABLE}/run', f'init.path={_UNREACHABLE}/run')
  with pytest.raises(errors.UserError, match=rf"^Cannot reach data.tasks.notes.pattern="
                     rf"'{_UNREACHABLE}/\*.jsonl' "):
    sources.matching_files(f'{_UNREACHABLE}/*.jsonl', 'notes')


def test_only_a_bucket_error_becomes_the_authentication_message(tmp_path):
  with pytest.raises(errors.UserError, match=r'^Cannot reach --workdir=gs://b/run \(403 '
                     r'Forbidden\)\. Authenticate'):
    with errors.reaching('gs://b/run', '--workdir=gs://b/run'):
      raise tf.errors.PermissionDeniedError(None, None, '403 Forbidden\nmore detail')
  with pytest.raises(tf.errors.NotFoundError):  # not found is for the caller to say
    with errors.reaching('gs://b/run', '--workdir=gs://b/run'):
      raise tf.errors.NotFoundError(None, None, 'no such object')
  with pytest.raises(PermissionError):  # a local path's errors are not about credentials
    with errors.reaching(str(tmp_path), f'--workdir={tmp_path}'):
      raise PermissionError(13, 'Permission denied')


# No credentials and no metadata server to ask for them: Google's libraries fail at once.
_NO_CREDENTIALS = {'NO_GCE_CHECK': 'True', 'GCE_METADATA_HOST': '127.0.0.1:9',
                   'GCE_METADATA_IP': '127.0.0.1:9'}


@pytest.mark.parametrize('flags, named', [
    ([f'--workdir={_UNREACHABLE}/run'], f'--workdir={_UNREACHABLE}/run'),
    (['--workdir=WORKDIR', f'--config.objective.distill.teacher={_UNREACHABLE}/teacher',
      '--config.train.loss_chunk=0'], f"objective.distill.teacher='{_UNREACHABLE}/teacher'"),
])
def test_the_command_line_says_in_one_line_that_a_bucket_needs_credentials(
    data_dir, tmp_path, flags, named):
  env = {**{k: v for k, v in os.environ.items() if k != 'GOOGLE_APPLICATION_CREDENTIALS'},
         **_NO_CREDENTIALS, 'CLOUDSDK_CONFIG': str(tmp_path / 'gcloud')}
  command = [sys.executable, '-m', 'launch.train', '--config=experiments/quickstart.py',
             f'--config.data.store_dir={data_dir}', '--config.train.steps=2',
             *[flag.replace('WORKDIR', str(tmp_path / 'run')) for flag in flags]]
  done = subprocess.run(command, capture_output=True, text=True, check=False, env=env, timeout=240)
  assert done.returncode == 2, done.stderr[-3000:]
  lines = done.stderr.strip().splitlines()
  assert len(lines) <= 3, done.stderr[-3000:]
  assert lines[-1].startswith(f'error: Cannot reach {named} (')
  assert '`gcloud auth application-default login`' in lines[-1]
  assert 'Traceback' not in done.stderr


def _old_config(**data) -> dict:
  """A config.json as written before the ordering keys were grouped under data.order
  (defaults.MOVED_KEYS): the flat keys `data`, no data.order."""
  config = base.get_config().to_dict()
  del config['data']['order']
  config['data'].update(data)
  return config


def test_an_old_runs_flat_ordering_keys_load_at_their_new_place(tmp_path):
  pacing = {**base.get_config().data.order.pacing.to_dict(), 'function': 'linear'}
  old = _old_config(order_by='ref:nll', ordering='easy_to_hard', pack_order='score', folds=5,
                    pacing=pacing)
  _write(f'{tmp_path}/old/config.json', json.dumps(old))
  order = finished.load_config(f'{tmp_path}/old', 'x').data.order
  assert (order.by, order.name, order.pack, order.folds) == ('ref:nll', 'easy_to_hard', 'score', 5)
  assert order.pacing.to_dict() == pacing and order.row_score == 'mean'  # the default
  moved = runs.moved_keys(old)
  assert 'order_by' not in moved['data'] and moved['data']['order'] == {
      'by': 'ref:nll', 'name': 'easy_to_hard', 'pack': 'score', 'folds': 5, 'pacing': pacing}
  assert 'order' not in old['data']  # the run's config is left as it was


def test_an_old_and_a_new_run_of_the_same_order_differ_in_nothing_but_what_was_swept(tmp_path):
  new = base.get_config()
  new.data.order.name, new.data.order.by, new.seed = 'easy_to_hard', 'ref:nll', 1
  configs = {'old': _old_config(ordering='easy_to_hard', order_by='ref:nll'),
             'new': new.to_dict()}
  for name, config in configs.items():
    _write(f'{tmp_path}/{name}/config.json', json.dumps(config))
    _write(f'{tmp_path}/{name}/metrics.jsonl', '{"step": 1, "loss": 4.5}\n')
  loaded = [report.load_run(f'{tmp_path}/{name}') for name in configs]
  assert report.swept_values(loaded) == {'old': {'seed': 0}, 'new': {'seed': 1}}
