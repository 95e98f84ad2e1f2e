"""Masked Thought, MeCo and control tokens through the training data pipeline."""

import ml_collections
import numpy as np
import pytest

from experiments import base
from research import errors
from research.data import pipeline, vocabularies
from research.data import store as store_lib
from research.data import tasks as task_lib
from research.objectives import registry

VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=8)
MASK_ID = vocabularies.control_token_id(VOCABULARY, '[MASK]')
ALIGNED = vocabularies.control_token_id(VOCABULARY, '<|aligned|>')
MISALIGNED = vocabularies.control_token_id(VOCABULARY, '<|misaligned|>')


def _config(data_dir, objective, tasks, seq_len=128, steps=100):
  config = base.get_config()
  config.objective.name = objective
  config.data.tasks = ml_collections.ConfigDict(tasks)
  config.data.mixture = ml_collections.ConfigDict({name: 1.0 for name in tasks})
  config.data.store_dir, config.data.seq_len, config.data.extra_ids = data_dir, seq_len, 8
  config.train.steps = steps
  return config


def _data(config):
  objective = registry.make_objective(config, VOCABULARY)
  return pipeline.TrainData(config.data, 8, config.seed, config.train.steps, objective)


SUMS = {'sums': {'source': 'arithmetic', 'num_documents': 2000}}


def test_masked_thought_masks_only_answers_at_the_scheduled_rate(data_dir):
  config = _config(data_dir, 'masked_thought', SUMS)
  config.objective.masked_thought.max_rate = 0.5
  data = _data(config)
  equals = VOCABULARY.encode('=')[0]
  masked = eligible = 0
  for step in (0, 70, 80, 90, 95, 99):
    batch = data.batch(step)
    assert np.all(batch['weights'] == (batch['segment_ids'] > 0))  # labels and loss unchanged
    for row in range(8):
      inputs, targets, segments = (batch[k][row] for k in ('inputs', 'targets', 'segment_ids'))
      for segment in set(segments.tolist()) - {0}:
        positions = np.flatnonzero(segments == segment)
        answer_from = positions[np.flatnonzero(targets[positions] == equals)[0]] + 2
        prompt = positions[positions < answer_from]
        assert np.all(inputs[prompt] != MASK_ID)  # never a prompt token
        if step >= 66:
          answer = positions[positions >= answer_from]
          masked += int(np.sum(inputs[answer] == MASK_ID))
          eligible += len(answer)
    if step == 0:
      assert not np.any(batch['inputs'] == MASK_ID)  # the rate starts at 0
  assert eligible > 1000 and abs(masked / eligible - 0.5) < 0.04


def test_meco_prepends_the_source_without_loss_until_the_cooldown(data_dir):
  config = _config(data_dir, 'meco', SUMS, steps=100)
  data = _data(config)
  batch = data.batch(0)
  metadata_text = VOCABULARY.encode('URL: sums\n\n')
  for row in range(8):
    targets, weights, segments = (batch[k][row] for k in ('targets', 'weights', 'segment_ids'))
    for segment in set(segments.tolist()) - {0}:
      in_segment = segments == segment
      if batch['positions'][row][in_segment][0] != 0:
        continue  # a later chunk of a long document
      tokens, loss = targets[in_segment], weights[in_segment]
      assert tokens[:len(metadata_text)].tolist() == metadata_text
      assert loss[:len(metadata_text)].tolist() == [0.0] * len(metadata_text)
      assert np.all(loss[len(metadata_text):] == 1.0)
  cooled = data.batch(90)  # the last 10% of training: plain documents, full loss
  assert np.all(cooled['weights'] == (cooled['segment_ids'] > 0))
  assert 'URL: ' not in VOCABULARY.decode(cooled['targets'][cooled['targets'] < 259].tolist())


def test_control_tokens_follow_pep8_scores(data_dir, tmp_path):
  source = tmp_path / 'source'
  source.mkdir()
  (source / 'clean.py').write_text('def f(x):\n    return x\n')
  (source / 'messy.py').write_text('x=1\ny = 2\nz  =3\n')
  anchor = next(path for path in (source / f'anchor{i}.py' for i in range(100))
                if not task_lib.is_validation(str(path)))  # the train split is never empty
  anchor.write_text('pass\n')
  tasks = {'py': {'source': 'files', 'pattern': str(source / '*.py'), 'format': 'text'}}
  config = _config(data_dir, 'control_tokens', tasks)
  config.objective.control.drop_fraction = 0.0
  objective = registry.make_objective(config, VOCABULARY)
  data = pipeline.TrainData(config.data, 8, config.seed, config.train.steps, objective)
  texts = set()
  for split in ('train', 'validation'):  # each file lands in one split by the hash of its path
    store = store_lib.load_store('py', split, 'byte', data_dir)
    rewritten = objective.rewrite.apply(store, 'py', VOCABULARY, config.seed)
    for index in range(rewritten.num_documents):
      lines = []
      for token in rewritten.document(index)[:-1].tolist():
        if token in (ALIGNED, MISALIGNED):
          lines.append([token])
        else:
          lines[-1].append(token)
      texts.add(tuple((line[0], VOCABULARY.decode(line[1:])) for line in lines))
  assert texts == {((ALIGNED, 'pass\n'),), ((ALIGNED, 'def f(x):\n'), (ALIGNED, '    return x\n')),
                   ((MISALIGNED, 'x=1\n'), (ALIGNED, 'y = 2\n'), (MISALIGNED, 'z  =3\n'))}
  rows = data.row(0, 0, 0)  # training reads the rewritten documents
  assert np.isin(rows['targets'], [ALIGNED, MISALIGNED]).any()


def test_seed_objectives_check_their_settings(data_dir):
  config = _config(data_dir, 'masked_thought', SUMS)
  config.objective.masked_thought.max_rate = 1.5
  with pytest.raises(errors.UserError, match=r'objective\.masked_thought\.max_rate=1\.5'):
    registry.make_objective(config, VOCABULARY)
  config = _config(data_dir, 'control_tokens', SUMS)
  config.objective.control.scorer = 'toxicity'
  with pytest.raises(errors.UserError, match=r"objective\.control\.scorer='toxicity'"):
    registry.make_objective(config, VOCABULARY)
  config = _config(data_dir, 'meco', SUMS)
  config.objective.meco.cooldown_fraction = 1.0
  with pytest.raises(errors.UserError, match=r'objective\.meco\.cooldown_fraction=1\.0'):
    registry.make_objective(config, VOCABULARY)
