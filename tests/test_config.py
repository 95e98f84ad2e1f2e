"""Bad input fails with one message naming the key, before anything compiles."""

import json
import os
import subprocess
import sys

import jax
import ml_collections
import pytest
from absl import flags

from experiments import base
from launch import cli
from research import config as config_lib
from research import errors

QUICKSTART = 'experiments/quickstart.py'


def _parse(*overrides, config=QUICKSTART):
  argv = ['prog', f'--config={config}', *overrides]
  values = flags.FlagValues()
  cli.define_config(values, sys_argv=argv)
  values(argv)
  return values.config


def test_quickstart_is_valid(tmp_path):
  config_lib.validate(_parse(), str(tmp_path / 'run'), jax.devices())


def test_command_line_override_sets_the_value():
  assert _parse('--config.train.steps=7').train.steps == 7


def test_unknown_key_on_the_command_line_is_one_line_naming_it(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'launch.train', f'--config={QUICKSTART}', f'--workdir={tmp_path}',
       '--config.train.stepz=7'], capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert "error: unknown config key 'train.stepz' in --config.train.stepz" in result.stderr
  assert 'Did you mean "steps"' in result.stderr and 'Traceback' not in result.stderr
  assert not os.listdir(tmp_path)  # nothing written


def test_a_moved_key_names_its_new_place_on_the_command_line_and_in_a_file(tmp_path):
  """An ordering key of before data.order (research/defaults.MOVED_KEYS), given as --config.KEY or
  set by an experiment file, is one line naming where it moved; nothing is written."""
  old_file = tmp_path / 'old.py'
  old_file.write_text('from experiments import quickstart\n\n\ndef get_config():\n'
                      '  config = quickstart.get_config()\n'
                      "  config.data.order_by = 'ref:nll'\n  return config\n")
  workdir = tmp_path / 'run'
  for config, override, where in (
      (QUICKSTART, '--config.data.ordering=folding', '--config.data.ordering'),
      (str(old_file), '--config.train.steps=7', f'the experiment file {old_file}')):
    result = subprocess.run([sys.executable, '-m', 'launch.train', f'--config={config}',
                             f'--workdir={workdir}', override], capture_output=True, text=True,
                            check=False, cwd=cli.PROJECT)
    old = where.rsplit('.', 1)[1] if where.startswith('--') else 'order_by'
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: Config key 'data.{old}' moved to 'data.order.{'name' if old == 'ordering' else 'by'}'"
        f" (it is grouped under 'data.order' now); rename it in {where}.")
  assert not workdir.exists()


def test_an_experiment_file_is_found_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # experiments/quickstart.py is not here: the project's is taken
  assert _parse('--config.train.steps=7').train.steps == 7
  assert _parse(config=os.path.join(cli.PROJECT, QUICKSTART)).train.steps == 300


def test_a_run_config_json_reruns_that_run_with_overrides(tmp_path):
  run = _parse('--config.train.steps=7', '--config.model.d_model=96')
  (tmp_path / 'config.json').write_text(json.dumps({**run.to_dict(), 'code_version': 'abc'}))
  rerun = _parse('--config.train.batch_size=4', config=str(tmp_path / 'config.json'))
  assert (rerun.train.steps, rerun.model.d_model, rerun.train.batch_size) == (7, 96, 4)
  with rerun.unlocked():
    rerun.train.batch_size = run.train.batch_size
  assert json.loads(rerun.to_json()) == json.loads(run.to_json())
  config_lib.validate(rerun, str(tmp_path / 'again'), jax.devices())


@pytest.mark.parametrize('given, named', [
    ('experiments/nope.py', 'there is no file experiments/nope.py in the working directory {cwd} '
     'nor in the project {project}; give an experiment file (experiments/NAME.py[:ARG]) or a '
     "finished run's WORKDIR/config.json"),
    ('run/config.json', 'the run has no config.json ({cwd}/run/config.json)'),
    ('run/settings.json', 'a JSON config is the config.json of a launch.train run')])
def test_a_config_that_is_not_there_is_an_error_saying_what_is_accepted(tmp_path, monkeypatch,
                                                                         given, named):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(flags.IllegalFlagValueError) as error:
    _parse(config=given)
  assert str(error.value).startswith(f'flag --config={given}: ' +
                                     named.format(cwd=tmp_path, project=cli.PROJECT)), error.value


