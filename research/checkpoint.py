"""Checkpoints with orbax: async saves every N steps and at the end, keep the last K, resume.

A checkpoint's step is the number of completed training steps, so restoring checkpoint k and
training on continues with the batch of step k. Orbax commits a checkpoint atomically: an
interrupted save leaves no directory that restore would pick up. A checkpoint that is there but
fails to restore (truncated or corrupted files) is moved aside to WORKDIR/failed_checkpoints/ and
the one before it is restored. A save that fails with an I/O error (disk full, unwritable workdir)
stops the run with a UserError; the older checkpoints stay. Each checkpoint records the run's
config.json and the code version in its orbax custom metadata.
"""

import contextlib
import json
import os
import sys
from collections.abc import Iterator

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from research import errors, provenance


def make_manager(workdir: str,
                 checkpoint_config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=checkpoint_config.keep,
      enable_async_checkpointing=checkpoint_config.async_save,
      create=True,
  )
  return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


@contextlib.contextmanager
def managed(workdir: str, checkpoint_config: ml_collections.ConfigDict
            ) -> Iterator[ocp.CheckpointManager]:
  """`make_manager`, closed however the block ends. On an error the error is what the user sees: an
  unclosed manager leaves orbax's event loop to fail noisily at exit ("Event loop is closed"), and
  an error in closing is not reported over the first. A KeyboardInterrupt (the second Ctrl-C,
  research/preemption.py) leaves it open: closing would wait for a save in flight, and the command
  is to stop at once."""
  manager = make_manager(workdir, checkpoint_config)
  try:
    yield manager
  except KeyboardInterrupt:
    raise
  except BaseException:
    with contextlib.suppress(Exception):
      manager.close()
    raise
  manager.close()


def save_params(directory: str, params) -> None:
  """DIR/checkpoints/0: {'params': params} with orbax's StandardSave, a checkpoint every reader of
  one accepts (launch.convert's and launch.merge's outputs)."""
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(directory), 'checkpoints'),
                                  options=ocp.CheckpointManagerOptions(create=True))
  manager.save(0, args=ocp.args.StandardSave({'params': jax.tree.map(jax.numpy.asarray, params)}))
  manager.wait_until_finished()
  manager.close()


def checkpoint_dir(workdir: str) -> epath.Path:
  """WORKDIR/checkpoints, absolute: a local directory, or a bucket's (gs://...) as it is."""
  return epath.Path(workdir if '://' in workdir else os.path.abspath(workdir), 'checkpoints')


def _warn(text: str) -> None:
  """`text` on stderr, from the main process only."""
  if jax.process_index() == 0:
    print(text, file=sys.stderr, flush=True)


