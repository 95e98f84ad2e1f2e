"""Fill-in-the-middle (FIM): documents split in three and reordered, trained left to right.

Bavarian et al. 2022, "Efficient Training of Language Models to Fill in the Middle", arXiv
2207.14255; the FIM part of CodeGen2's objective (Nijkamp et al. 2023, "CodeGen2: Lessons for
Training LLMs on Programming and Natural Languages", arXiv 2305.02309). With probability `rate`
(0.5 in the paper) a document is cut at two split points drawn uniformly (independently, then
sorted) into prefix, middle and suffix and rewritten as

    PSM:  <PRE> prefix <SUF> suffix <MID> middle EOS
    SPM:  <PRE> <SUF> suffix <MID> prefix middle EOS   (the paper's SPM variant, Section 3)

SPM with probability `spm_rate` among the rewritten documents (0.5: the paper's joint PSM + SPM
training); the others stay as they are. EOS plays the paper's <EOT>, so a model infills a prompt
'<PRE>prefix<SUF>suffix<MID>' by generating the middle up to EOS. The loss is the plain causal
LM loss over every token, sentinels included, as in the paper. `level` 'char' (the paper's)
splits the document's text between characters and encodes each piece on its own; 'token' splits
its tokens. The sentinels are the control tokens '<PRE>', '<SUF>', '<MID>'
(research/data/vocabularies.CONTROL_TOKENS).
"""

from collections.abc import Callable, Mapping, Sequence

import ml_collections
import numpy as np

from research import errors

PRE, SUF, MID = '<PRE>', '<SUF>', '<MID>'
SENTINELS = (PRE, SUF, MID)
LAYOUTS = {'psm': (PRE, 'prefix', SUF, 'suffix', MID, 'middle'),
           'spm': (PRE, SUF, 'suffix', MID, 'prefix', 'middle')}
LEVELS = ('char', 'token')


def draw(length: int, rate: float, spm_rate: float, rng: np.random.Generator
         ) -> tuple[str, int, int] | None:
  """The rewrite of a document of `length` characters or tokens: None (left as it is), or (order
  'psm' or 'spm', start, end of the middle), 0 <= start <= end <= length. Four draws from `rng`
  every time, so a document's draws do not depend on the rates."""
  transform, spm = rng.random(2)
  start, end = np.sort(rng.integers(0, length + 1, size=2))
  if transform >= rate:
    return None
  return ('spm' if spm < spm_rate else 'psm', int(start), int(end))


def rearranged(pieces: Sequence, rewrite: tuple[str, int, int],
               encode: Callable[[Sequence], list[int]], sentinel_ids: Mapping[str, int]
               ) -> list[int]:
  """The ids of `pieces` (a text's characters or a document's tokens, without EOS) rewritten by
  `rewrite` (order, start, end of the middle; see `draw`): its prefix, middle and suffix each
  `encode`d, laid out in the order between the ids of the sentinels (name -> id)."""
  order, start, end = rewrite
  parts = {'prefix': pieces[:start], 'middle': pieces[start:end], 'suffix': pieces[end:]}
  ids = []
  for item in LAYOUTS[order]:
    ids.extend([sentinel_ids[item]] if item in SENTINELS else encode(parts[item]))
  return ids


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises UserError on an experiment config whose `objective.fim` is unusable."""
  settings = config.objective.fim
  for key, paper in (('rate', 0.5), ('spm_rate', 0.5)):
    value = settings[key]
    if not 0 <= value <= 1:
      raise errors.UserError(f'objective.fim.{key}={value!r} is not a probability; set it in '
                             f'[0, 1] ({paper} in Bavarian et al. 2022).')
  if settings.level not in LEVELS:
    raise errors.UserError(f'objective.fim.level={settings.level!r} is not a split level; choose '
                           f"one of {list(LEVELS)} ('char' as in Bavarian et al. 2022).")
