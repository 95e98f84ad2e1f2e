"""notebooks/quickstart.ipynb runs top to bottom in a fresh kernel: it trains, plots and tabulates."""

import json
import math
import os

import nbclient
import nbformat

from tests import commands

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, 'notebooks', 'quickstart.ipynb')
STEPS = 10


def test_notebook_is_saved_clean():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  assert nb.metadata.kernelspec.name == 'python3'
  code = [cell for cell in nb.cells if cell.cell_type == 'code']
  assert code and all(not cell.outputs and cell.execution_count is None for cell in code)


def test_notebook_trains_and_plots(tmp_path, data_dir, monkeypatch):
  # The kernel inherits this environment: a short run, the session's data cache, one CPU device
  # (faster on few cores than conftest's 8 simulated ones).
  monkeypatch.setenv('QUICKSTART_STEPS', str(STEPS))
  monkeypatch.setenv('RESEARCH_DATA_DIR', data_dir)
  monkeypatch.setenv('XLA_FLAGS', commands.device_env(1)['XLA_FLAGS'])
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, kernel_name='python3', timeout=600,
                          resources={'metadata': {'path': str(tmp_path)}}).execute()

  with open(tmp_path / 'workdirs' / 'notebook' / 'metrics.jsonl', encoding='utf-8') as f:
    lines = [json.loads(line) for line in f]
  final = [line['loss'] for line in lines if line['step'] == STEPS and 'loss' in line]
  assert final and math.isfinite(final[-1]) and final[-1] < math.log(384), final
  outputs = [output for cell in nb.cells if cell.cell_type == 'code' for output in cell.outputs]
  assert any('image/png' in output.get('data', {}) for output in outputs)
  assert any('| run |' in output.get('data', {}).get('text/markdown', '') for output in outputs)


def test_the_device_cell_says_in_one_line_when_the_runtime_is_wrong():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  cell = next(cell.source for cell in nb.cells if cell.source.startswith('EXPECT = None'))
  exec(cell, {'TPU_RUNTIME': False})  # this machine's CPUs, nothing expected: fine
  for tpu_runtime, expect, message in (
      (False, 'tpu', "EXPECT='tpu' but this runtime has cpu devices: choose a TPU runtime"),
      (True, None, 'This runtime has TPU chips but JAX')):
    try:
      exec(cell.replace('EXPECT = None', f'EXPECT = {expect!r}', 1), {'TPU_RUNTIME': tpu_runtime})
    except RuntimeError as e:
      assert str(e).startswith(message) and '\n' not in str(e)
    else:
      raise AssertionError(f'no error for TPU_RUNTIME={tpu_runtime}, EXPECT={expect!r}')
