"""Fabricated MeCo tags steer the model: validation loss of each domain under each source tag.

For every run of the MeCo study (docs/results/meco.md) and each validation split of its tasks,
the token-mean nll of the documents' first tokens read after no tag, after the code tag and after
the prose tag of one module present in both domains ('encodings'), as `launch.score --prefix`
computes it (research/analysis/scores.model_scores), then the mean ± SE over the seeds of each
arm. Each document is cut to its first data.seq_len minus the longest tag's tokens, so that the tag
and the scored tokens share one window, as the metadata and a document's first tokens share a row
in training, and every tag is scored on the same tokens:

  python docs/results/meco/steering.py workdirs/meco > docs/results/meco/steering.md
"""

import sys

import jax
import numpy as np

from research import finished
from research.analysis import report, scores
from research.data import store as store_lib
from research.data import tasks, vocabularies

TASKS = ('stdlib_code', 'stdlib_prose')
PREFIXES = {'none': '', 'code tag': 'URL: stdlib_code/encodings\n\n',
            'prose tag': 'URL: stdlib_prose/encodings\n\n'}


def first_tokens(store, count: int) -> tuple[np.ndarray, np.ndarray]:
  """(tokens, offsets) of the first `count` tokens (at most) of every document of `store`."""
  starts_D = store.offsets[:-1]
  lengths_D = np.minimum(np.diff(store.offsets), count)
  tokens = np.concatenate([store.tokens[s:s + n] for s, n in zip(starts_D, lengths_D)])
  return tokens, np.concatenate([[0], np.cumsum(lengths_D)])


def token_mean_nll(loaded, tokens, offsets, prefix_ids) -> float:
  lengths_D = np.diff(offsets)
  nll_D = scores.model_scores(loaded, tokens, offsets, prefix=prefix_ids)['nll']
  return float(np.sum(nll_D * lengths_D) / np.sum(lengths_D))


def main(sweep: str) -> None:
  arms = report.arms([report.load_run(path) for path in report.sweep_runs(sweep)])
  print('| arm | validation | ' + ' | '.join(PREFIXES) + ' | code tag - prose tag |')
  print('|---|---|' + '---:|' * (len(PREFIXES) + 1))
  for arm in arms:
    values = {}  # (task, prefix name) -> one nll per seed
    for run in arm.runs:
      loaded = finished.load_checkpoint(run.path, devices=jax.local_devices()[:1])
      config = loaded.config
      vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
      tasks.register_config_tasks(config.data)
      prefixes = {name: vocabulary.encode(text) if text else [] for name, text in PREFIXES.items()}
      count = config.data.seq_len - max(len(ids) for ids in prefixes.values())
      for task in TASKS:
        store = store_lib.load_store(task, 'validation', config.data.vocabulary,
                                     config.data.store_dir)
        tokens, offsets = first_tokens(store, count)
        for name, ids in prefixes.items():
          values.setdefault((task, name), []).append(token_mean_nll(loaded, tokens, offsets, ids))
    for task in TASKS:
      gap = [c - p for c, p in zip(values[task, 'code tag'], values[task, 'prose tag'])]
      cells = [report.mean_cell(values[task, name]) for name in PREFIXES] + [report.mean_cell(gap)]
      print(f'| {arm.label} ({len(arm.runs)}) | {task} | ' + ' | '.join(cells) + ' |')


if __name__ == '__main__':
  main(sys.argv[1])