def test_a_config_that_is_not_there_is_one_line_on_the_command_line(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'launch.train', '--config=experiments/nope.py',
       f'--workdir={tmp_path}/w'], capture_output=True, text=True, check=False, cwd=tmp_path,
      env={**os.environ, 'PYTHONPATH': cli.PROJECT})
  assert result.returncode == 2
  line, = result.stderr.strip().splitlines()
  assert line.startswith('error: flag --config=experiments/nope.py: there is no file'), line


def test_path_lists_rejoin_the_run_directories_of_a_sweep(tmp_path):
  """A sweep names its runs 'key=value,seed=0': a list of paths keeps such a directory whole."""
  for name in ('a=1,seed=0', 'a=1,seed=1', 'b'):
    (tmp_path / name).mkdir()
  runs = [str(tmp_path / name) for name in ('a=1,seed=0', 'b', 'a=1,seed=1')]
  assert cli.PathListParser().parse(','.join(runs)) == runs
  # Paths that do not exist here (a bucket, a typo) stay split at every comma.
  assert cli.rejoin_paths(['gs://x/a', 'gs://x/b']) == ['gs://x/a', 'gs://x/b']
  assert cli.rejoin_paths([str(tmp_path / 'a=1'), 'seed=2']) == [str(tmp_path / 'a=1'), 'seed=2']


def test_wrong_type_on_the_command_line_is_named():
  with pytest.raises(flags.IllegalFlagValueError, match=r'train.steps'):
    _parse('--config.train.steps=many')


def test_unknown_key_in_an_experiment_file_is_named():
  config = base.get_config()
  with pytest.raises(AttributeError, match=r'stepz'):
    config.train.stepz = 3


def test_schema_check_names_unknown_keys_and_wrong_types(tmp_path):
  config = base.get_config()
  with config.unlocked():
    config.train.stepz = 3
  with pytest.raises(errors.UserError, match=r"Unknown config key 'train.stepz'"):
    config_lib.validate(config, str(tmp_path), jax.devices())
  raw = base.get_config().to_dict()  # a config built by hand, not from base: any type goes in
  raw['model']['d_model'] = '256'
  config = ml_collections.ConfigDict(raw)
  with pytest.raises(errors.UserError, match=r"'model.d_model' must be of type int"):
    config_lib.validate(config, str(tmp_path), jax.devices())
  raw = base.get_config().to_dict()
  raw['model']['qk_norm'] = 1
  config = ml_collections.ConfigDict(raw)
  with pytest.raises(errors.UserError, match=r"'model.qk_norm' must be of type bool"):
    config_lib.validate(config, str(tmp_path), jax.devices())


@pytest.mark.parametrize('old, value, new', [
    ('data.order_by', 'ref:nll', 'data.order.by'),
    ('data.ordering', 'easy_to_hard', 'data.order.name'),
    ('data.pack_order', 'score', 'data.order.pack'),
])
def test_a_moved_key_is_named_with_its_new_place(tmp_path, old, value, new):
  raw = base.get_config().to_dict()  # as a config with the key before data.order grouped it
  raw['data'][old.split('.')[1]] = value
  with pytest.raises(errors.UserError) as raised:
    config_lib.validate(ml_collections.ConfigDict(raw), str(tmp_path), jax.devices())
  assert str(raised.value) == (
      f"Config key '{old}' moved to '{new}' (it is grouped under 'data.order' now); rename it in "
      'the experiment file or the --config flag.')


def test_batch_not_divisible_by_data_parallel_size(tmp_path):
  config = _parse('--config.train.batch_size=6', '--config.mesh.data=4', '--config.mesh.tensor=2')
  with pytest.raises(errors.UserError, match=r'train.batch_size=6 must be divisible .* multiple of 4'):
    config_lib.validate(config, str(tmp_path), jax.devices())
  config = _parse('--config.train.batch_size=8', '--config.train.micro_batches=4', '--config.mesh.data=4',
                  '--config.mesh.tensor=2')
  with pytest.raises(errors.UserError, match=r'train.batch_size=8 .* multiple of 16'):
    config_lib.validate(config, str(tmp_path), jax.devices())


def test_mesh_larger_than_the_devices(tmp_path):
  config = _parse('--config.mesh.data=4', '--config.mesh.fsdp=4')
  with pytest.raises(errors.UserError, match=r'needs 16 devices but 8 are available'):
    config_lib.validate(config, str(tmp_path), jax.devices())


def test_workdir_that_is_a_file(tmp_path):
  path = tmp_path / 'a_file'
  path.write_text('not a directory')
  with pytest.raises(errors.UserError, match=r'--workdir=.*a_file is a file'):
    config_lib.validate(_parse(), str(path), jax.devices())
  assert path.read_text() == 'not a directory'


