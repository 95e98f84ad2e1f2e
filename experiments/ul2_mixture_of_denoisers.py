"""UL2's mixture of denoisers on a prefix-LM decoder and an encoder-decoder, against causal LM.

Tay et al. 2022, "UL2: Unifying Language Learning Paradigms", arXiv 2205.05131. The finding to
reproduce at toy scale (SEEDS.md section 9, item 4): a mixture-of-denoisers model does not lose to a
causal LM on left-to-right loss and clearly beats it at span infilling. Every variant is evaluated
on both: `eval/<task>/causal_lm/loss` (left to right over held-out packed rows; decoders only) and
`eval/<task>/R3_15/loss` (T5 span infilling, mean span 3, rate 0.15), plus each denoiser of the
mixture. The quickstart setting: byte-level prose + code, 4 layers of d_model 256, 300 steps of 8
rows of 256 tokens, on CPU:

  python -m launch.train --config=experiments/ul2_mixture_of_denoisers.py:decoder --workdir=W/decoder
  python -m launch.train --config=experiments/ul2_mixture_of_denoisers.py:encoder_decoder \
      --workdir=W/encoder_decoder
  python -m launch.train --config=experiments/ul2_mixture_of_denoisers.py:causal_lm \
      --workdir=W/causal_lm

The variants differ in two lines (objective.name, model.architecture); `get_sweep` lists them.
Results: docs/results/ul2_mixture_of_denoisers.md.
"""

from experiments import quickstart
from research.analysis import sweep

_BOTH_METRICS = ('causal_lm', 'R3_15')
VARIANTS = {
    'decoder': {'objective.name': 'ul2', 'model.architecture': 'decoder',
                'eval.objectives': _BOTH_METRICS},
    'encoder_decoder': {'objective.name': 'ul2', 'model.architecture': 'encoder_decoder',
                        'eval.objectives': ('R3_15',)},
    'causal_lm': {'objective.name': 'causal_lm', 'model.architecture': 'decoder',
                  'eval.objectives': _BOTH_METRICS},
}
SEEDS = (0, 1, 2)


def get_config(variant: str = 'decoder'):
  if variant not in VARIANTS:
    raise ValueError(f'Unknown variant {variant!r} of {__name__}; choose one of {sorted(VARIANTS)}.')
  config = quickstart.get_config()
  for key, value in VARIANTS[variant].items():
    section, field = key.split('.')
    config[section][field] = value
  config.data.extra_ids = 100  # 6 control tokens (mode tokens among them) and 94 sentinels
  config.objective.target_len = 128  # encoder-decoder: 256 encoder and 128 decoder tokens a row
  config.model.num_encoder_layers = 4
  return config


def get_sweep():
  """The three variants as overrides of get_config(): the UL2 decoder and the causal LM, whose
  difference the study claims, with every seed of SEEDS; the encoder-decoder (1.6 times the
  decoder's step time) with seed 0 only, so the sweep fits 30 minutes on 2 CPU cores."""
  return (sweep.seeded([VARIANTS['decoder'], VARIANTS['causal_lm']], SEEDS)
          + sweep.seeded([VARIANTS['encoder_decoder']], SEEDS[:1]))
