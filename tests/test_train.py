"""End-to-end training: sharded = unsharded, accumulation = big batch, resume = uninterrupted."""

import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments import base
from research import checkpoint, train
from tests import commands


def tiny_config(data_dir, **mesh):
  config = base.get_config()
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 64, 2, 128
  config.model.num_heads, config.model.head_dim = 2, 32
  config.data.seq_len, config.data.store_dir = 64, data_dir
  config.train.steps, config.train.batch_size, config.train.log_every = 6, 8, 1
  config.schedule.warmup_steps = 2
  config.eval.every, config.eval.batches, config.eval.batch_size = 3, 1, 8
  config.checkpoint.every = 3
  for axis, size in mesh.items():
    config.mesh[axis] = size
  return config


def read_metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def train_losses(workdir):
  return [m['loss'] for m in read_metrics(workdir) if 'loss' in m]


@pytest.fixture(scope='module')
def single_device_run(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('single'))
  state = train.train(tiny_config(data_dir, data=1), workdir, devices=jax.devices()[:1])
  return workdir, state


def test_run_writes_the_contracted_files(single_device_run):
  workdir, state = single_device_run
  assert int(state.step) == 6
  with open(os.path.join(workdir, 'config.json'), encoding='utf-8') as f:
    assert json.load(f)['train']['steps'] == 6
  lines = read_metrics(workdir)
  train_lines = [m for m in lines if 'loss' in m]
  assert [m['step'] for m in train_lines] == [1, 2, 3, 4, 5, 6]
  for line in train_lines:
    assert {'learning_rate', 'tokens_per_second', 'mfu', 'grad_norm', 'accuracy'} <= set(line)
    assert line['tokens_per_second'] > 0 and 0 < line['mfu'] < 1
    assert line['data/stdlib_prose/weight'] == line['data/stdlib_code/weight'] == 0.5
  eval_lines = [m for m in lines if any(k.startswith('eval/') for k in m)]
  assert [m['step'] for m in eval_lines] == [3, 6]
  for task in ('stdlib_prose', 'stdlib_code'):
    loss, bpb = eval_lines[-1][f'eval/{task}/loss'], eval_lines[-1][f'eval/{task}/bits_per_byte']
    # Byte tokens: bits per byte is the loss in bits, a little above it for the zero-byte EOS.
    assert 0 < loss < np.log(384) and bpb >= loss / np.log(2) * 0.999
  assert os.listdir(os.path.join(workdir, 'tb'))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['3', '6']