@pytest.mark.parametrize('override, message', [
    ('--config.model.dtype=float16', r"model.dtype='float16' is not supported"),
    ('--config.model.remat=some', r"model.remat='some' is not a remat policy"),
    ('--config.model.vocab_size=100', r'model.vocab_size=100 is smaller than the vocabulary'),
    ('--config.train.steps=0', r"'train.steps' must be positive"),
    ('--config.schedule.name=cosine', r"schedule.name='cosine' is not a known schedule"),
    ('--config.objective.name=ul3', r"objective.name='ul3' is not an objective"),
    ('--config.model.architecture=encoder_decoder',
     r"objective.name='causal_lm' trains a decoder"),
    ('--config.objective.name=ul2', r'data.extra_ids=0 is too few'),
    ('--config.eval.objectives=("R5",)', r"eval.objectives: 'R5' is neither"),
    ('--config.objective.distill.teacher=/nowhere',
     r"objective.distill.teacher='/nowhere' has no config.json"),
    ('--config.eval.tasks=("stdlib_pros",)',
     r"eval.tasks names an unknown task 'stdlib_pros'; did you mean \['stdlib_prose'"),
    ("--config.init.step=continue", r"init.step='continue' is not one of \('reset', 'keep'\)"),
])
def test_bad_values_are_named(tmp_path, override, message):
  with pytest.raises(errors.UserError, match=message):
    config_lib.validate(_parse(override), str(tmp_path), jax.devices())


def test_unknown_task_in_the_mixture(tmp_path):
  config = base.get_config()
  config.data.mixture = ml_collections.ConfigDict({'stdlib_pros': 1.0})
  with pytest.raises(errors.UserError, match=r'stdlib_pros'):
    config_lib.validate(config, str(tmp_path), jax.devices())


@pytest.mark.parametrize('name, args', [
    ('curriculum_arithmetic', [None]),
    ('data_diet', ['prune', 'score_run']),
    ('skillit_lego', ['uniform', 'target_only', 'skillit', 'graph_run', 'study']),
    ('moe_load_balancing', [None]),
    ('continual_rewarm', ['continue', 'scratch', 'pretrain']),
    ('ul2_mixture_of_denoisers', ['decoder']),
    ('scaling', [None]),
    ('stability_gap', [None]),  # the continuation; its pretrain run: tests/test_stability_gap.py
    ('instability', [None]),
    ('end_upsampling', [None]),
    ('repeated_data', [None]),
    ('control_tokens', [None]),
    ('meco', ['meco', 'baseline']),
    ('icl_diversity', ['regression', 'classification']),
    ('biographies', [None]),
    ('knowledge_probes', ['schedules', 'batch']),
    ('codegen2', [None]),
    ('zipfit', [None]),
    ('salt', ['teacher']),  # the student's sweep keys on the teacher's config (no teacher run here)
    ('continual_replay', ['replay', 'union', 'infinite', 'pretrain_infinite']),
    ('powerlaw_replay', [None]),
    ('galore_rank', [None, 'adamw_lr']),
    ('length_warmup', [None]),
])
def test_experiment_configs_and_their_sweep_points_are_valid(name, args, tmp_path):
  """Each config of an experiment file, and each point of its sweep (get_sweep(arg) where it takes
  the config's argument), passes validation: a bad data.select or mixture fails here, not in the
  middle of a sweep."""
  import copy
  import importlib
  import inspect
  from research.analysis import sweep
  module = importlib.import_module(f'experiments.{name}')
  takes_arg = bool(inspect.signature(module.get_sweep).parameters)
  for arg in args:
    config = module.get_config() if arg is None else module.get_config(arg)
    config_lib.validate(config, str(tmp_path / 'run'), jax.devices())
    try:
      points = module.get_sweep(arg) if takes_arg else module.get_sweep()
    except ValueError:  # a config without a sweep of its own
      points = []
    for point in points:
      checked = copy.deepcopy(config)
      for key, value in point.items():
        sweep.apply(checked, key, value, f'experiments/{name}.py:{arg}')
      config_lib.validate(checked, str(tmp_path / 'run'), jax.devices())


def _set(config, key, value):
  *parents, last = key.split('.')
  for part in parents:
    config = config[part]
  config[last] = value


