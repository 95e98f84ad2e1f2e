"""lm-evaluation-harness on a checkpoint (research/interop/lm_eval_adapter.py, launch.lm_eval): lm-eval's
requests against the project's own scoring and generation, and a multiple-choice task over a local
file, offline."""

import json
import sys

import jax
import numpy as np
import pytest
from lm_eval.api import instance

from experiments import base
from launch import lm_eval as lm_eval_command
from research import generate, train
from research.interop import lm_eval_adapter
from research.analysis import scores
from tests import commands

SEQ_LEN = 32
QUESTIONS = [
    {'question': '2 + 2 =', 'choices': ['4', '5', '22'], 'answer': 0},
    {'question': 'The capital of France is', 'choices': ['Rome', 'Paris'], 'answer': 1},
    {'question': 'import', 'choices': ['os', 'zzzz', '!!'], 'answer': 0},
    {'question': 'def f(x):', 'choices': ['return x', 'x x x x', '::'], 'answer': 2},
]
TASK_YAML = """task: tiny_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture(scope='module')
def trained_run(data_dir, tmp_path_factory):
  """A tiny byte-level decoder trained for 2 steps."""
  config = base.get_config()
  config.model.d_model, config.model.num_layers, config.model.mlp_dim = 32, 1, 64
  config.model.num_heads, config.model.head_dim = 2, 16
  config.data.seq_len, config.data.store_dir = SEQ_LEN, data_dir
  config.train.steps, config.train.batch_size = 2, 8
  config.eval.every, config.checkpoint.every, config.mesh.data = 100, 2, 1
  workdir = str(tmp_path_factory.mktemp('lm_eval_run'))
  train.train(config, workdir, devices=jax.devices()[:1])
  return workdir


@pytest.fixture(scope='module')
def model(trained_run):
  return lm_eval_adapter.CheckpointLM(trained_run)


def _requests(kind, *arguments):
  return [instance.Instance(kind, {}, args if isinstance(args, tuple) else (args,), i)
          for i, args in enumerate(arguments)]


def _summed_log_probs(model, texts):
  """Each text's summed token log-probability by research/analysis/scores.py (its nll times its length; 0
  for an empty text)."""
  tokens = [list(model.vocabulary.encode(t)) for t in texts]
  offsets = np.cumsum([0] + [len(t) for t in tokens])
  with np.errstate(invalid='ignore'):  # an empty text's nll is 0 / 0
    nll = scores.model_scores(model.loaded, np.concatenate(tokens), offsets)['nll']
  return np.where(np.diff(offsets) > 0, -nll * np.diff(offsets), 0.0)


def test_loglikelihood_is_the_continuation_s_log_probs_by_the_project_s_scoring(model):
  long_context = 'The quick brown fox jumps over the lazy dog.'  # 44 bytes > SEQ_LEN
  pairs = [('Question: 2 + 2 =', ' 4'), ('Answer: ', 'yes'), ('', 'hello'), (long_context, ' ok')]
  got = [ll for ll, _ in model.loglikelihood(_requests('loglikelihood', *pairs))]
  # The context's trailing space goes with the continuation; the long context keeps its last
  # SEQ_LEN - 3 bytes, so that it and ' ok' fill one window.
  contexts = ['Question: 2 + 2 =', 'Answer:', '', long_context[-(SEQ_LEN - 3):]]
  wholes = ['Question: 2 + 2 = 4', 'Answer: yes', 'hello', long_context[-(SEQ_LEN - 3):] + ' ok']
  whole, context = _summed_log_probs(model, wholes), _summed_log_probs(model, contexts)
  np.testing.assert_allclose(got, whole - context, atol=1e-4)
  assert got[3] < 0 and abs(got[3] - _summed_log_probs(model, [long_context + ' ok'])[0]
                            + _summed_log_probs(model, [long_context])[0]) > 1e-3


def test_loglikelihood_from_the_start_id_against_the_model_s_logits(model):
  """'' then 'hello': the start id then h, e, l, l predict h, e, l, l, o (a direct forward pass)."""
  ids = list(model.vocabulary.encode('hello'))
  inputs = np.array([[model.loaded.start_id] + ids[:-1]], np.int32)
  batch = {'inputs': inputs, 'segment_ids': np.ones_like(inputs),
           'positions': np.arange(len(ids), dtype=np.int32)[None]}
  logits = model.loaded.model.apply({'params': model.loaded.params}, batch)
  log_probs = jax.nn.log_softmax(np.asarray(logits, np.float64)[0], axis=-1)
  [(got, _)] = model.loglikelihood(_requests('loglikelihood', ('', 'hello')))
  np.testing.assert_allclose(got, log_probs[np.arange(len(ids)), ids].sum(), atol=1e-4)


def test_loglikelihood_rolling_is_the_text_s_log_probs_by_the_project_s_scoring(model):
  texts = ['hello world', 'The quick brown fox jumps over the lazy dog. ' * 2]  # 1 and 3 windows
  got = model.loglikelihood_rolling(_requests('loglikelihood_rolling', *texts))
  np.testing.assert_allclose(got, _summed_log_probs(model, texts), atol=1e-4)


def test_generate_until_continues_greedily_and_stops_at_until(model):
  prompt = 'def f(x):'
  rows, lengths = generate.pad_prompts(
      [generate.encode_prompt(prompt, model.vocabulary, model.loaded.start_id)])
  tokens, length = jax.device_get(generate.generate(
      model.loaded.model, model.loaded.params, rows, lengths, jax.random.key(0), 8,
      stop_ids=(model.vocabulary.eos_id,),
      banned_ids=generate.ids_to_ban(model.vocabulary, model.loaded.config.model.vocab_size)))
  greedy = model.vocabulary.decode(tokens[0, :length[0]].tolist())
  assert len(greedy) == 8
  cut = model.generate_until(_requests('generate_until', (prompt, {'max_gen_toks': 8}),
                                       (prompt, {'max_gen_toks': 8, 'until': [greedy[3:5]]})))
  assert cut == [greedy, greedy.split(greedy[3:5])[0]]
  changed = greedy[:-1] + ('a' if greedy[-1] != 'a' else 'b')
  assert [g for _, g in model.loglikelihood(
      _requests('loglikelihood', (prompt, greedy), (prompt, changed)))] == [True, False]


def _choice_task(directory):
  data = directory / 'tiny_choice.jsonl'
  data.write_text(''.join(json.dumps(q) + '\n' for q in QUESTIONS))
  tasks = directory / 'tasks'
  tasks.mkdir()
  (tasks / 'tiny_choice.yaml').write_text(TASK_YAML.format(data=data))
  return str(tasks)


def test_command_runs_a_local_multiple_choice_task_offline(trained_run, model, tmp_path,
                                                           monkeypatch):
  monkeypatch.setenv('HF_DATASETS_OFFLINE', '1')
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  out = tmp_path / 'results.json'
  printed = commands.run_main(lm_eval_command.main, checkpoint=[trained_run],
                              tasks=['tiny_choice'], include_path=_choice_task(tmp_path),
                              out=str(out))
  results = json.loads(out.read_text())
  acc = results['results']['tiny_choice']['acc,none']
  # acc is the fraction of questions whose answer our loglikelihood ranks first.
  correct = []
  for q in QUESTIONS:
    context = f'Question: {q["question"]}\nAnswer:'
    lls = model.loglikelihood(_requests('loglikelihood', *[(context, ' ' + c)
                                                           for c in q['choices']]))
    correct.append(int(np.argmax([ll for ll, _ in lls])) == q['answer'])
  assert 0 <= acc <= 1 and acc == pytest.approx(np.mean(correct))
  assert results['config']['step'] == 2 and results['config']['checkpoint'] == trained_run
  assert printed.startswith(f'{trained_run} (step 2):\n') and 'tiny_choice' in printed
  assert printed.rstrip().endswith(f'wrote {out}')


def test_command_errors_are_one_line(trained_run, tmp_path, monkeypatch):
  def run(**flag_values):
    commands.run_main(lm_eval_command.main, checkpoint=[trained_run], **flag_values)

  with pytest.raises(SystemExit, match=r'^error: Give --tasks='):
    run()
  with pytest.raises(SystemExit, match=r'^error: --num_fewshot=-1 must be at least 0\.'):
    run(tasks=['tiny_choice'], num_fewshot=-1)
  with pytest.raises(SystemExit, match=f'^error: --include_path={tmp_path / "no"} is not a '):
    run(tasks=['tiny_choice'], include_path=str(tmp_path / 'no'))
  with pytest.raises(SystemExit, match=r'^error: --tasks: no_such_task is no lm-eval task'):
    run(tasks=['no_such_task'], include_path=str(tmp_path))
  monkeypatch.setitem(sys.modules, 'lm_eval', None)  # as if lm_eval were not installed
  with pytest.raises(SystemExit, match=r'^error: launch.lm_eval needs .*: pip install lm_eval$'):
    run(tasks=['tiny_choice'])