def test_workdirs_on_a_bucket_keep_their_url(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert str(checkpoint.checkpoint_dir('gs://bucket/runs/a')) == 'gs://bucket/runs/a/checkpoints'
  assert str(checkpoint.checkpoint_dir('runs/a')) == str(tmp_path / 'runs/a/checkpoints')


def test_sharded_run_matches_one_device_and_shards_parameters(single_device_run, data_dir, tmp_path):
  workdir, _ = single_device_run
  state = train.train(tiny_config(data_dir, data=2, fsdp=2, tensor=2), str(tmp_path))
  np.testing.assert_allclose(train_losses(str(tmp_path)), train_losses(workdir), rtol=1e-5)
  gate = state.params['layers']['mlp']['gate']  # [layers, embed, mlp]
  assert gate.sharding.spec == P(None, 'fsdp', 'tensor')
  assert {s.data.shape for s in gate.addressable_shards} == {(2, 32, 64)}
  embedding = state.params['embedding']  # [vocab, embed]
  assert embedding.sharding.spec == P('tensor', 'fsdp')
  assert {s.data.shape for s in embedding.addressable_shards} == {(192, 32)}
  mu = state.opt_state[1][0].mu['layers']['mlp']['down']  # optimizer state is sharded too
  assert mu.sharding.spec == P(None, 'tensor', 'fsdp')


def test_interrupted_and_resumed_run_is_bit_identical(single_device_run, data_dir, tmp_path):
  workdir, uninterrupted = single_device_run
  config = tiny_config(data_dir, data=1)
  config.checkpoint.keep = 1
  first = train.train(config, str(tmp_path), stop_after=4, devices=jax.devices()[:1])
  assert os.listdir(os.path.join(str(tmp_path), 'checkpoints')) == ['4']  # the interrupted step
  assert int(first.step) == 4
  resumed = train.train(config, str(tmp_path), devices=jax.devices()[:1])
  assert int(resumed.step) == 6
  assert os.listdir(os.path.join(str(tmp_path), 'checkpoints')) == ['6']  # keep=1: the last only
  for a, b in zip(jax.tree.leaves(uninterrupted.params), jax.tree.leaves(resumed.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert train_losses(str(tmp_path)) == train_losses(workdir)
  # A finished run re-run is a no-op that returns the final state.
  again = train.train(config, str(tmp_path), devices=jax.devices()[:1])
  assert int(again.step) == 6 and len(train_losses(str(tmp_path))) == 6


def test_gradient_accumulation_equals_one_big_batch(data_dir):
  from research.data import pipeline
  devices = jax.devices()[:2]
  states = []
  for micro_batches in (1, 4):
    config = tiny_config(data_dir, data=2)
    config.train.micro_batches = micro_batches
    # Adam's first step is g / (|g| + eps): with a tiny eps it maps a rounding-level difference of a
    # near-zero gradient to a whole step. A larger eps keeps the comparison about the gradient.
    config.train.eps = 1e-4
    trainer = train.Trainer(config, devices)
    batch = pipeline.TrainData(config.data, config.train.batch_size, config.seed,
                               config.train.steps).batch(0)
    batch['weights'][0, :40] = 0.0  # micro-batches of unequal token counts: means would not add up
    state, metrics = trainer.step(trainer.init_state(), trainer.place(batch), train.step_rng(0, 0))
    states.append((state, metrics))
  (big, big_metrics), (accumulated, accumulated_metrics) = states
  np.testing.assert_allclose(accumulated_metrics['loss'], big_metrics['loss'], rtol=1e-6)
  np.testing.assert_allclose(accumulated_metrics['tokens'], big_metrics['tokens'])
  for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(accumulated.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # The update itself is not trivial: parameters moved by far more than the tolerance.
  init = train.Trainer(tiny_config(data_dir, data=2), devices).init_state()
  moved = max(float(np.abs(np.asarray(a) - np.asarray(b)).max())
              for a, b in zip(jax.tree.leaves(init.params), jax.tree.leaves(big.params)))
  assert moved > 1e-4


def _two_updates(tx, params, grads_1, grads_2):
  state = tx.init(params)
  _, state = tx.update(grads_1, state, params)
  return tx.update(grads_2, state, params)[0]


def test_optimizer_clips_the_global_norm_before_adam():
  config = base.get_config().train
  config.grad_clip, config.weight_decay = 1.0, 0.0
  params = {'kernel': jnp.ones((2, 2))}
  big, small = {'kernel': jnp.full((2, 2), 50.0)}, {'kernel': jnp.full((2, 2), 0.1)}  # norms 100, 0.2
  clipped_big = {'kernel': jnp.full((2, 2), 0.5)}  # global norm 1
  with_clip = _two_updates(train.make_optimizer(config, lambda step: 0.1), params, big, small)
  config.grad_clip = 0.0
  no_clip = train.make_optimizer(config, lambda step: 0.1)
  np.testing.assert_allclose(with_clip['kernel'], _two_updates(no_clip, params, clipped_big, small)['kernel'],
                             rtol=1e-6)
  # Adam's second step depends on the first gradient's scale, so clipping really changed it.
  assert np.abs(with_clip['kernel'] - _two_updates(no_clip, params, big, small)['kernel']).max() > 1e-3


def test_weight_decay_applies_to_matrices_not_norm_scales():
  config = base.get_config().train
  config.weight_decay = 0.5
  tx = train.make_optimizer(config, lambda step: 0.1)
  params = {'kernel': jnp.ones((2, 2)), 'norm': {'scale': jnp.ones((2,))}}
  grads = {'kernel': jnp.ones((2, 2)), 'norm': {'scale': jnp.ones((2,))}}
  updates, _ = tx.update(grads, tx.init(params), params)
  # Adam's first step is -lr * sign(g); decoupled decay adds -lr * wd * param on matrices only.
  np.testing.assert_allclose(updates['kernel'], -0.1 * (1 + 0.5) * np.ones((2, 2)), rtol=1e-5)
  np.testing.assert_allclose(updates['norm']['scale'], -0.1 * np.ones(2), rtol=1e-5)


def multi_host_config(data_dir, **mesh):
  """`tiny_config` with 4 heads, so that a tensor axis of 4 splits them, and one layer (every
  parameter kind, stacked as the scan has it, at half the compile time)."""
  config = tiny_config(data_dir, **mesh)
  config.model.num_heads, config.model.head_dim, config.model.num_layers = 4, 16, 1
  return config


_WORKER = """
import json, sys
from research import checkpoint, train
from tests.test_train import multi_host_config
data_dir, address = sys.argv[1:3]
process_id, runs = int(sys.argv[3]), json.loads(sys.argv[4])
restore = checkpoint.restore_latest
def restore_and_say(*args):  # each process prints the step it resumes from
  state = restore(*args)
  print('restored step', None if state is None else int(state.step), flush=True)
  return state
checkpoint.restore_latest = restore_and_say
for workdir, mesh in runs:
  config = multi_host_config(data_dir, **mesh)
  config.distributed.coordinator_address = address
  config.distributed.num_processes, config.distributed.process_id = 2, process_id
  train.train(config, workdir)
"""
# Meshes whose axes cross the two hosts in different ways: the batch replicated on both (the
# tensor axis spans them), split over both, and split by fsdp.
MULTI_HOST_MESHES = {'data1_tensor4': {'data': 1, 'tensor': 4},
                     'data2_tensor2': {'data': 2, 'tensor': 2},
                     'fsdp4': {'data': 1, 'fsdp': 4}}


def train_in_two_processes(data_dir, log_dir, runs):
  """Trains each (workdir, mesh) of `runs` in turn, in real 2-process jax.distributed jobs on
  localhost with 2 CPU devices each; returns what each process printed."""
  address = f'127.0.0.1:{commands.free_port()}'
  return commands.run_processes(
      [([sys.executable, '-c', _WORKER, data_dir, address, str(i), json.dumps(runs)],
        commands.device_env(2)) for i in range(2)], log_dir)


def test_two_processes_train_like_one_process_and_fall_back_together(data_dir, tmp_path):
  """Real 2-process jax.distributed runs on localhost, 2 CPU devices each, give the losses of one
  process with 4 devices, whichever mesh axes cross the hosts: each host computes the rows its
  devices hold (all of them when the batch is not split across hosts). One reference serves every
  mesh: a sharded run has the losses of an unsharded one (test_sharded_run_matches_one_device...).

  Then a checkpoint that one host fails to read while the other reads its part is set aside by both:
  every process resumes from the same older checkpoint (not a mixed state), and training on from
  there gives the losses the uninterrupted run had."""
  train_in_two_processes(data_dir, str(tmp_path),
                         [(str(tmp_path / name), mesh) for name, mesh in MULTI_HOST_MESHES.items()])
  reference = str(tmp_path / 'one_process')
  train.train(multi_host_config(data_dir, data=4), reference, devices=jax.devices()[:4])
  for name in MULTI_HOST_MESHES:
    np.testing.assert_allclose(train_losses(str(tmp_path / name)), train_losses(reference),
                               rtol=1e-5, err_msg=name)
    assert sorted(os.listdir(tmp_path / name / 'checkpoints')) == ['3', '6']

  from tests.test_faults import _corrupt  # here: test_faults imports this module
  workdir = str(tmp_path / 'fsdp4')  # parameters split over the hosts' devices
  directory = os.path.join(workdir, 'checkpoints')
  # Damages the array data process 1 wrote, which process 1 alone reads back.
  _corrupt(os.path.join(directory, '6', 'default', 'ocdbt.process_1'))
  printed = train_in_two_processes(data_dir, str(tmp_path), [(workdir, MULTI_HOST_MESHES['fsdp4'])])
  assert [re.findall(r'restored step (\S+)', text) for text in printed] == [['3'], ['3']]
  aside = os.path.join(workdir, 'failed_checkpoints', '6')
  assert (f'Checkpoint 6 in {directory} failed to restore (RuntimeError: it did not restore on '
          f'process 1 of 2). It was moved to {aside} for inspection.') in printed[0]
  assert 'Restored checkpoint 3 instead (the newest one that restores).' in printed[0]
  assert sorted(os.listdir(directory)) == ['3', '6']  # step 6 saved again
  losses = train_losses(workdir)  # steps 1-6, then 4-6 resumed
  assert len(losses) == 9
  np.testing.assert_allclose(losses[6:], losses[3:6], rtol=1e-6)