def _set_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves checkpoint `step` out of the manager's directory, to WORKDIR/failed_checkpoints/<step>
  (a numbered suffix if that is taken), so that orbax neither counts it for `keep` nor finds it as
  the latest step, and the run can save that step again; returns a sentence saying where it went.
  """
  source = epath.Path(manager.directory) / str(step)
  aside = epath.Path(manager.directory).parent / 'failed_checkpoints'
  target, n = aside / str(step), 1
  moved = None
  try:
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      while target.exists():
        target, n = aside / f'{step}.{n}', n + 1
      source.rename(target)
    moved = f'It was moved to {target} for inspection.'
  except Exception as e:  # pylint: disable=broad-except  (a bucket cannot rename a directory)
    moved = (f'It could not be moved aside ({type(e).__name__}: {e}) and is left in place: move or '
             f'delete {source} before the run saves step {step} again.')
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'research.checkpoint.set_aside.{step}')
  manager.reload()
  return moved


def _steps_of_process_0(manager: ocp.CheckpointManager) -> list[int]:
  """The manager's steps, newest first, as process 0 lists them, on every process (a host whose
  listing of the directory lags would try other steps than the rest)."""
  steps = np.array(sorted(manager.all_steps(), reverse=True), np.int32)
  if jax.process_count() == 1:
    return steps.tolist()
  count = int(multihost_utils.broadcast_one_to_all(np.int32(len(steps))))
  if jax.process_index() != 0:
    steps = np.zeros(count, np.int32)  # the shape broadcast_one_to_all needs; process 0 fills it
  return multihost_utils.broadcast_one_to_all(steps).tolist() if count else []


def _read(manager: ocp.CheckpointManager, step: int, abstract_state):
  """(checkpoint `step` restored onto the shardings of `abstract_state`, None), or (None, the error
  that stopped this process reading its shards of it).

  It reads with orbax's handler, not `manager.restore`: that ends in a barrier (a collective) which
  a process whose read failed never reaches, so the processes that read their shards would wait
  there for it, or pair that barrier with the next collective it makes. The parameters' shapes are
  compared with the checkpoint's metadata first: a failed read leaves tensorstore reads running,
  whose callbacks then print "Event loop is closed" tracebacks over the error.
  """
  try:  # a checkpoint of another model: reading would only fail, with reads left running
    check_shapes(saved_shapes(epath.Path(manager.directory), step)['params'],
                 abstract_state.params, f'checkpoint {step}')
  except errors.UserError as e:
    return None, e
  except Exception:  # pylint: disable=broad-except  (unreadable metadata: the read reports it)
    pass
  handler = ocp.StandardCheckpointHandler()
  try:
    return handler.restore(
        epath.Path(manager.directory) / str(step) / ocp.checkpoint_manager.DEFAULT_ITEM_NAME,
        args=ocp.args.StandardRestore(abstract_state)), None
  except Exception as e:  # pylint: disable=broad-except  (orbax and tensorstore raise many kinds)
    return None, e
  finally:
    handler.close()


def _failed_anywhere(error: Exception | None) -> Exception | None:
  """`error` (this process's, or None); if this process read the checkpoint but another did not,
  an error naming those; None when every process read it. A collective with several processes."""
  if jax.process_count() == 1:
    return error
  read = multihost_utils.process_allgather(np.int32(error is None))
  failed = [str(i) for i, ok in enumerate(read) if not ok]
  if error is None and failed:
    error = RuntimeError(f'it did not restore on process {", ".join(failed)} of {len(read)}')
  return error


def restore_latest(manager: ocp.CheckpointManager, abstract_state,
                   config: ml_collections.ConfigDict | None = None):
  """The latest checkpoint that restores, onto the shardings of `abstract_state`; None if there is
  no checkpoint.

  `abstract_state` is a tree of jax.ShapeDtypeStruct with `.sharding` set, so each process reads
  only its own shards. A checkpoint that fails to restore (truncated or corrupted files) is
  reported on stderr, moved to WORKDIR/failed_checkpoints/<step> (see `_set_aside`), and the next
  older one is tried; which one was restored is reported too. Raises UserError if every checkpoint
  fails. Given the run's `config`, the model.* keys that differ from the config.json beside the
  checkpoints are named: in that error (a changed model cannot restore its parameters), or in a
  note when the checkpoint restores anyway (e.g. model.dtype or model.remat changed).

  With several processes the choice is collective: they try process 0's list of steps, and a step
  counts as restored only if every process read its shards of it; otherwise all move on to the
  next older step together. One host that fails to read its shards while another succeeds would
  otherwise resume from an older step than the rest, and the job would train a mixed state.
  """
  steps = _steps_of_process_0(manager)
  workdir = str(epath.Path(manager.directory).parent)
  changed = resume_config_difference(workdir, config) if config is not None and steps else []
  failures = []
  for step in steps:
    restored, error = _read(manager, step, abstract_state)
    error = _failed_anywhere(error)
    if error is not None:
      failures.append((step, error))
      continue
    for failed, e in failures:
      _warn(f'Checkpoint {failed} in {manager.directory} failed to restore '
            f'({type(e).__name__}: {_first_line(e)}). {_set_aside(manager, failed)}')
    if failures:
      _warn(f'Restored checkpoint {step} instead (the newest one that restores).')
    if changed:
      _warn(f'Note: resuming {workdir} under another model config than the one that saved it: '
            + '; '.join(changed) + '.')
    return restored
  if not failures:
    return None
  if changed:
    raise errors.UserError(
        f'The checkpoints in {manager.directory} do not restore under this model config: '
        + '; '.join(changed) + f'. Set model.* as in {workdir}/config.json to resume that run, or '
        'give a new --workdir for the new model.') from failures[0][1]
  failed = ', '.join(f'{s} ({type(e).__name__}: {_first_line(e)})' for s, e in failures)
  raise errors.UserError(
      f'No checkpoint in {manager.directory} restores: {failed}. If the model config (model.*) '
      "changed, set it as in the workdir's config.json; otherwise the files are damaged: move the "
      'checkpoints/ directory aside to start over, or give a new --workdir.') from failures[0][1]


def _first_line(error: BaseException) -> str:
  """The first line of `error`'s message, at most 300 characters (tensorstore's run long)."""
  text = str(error).strip().splitlines()
  return text[0][:300] if text else ''


_IO_WORDS = ('No space left', 'Permission denied', 'Read-only file system', 'Disk quota',
             'Input/output error', 'RESOURCE_EXHAUSTED', 'PERMISSION_DENIED')


def _io_error(error: BaseException) -> BaseException | None:
  """The OSError in `error`'s chain of causes, or an error whose message names an I/O failure
  (tensorstore reports those as ValueError); None if it is neither."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) or any(word in str(error) for word in _IO_WORDS):
      return error
    error = error.__cause__ or error.__context__
  return None


