"""Weights & Biases logging (`config.logging.wandb`), next to metrics.jsonl and TensorBoard.

The W&B run gets the metrics research/metrics.py writes, each line with its `step` as W&B's x axis
(`define_metric('*', step_metric='step')`: a resumed run logs again from its checkpoint's step,
which W&B's own monotonic step counter would drop), and the run's resolved config. Its id is kept
in WORKDIR/wandb_id, so running the same command again continues the same W&B run
(`resume='allow'`). Only the main process opens one (research/metrics.MetricsWriter). W&B's files
go under WORKDIR/wandb/ for a local workdir ($WANDB_DIR overrides it); an offline run is uploaded
later with `wandb sync`. The console is not captured (console='off'): W&B's wrapping of stdout
and stderr would sit between the run and a closed pipe.

`wandb` is imported only when `project` is set, so it stays an optional package.
"""

import os
import secrets

import ml_collections
from etils import epath

from research import errors

MODES = ('', 'online', 'offline', 'disabled')
RUN_ID_FILE = 'wandb_id'


def _import_wandb():
  return errors.optional_package(
      'wandb', "logging.wandb.project is set but the wandb package is not installed; pip install "
      "wandb (or set logging.wandb.project='').")


def check_config(wandb_config: ml_collections.ConfigDict) -> None:
  """Fails naming the key on a bad mode, or when a project is set and wandb is not installed."""
  if wandb_config.mode not in MODES:
    raise errors.UserError(f'logging.wandb.mode={wandb_config.mode!r} is not a W&B mode; use one '
                           f'of {list(MODES)} ("" = $WANDB_MODE, else online).')
  if wandb_config.project:
    _import_wandb()


def run_id(workdir: str) -> str:
  """The W&B run id of the run in `workdir`: the stored one, or a new one stored there now."""
  path = epath.Path(workdir) / RUN_ID_FILE
  if path.exists():
    return path.read_text().strip()
  new_id = secrets.token_hex(4)  # 8 characters, as W&B's own ids
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(new_id)
  return new_id


class WandbRun:
  """The W&B run of the run in `workdir`, opened (or resumed) with `config` as its config."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    wandb = _import_wandb()
    settings = config.logging.wandb
    local = '://' not in workdir
    try:
      self._run = wandb.init(
          project=settings.project, entity=settings.entity or None,
          name=settings.name or os.path.basename(os.path.normpath(workdir)),
          tags=list(settings.tags), mode=settings.mode or None, config=config.to_dict(),
          id=run_id(workdir), resume='allow',
          dir=workdir if local and 'WANDB_DIR' not in os.environ else None,
          settings=wandb.Settings(console='off'))
    except wandb.errors.Error as e:  # no API key, no connection
      reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
      raise errors.UserError(
          f'logging.wandb.project={settings.project!r}: W&B could not start the run ({reason}). '
          'Log in with `wandb login` (or set WANDB_API_KEY), or log offline with '
          "--config.logging.wandb.mode=offline and upload later with `wandb sync`.") from e
    self._run.define_metric('*', step_metric='step')

  def write(self, step: int, scalars: dict) -> None:
    self._run.log({'step': step, **scalars})

  def close(self) -> None:
    self._run.finish()


def open_run(config: ml_collections.ConfigDict, workdir: str) -> WandbRun | None:
  """The W&B run of `config.logging.wandb`, or None when its project is '' (off)."""
  return WandbRun(config, workdir) if config.logging.wandb.project else None
