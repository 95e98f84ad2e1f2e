"""CodeGen2's unified objective against causal LM: left-to-right and infill loss on code.

Nijkamp et al. 2023, "CodeGen2: Lessons for Training LLMs on Programming and Natural Languages",
arXiv 2305.02309: one decoder, causal attention throughout, trained on a mixture of causal LM (a
denoiser with an empty prefix, 'S_100') and span corruption, so that one model both continues
and infills (the sentinels in the inputs, the spans after them). objective.name='codegen2' is
that mixture, half and half (research/objectives/denoising.PRESETS; the span denoiser is T5's
R (3, .15)), here without mode tokens and with `objective.prefix_attention=False`, as CodeGen2.

The 0.6M-parameter model of experiments/continual_rewarm.py trains STEPS steps of 16 x 128 tokens
of the standard library's code under each objective, 3 seeds each, and is evaluated on the
validation code both left to right (`eval/stdlib_code/causal_lm/loss`) and as infilling (the
span-corruption format 'R3_15', loss on the spans: `eval/stdlib_code/R3_15/loss`). The
comparison is at equal training tokens: the mixture spends half its segments on infilling.

  python -m launch.sweep --config=experiments/codegen2.py --workdir=workdirs/codegen2 --parallel=2
  python -m launch.report workdirs/codegen2 --out=docs/results/codegen2 --keep_runs
"""

import ml_collections

from experiments import continual_rewarm

STEPS = 600
SEEDS = (0, 1, 2)
OBJECTIVES = ('codegen2', 'causal_lm')


def get_config():
  config = continual_rewarm.toy_run(STEPS)
  config.data.mixture = ml_collections.ConfigDict({'stdlib_code': 1.0})
  config.data.extra_ids = 32  # the control tokens, then sentinels for R3_15 on 128 tokens
  config.objective.name = 'codegen2'
  config.objective.mode_tokens = False
  config.objective.prefix_attention = False
  config.eval.objectives = ('causal_lm', 'R3_15')
  return config


def get_sweep():
  """Both objectives (the same model and vocabulary), every seed."""
  return [{'objective.name': name, 'seed': seed} for name in OBJECTIVES for seed in SEEDS]