def _save_failed(manager: ocp.CheckpointManager, step: int, error: BaseException):
  """The UserError for a checkpoint save that failed with I/O error `error`."""
  return errors.UserError(
      f'Saving checkpoint {step} in {manager.directory} failed: {type(error).__name__}: '
      f'{_first_line(error)}. Training stopped; the older checkpoints there are kept. Free space '
      'on that disk, make the workdir writable, or point --workdir elsewhere (copying '
      'checkpoints/ there), then re-run the same command to resume.')


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for the pending async save; raises UserError if it failed with an I/O error."""
  pending = manager.latest_step()  # orbax lists a step from the start of its save
  try:
    manager.wait_until_finished()
  except Exception as e:  # pylint: disable=broad-except
    cause = _io_error(e)
    if cause is None:
      raise
    raise _save_failed(manager, pending, cause) from e


def save(manager: ocp.CheckpointManager, step: int, state, every: int, final: bool = False) -> bool:
  """Saves `state` as checkpoint `step` every `every` steps and at the `final` step; async if
  configured. Returns whether it saved.

  (orbax's own interval would also save the first step of every run.) The checkpoint's custom
  metadata records the workdir's config.json and the code version (research/provenance.py). Raises UserError if this save,
  or the previous async one, fails with an I/O error (disk full, unwritable).
  """
  if not final and step % every:
    return False
  wait_until_finished(manager)  # a failed async save surfaces here, naming its own step
  try:
    saved = manager.save(step, args=ocp.args.StandardSave(state), force=True,
                         custom_metadata=_record(manager))
  except Exception as e:  # pylint: disable=broad-except
    cause = _io_error(e)
    if cause is None:
      raise
    raise _save_failed(manager, step, cause) from e
  return saved


def _record(manager: ocp.CheckpointManager) -> dict:
  """{'config': the workdir's config.json (if there is one), 'code_version': the code's commit
  (research/provenance.py)}."""
  record = {'code_version': provenance.code_version()}
  config_path = epath.Path(manager.directory).parent / 'config.json'
  try:
    record['config'] = json.loads(config_path.read_text())
  except (OSError, ValueError):
    pass
  return record


def saved_record(manager: ocp.CheckpointManager, step: int) -> dict:
  """What checkpoint `step` recorded ({'config': ..., 'code_version': ...}); {} for a checkpoint
  written before checkpoints recorded them."""
  metadata = manager.metadata(step)
  return dict(getattr(metadata, 'custom_metadata', None) or {})


def config_difference(saved: dict, config: dict, prefix: str = 'model') -> list[str]:
  """The keys under `prefix` whose values differ between the config dicts `saved` and `config`,
  each as 'model.key: A in the checkpoint, B now' (nested keys dotted, sorted; a key only one side
  has shows as missing there)."""
  def flat(tree, path):
    if isinstance(tree, dict):
      return {k: v for key, sub in tree.items() for k, v in flat(sub, f'{path}.{key}').items()}
    return {path: tree}
  old = flat(saved.get(prefix, {}), prefix)
  new = flat(config.get(prefix, {}), prefix)
  missing = '(missing)'

  def same(a, b):  # JSON turns tuples into lists
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
  return [f'{key}: {json.dumps(old.get(key, missing), default=str)} in the checkpoint, '
          f'{json.dumps(new.get(key, missing), default=str)} now'
          for key in sorted(set(old) | set(new))
          if not same(old.get(key, missing), new.get(key, missing))]


def saved_config(workdir: str) -> dict | None:
  """The config.json in `workdir`, written by the run that saved its checkpoints; None if there is
  no readable one. Read it before the run overwrites it."""
  try:
    return json.loads((epath.Path(workdir) / 'config.json').read_text())
  except (OSError, ValueError):
    return None


def resume_config_difference(workdir: str, config: ml_collections.ConfigDict) -> list[str]:
  """`config_difference` between `saved_config(workdir)` and `config`, for model.*; [] if there is
  no readable config.json."""
  saved = saved_config(workdir)
  if saved is None:
    return []
  return config_difference(saved, json.loads(json.dumps(config.to_dict(), default=str)))


def abstract_like(tree, shardings):
  """ShapeDtypeStructs with the given shardings: the target that restore fills."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree,
                      shardings)