# (overrides of experiments/base.get_config(), the message): one bad value each, caught by
# validate before anything compiles, with the key's name in the message.
BAD_VALUES = [
    ({'seed': -1}, r"Config key 'seed' must be >= 0, got -1"),
    ({'model.dropout_rate': 1.0}, r"Config key 'model.dropout_rate' must be in \[0, 1\), got 1.0"),
    ({'model.dropout_rate': -0.1}, r"'model.dropout_rate' must be in \[0, 1\), got -0.1"),
    ({'model.norm_eps': 0.0}, r"Config key 'model.norm_eps' must be > 0, got 0.0"),
    ({'model.init_std': -0.02}, r"Config key 'model.init_std' must be > 0, got -0.02"),
    ({'model.rope_base': 0.0}, r"Config key 'model.rope_base' must be > 0, got 0.0"),
    ({'model.num_kv_heads': -2}, r'model.num_kv_heads=-2 must divide model.num_heads=4'),
    ({'model.num_kv_heads': 3}, r'model.num_kv_heads=3 must divide model.num_heads=4'),
    ({'model.rotary_fraction': 1.5}, r'model.rotary_fraction=1.5 must be in \[0, 1\]'),
    ({'model.head_dim': 33}, r'rotate an even number of the head_dim=33 dimensions'),
    ({'model.num_heads': 0}, r"Config key 'model.num_heads' must be positive, got 0"),
    ({'model.moe_every': 3, 'model.moe_experts': 4}, r'model.moe_every=3 must be >= 1 and divide'),
    ({'train.b1': 1.0}, r"Config key 'train.b1' must be in \[0, 1\), got 1.0; .* e.g. 0.9"),
    ({'train.b2': 1.5}, r"Config key 'train.b2' must be in \[0, 1\), got 1.5"),
    ({'train.eps': 0.0}, r"Config key 'train.eps' must be > 0, got 0.0"),
    ({'train.weight_decay': -0.1}, r"Config key 'train.weight_decay' must be >= 0, got -0.1"),
    ({'train.grad_clip': -1.0}, r"Config key 'train.grad_clip' must be >= 0, got -1.0"),
    ({'train.z_loss': -1e-4}, r"Config key 'train.z_loss' must be >= 0, got -0.0001"),
    ({'train.loss_chunk': -1}, r"Config key 'train.loss_chunk' must be >= 0, got -1"),
    ({'train.loss_chunk': 7},
     r'train.loss_chunk=7 must divide the length of the targets, data.seq_len=\d+; use a divisor'),
    ({'train.loss_chunk': 64, 'objective.distill.teacher': '/some/run'},
     r'train.loss_chunk=64 cannot be used with knowledge distillation'),
    ({'train.moe_lbl': -1.0}, r"Config key 'train.moe_lbl' must be >= 0"),
    ({'train.moe_z_loss': -1.0}, r"Config key 'train.moe_z_loss' must be >= 0"),
    ({'train.moe_balance': 'batch'}, r"train.moe_balance='batch' is not a balancing scope"),
    ({'schedule.peak_lr': 0.0}, r'schedule.peak_lr=0.0 must be > 0'),
    ({'schedule.warmup_steps': -1}, r'schedule.warmup_steps=-1 is negative'),
    ({'schedule.final_lr_fraction': 1.5}, r'schedule.final_lr_fraction=1.5 puts the floor above'),
    ({'schedule.decay_shape': 'cosin'},
     r"Config key 'schedule.decay_shape' must be one of \['linear', 'cosine'.*got 'cosin'"),
    ({'schedule.decay_fraction': 2.0},
     r"Config key 'schedule.decay_fraction' must be in \(0, 1\], got 2.0"),
    ({'schedule.name': 'wsd', 'schedule.decay_fraction': 0.0},
     r'schedule.decay_fraction=0.0 must be in \(0, 1\]'),
    ({'schedule.cycle_steps': -1}, r"Config key 'schedule.cycle_steps' must be >= 0, got -1"),
    ({'eval.every': 0}, r"Config key 'eval.every' must be positive, got 0"),
    ({'checkpoint.keep': 0}, r"Config key 'checkpoint.keep' must be positive, got 0"),
    ({'data.seq_len': 0}, r"Config key 'data.seq_len' must be positive, got 0"),
    ({'data.order.row_score': 'avg'},
     r"Config key 'data.order.row_score' must be one of \['mean', 'max', 'min'\], got 'avg'"),
    ({'data.order.folds': 0}, r"Config key 'data.order.folds' must be >= 1, got 0"),
    ({'data.select.keep': 'low'},
     r"Config key 'data.select.keep' must be one of \['lowest', 'highest'\], got 'low'"),
    ({'objective.loss': 'dice'},
     r"Config key 'objective.loss' must be one of \['cross_entropy', 'coverage'\], got 'dice'"),
    ({'objective.coverage_n': 0}, r"Config key 'objective.coverage_n' must be >= 1, got 0"),
    ({'train.loss_chunk': 64, 'objective.loss': 'coverage'},
     r"train.loss_chunk=64 cannot be used with objective.loss='coverage'"),
    ({'data.select.unit': 'bytes'},
     r"Config key 'data.select.unit' must be one of \['documents', 'tokens'\], got 'bytes'"),
    ({'data.skillit.metric': 'accuracy'}, r"Config key 'data.skillit.metric' must be one of"),
    ({'data.skillit.eta': -0.2}, r"Config key 'data.skillit.eta' must be >= 0, got -0.2"),
    ({'data.order.in_context.ngram': 0},
     r"Config key 'data.order.in_context.ngram' must be >= 1, got 0"),
    ({'data.replay.fraction': 1.5}, r'data.replay.fraction=1.5 must be in \[0, 1\)'),
    ({'objective.name': 'span_corruption', 'data.extra_ids': 100, 'data.seq_len': 4},
     r"data.seq_len=4 \(and objective.target_len=4\) leave no room for the denoisers \['R3_15'\]"),
    ({'objective.meco.cooldown_fraction': 1.5},
     r"Config key 'objective.meco.cooldown_fraction' must be in \[0, 1\), got 1.5"),
    ({'objective.control.drop_fraction': -0.1},
     r"Config key 'objective.control.drop_fraction' must be in \[0, 1\]"),
    ({'mesh.data': 3}, r'The mesh data=3 x fsdp=1 x tensor=1 x expert=1 needs 3 devices but 8'),
    ({'mesh.tensor': 3}, r'mesh.data use 3 devices, which does not divide the 8 devices'),
    ({'mesh.data': 0}, r'mesh.data=0 is not a valid mesh size'),
    ({'distributed.num_processes': 0},
     r"Config key 'distributed.num_processes' must be -1 or >= 1, got 0"),
    ({'distributed.num_processes': 2, 'distributed.process_id': 2},
     r"'distributed.process_id' must be -1 or in \[0, distributed.num_processes\), got 2"),
    ({'init.schedule': 'resume'},
     r"init.schedule='resume' is not one of \('restart', 'continue'\)"),
    ({'eval.multiple_choice.choices': 1},
     r"Config key 'eval.multiple_choice.choices' must be >= 2, got 1"),
    ({'eval.multiple_choice.shots': -1},
     r"Config key 'eval.multiple_choice.shots' must be >= 0, got -1"),
    ({'eval.multiple_choice.tasks': ('arithmetc',)},
     r"eval.multiple_choice.tasks names an unknown task 'arithmetc'; did you mean \['arithmetic'"),
    ({'eval.multiple_choice.tasks': ('arithmetic',), 'model.architecture': 'encoder_decoder',
      'objective.name': 'prefix_lm', 'data.extra_ids': 8},
     r"eval.multiple_choice.tasks=\('arithmetic',\) scores answers by left-to-right"),
]


def _case_id(value):
  return ','.join(f'{k}={v}' for k, v in value.items()) if isinstance(value, dict) else 'message'


@pytest.mark.parametrize('overrides, message', BAD_VALUES, ids=_case_id)
def test_bad_value_is_caught_before_compile_naming_the_key(tmp_path, overrides, message):
  config = base.get_config()
  for key, value in overrides.items():
    _set(config, key, value)
  with pytest.raises(errors.UserError, match=message):
    config_lib.validate(config, str(tmp_path / 'run'), jax.devices())


def test_the_skillit_study_arms_differ_from_the_identity_only_in_their_graph_or_eta():
  from experiments import skillit_lego
  from research.analysis import sweep
  arms = {}
  for name, overrides in skillit_lego.STUDY_ARMS.items():
    config = skillit_lego.get_config('study')
    for key, value in overrides.items():
      sweep.apply(config, key, value, name)
    arms[name] = config
  edges = {name: {(a, b) for a, row in c.data.skillit.graph.items() for b, w in row.items() if w}
           for name, c in arms.items()}
  paper = {(a, b) for a, row in skillit_lego.prerequisite_graph().items() for b in row}
  identity = {(s, s) for s in skillit_lego.SKILLS}
  assert edges['paper_graph'] == paper and edges['no_graph'] == edges['uniform'] == identity
  assert len(edges['shuffled_graph']) == len(paper) and not edges['shuffled_graph'] & (
      paper - identity)
  assert [c.data.skillit.eta for c in arms.values()] == [0.2, 0.2, 0.2, 0.0]