def _reader(directory: epath.Path) -> ocp.CheckpointManager:
  """A manager that reads any checkpoint of `directory` as a tree, whatever wrote it."""
  return ocp.CheckpointManager(directory, item_handlers=ocp.PyTreeCheckpointHandler())


def saved_shapes(directory: epath.Path, step: int) -> dict:
  """The saved tree of checkpoint `step`: nested dicts of (shape, dtype) leaves."""
  manager = _reader(directory)
  metadata = manager.item_metadata(step)
  manager.close()
  tree = getattr(metadata, 'tree', metadata)
  return jax.tree.map(lambda leaf: (tuple(leaf.shape), str(leaf.dtype)), tree)


def check_shapes(saved, expected, where: str, key: str = '') -> None:
  """Fails naming the first parameter whose shape differs between `saved` ((shape, dtype) leaves)
  and `expected` (arrays or ShapeDtypeStructs), or that only one of them has."""
  if isinstance(expected, dict):
    if not isinstance(saved, dict):
      raise errors.UserError(f'{where}: {key} is an array in the checkpoint but a group of '
                             'parameters in the model; the checkpoint is of another architecture.')
    for name in sorted(set(saved) | set(expected)):
      path = f'{key}/{name}' if key else name
      if name not in saved or name not in expected:
        side = 'model' if name in expected else 'checkpoint'
        raise errors.UserError(f'{where}: {path} is in the {side} only; the checkpoint and the '
                               'model config (model.*) describe different architectures.')
      check_shapes(saved[name], expected[name], where, path)
    return
  if isinstance(saved, dict) or tuple(saved[0]) != tuple(expected.shape):
    saved_shape = 'a group of parameters' if isinstance(saved, dict) else f'shape {saved[0]}'
    raise errors.UserError(f'{where}: {key} has {saved_shape} in the checkpoint but shape '
                           f'{tuple(expected.shape)} in the model; set model.* as in the '
                           "checkpoint's config.json.")


def restore_parts(directory: epath.Path, step: int, target: dict) -> dict:
  """The top-level parts of checkpoint `step` named in `target` (e.g. {'params': ...}), restored
  onto the shardings of its ShapeDtypeStructs; the rest of the checkpoint is not read."""
  manager = _reader(directory)
  restore_args = jax.tree.map(lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target)
  restored = manager.restore(step, args=ocp.args.PyTreeRestore(
      item=target, restore_args=restore_args, partial_restore=True))
  manager.close()
  return restored
