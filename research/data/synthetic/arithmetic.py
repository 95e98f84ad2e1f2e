"""n-digit addition and multiplication with known answers.

From "Teaching Arithmetic to Small Transformers" (Lee et al. 2023, arXiv 2307.03381). A document is
one problem, `12+345=357` in the plain format or `12+345=753` with `reverse_answer`, the paper's
key finding: writing the result least-significant digit first lets a small Transformer produce each
digit from digits it has already seen.

Difficulty is the digit count of the larger operand. It is drawn uniformly from
[min_digits, max_digits] (the paper's balanced sampling: without it almost every problem has the
most digits); the other operand's digit count is uniform between min_digits and that count, and a
coin flip decides which operand is written first.

Validation problems are never trained on: a `holdout` fraction of the problems (an operation and
its unordered operand pair, so 3+45 and 45+3 go together) is held out by a seeded hash of the
problem; the validation split draws only held-out problems and the training split never does
(a digit count with few problems holds out a share that can differ from `holdout`: 1-digit addition
has 55 unordered problems).
Without it (holdout=0, both splits drawn from all problems) a validation problem of few digits
(1-digit addition has 100 problems) also appears in train, and its accuracy measures memorisation,
not arithmetic.

Rationales (`rationale`). 'scratchpad' writes the working before the result, the paper's
chain-of-thought format (its "detailed scratchpad", here compact): addition states each column
from the least significant digit, the two digits, the carry in and their sum
(`12+345=2+5+0=7,1+4+0=5,0+3+0=3;357`), multiplication each partial product of the first operand
by one digit of the second (`12*345=12*5=60,12*40=480,12*300=3600;4140`); the `answer` is the
rationale, ';' and the result, so answer accuracy is whether greedy decoding writes both.
'step_by_step' is Distilling step-by-step (Hsieh et al. 2023, "Distilling Step-by-Step!
Outperforming Larger Language Models with Less Training Data and Smaller Model Sizes", arXiv
2305.02301): rationales as a second task rather than a prefix of the answer: each training problem
gives a '[label] ' document (the result) and a '[rationale] ' document (the rationale), equally
weighted as the paper's lambda = 1, and validation asks for the label alone, so the model answers
without writing a rationale. The exact rationale here stands in for the paper's LLM-written one.

Document i of a split is a pure function of (split, seed, i, parameters): problems are drawn in
blocks of `_BLOCK` from `np.random.default_rng([_STREAM, seed, split index, block])`, those of the
other side of the holdout left out, so a corpus of n documents is the first n documents of any
larger one.
"""

import hashlib
import re
from collections.abc import Iterator, Sequence

import numpy as np

from research.data.synthetic import checks

NAME = 'arithmetic'
VERSION = 3  # 2: validation problems held out of training (`holdout`); 3: `rationale`, `task`
SPLITS = checks.SPLITS
OPERATIONS = {'addition': '+', 'multiplication': '*'}

# Default parameters; config `data.tasks.<task>.<param>` overrides them.
PARAMS = {
    'num_documents': 100_000,  # problems per split; about 0.8 M characters with these defaults
    'min_digits': 1,  # the fewest digits of the larger operand
    'max_digits': 3,  # the most digits of the larger operand
    'operations': ('addition', 'multiplication'),  # each problem draws one uniformly
    'reverse_answer': True,  # write the result's digits reversed
    'holdout': 0.1,  # the fraction of problems held out of training for validation (0: none)
    'rationale': 'none',  # none | scratchpad (working before the result) | step_by_step (a task)
}
RATIONALES = ('none', 'scratchpad', 'step_by_step')
TASK_PREFIXES = {'label': '[label] ', 'rationale': '[rationale] '}  # step_by_step's two tasks

_STREAM = 0x61726974  # seeded-stream tag of this generator
_BLOCK = 1024
_ZERO = ord('0')
_MAX_DIGITS = 1000  # keeps a block's digit buffer (2 * _BLOCK * max_digits bytes) small
_MAX_EMPTY_BLOCKS = 64  # blocks in a row without one problem of the split's side: none exists


def _check_operations(task_name: str, value) -> tuple[str, ...]:
  if isinstance(value, str) or not isinstance(value, Sequence) or not value:
    checks.fail(task_name, 'operations', value, f'is invalid; set it to a non-empty list of '
                f'{sorted(OPERATIONS)}.')
  for operation in value:
    if operation not in OPERATIONS:
      checks.fail(task_name, 'operations', value, f'names the unknown operation {operation!r}; use '
                  f'{sorted(OPERATIONS)}.')
  return tuple(value)


def _resolve_params(split: str, seed: int, num_documents: int, params: dict,
                    task_name: str) -> dict:
  """The validated parameters, defaults filled in; raises UserError naming a bad key."""
  p = checks.with_defaults(split, seed, params, PARAMS, NAME, task_name)
  p['num_documents'] = checks.check_number(task_name, 'num_documents', num_documents, 1)
  checks.check_range(task_name, p, 'min_digits', 'max_digits', 1, _MAX_DIGITS)
  p['operations'] = _check_operations(task_name, p['operations'])
  p['reverse_answer'] = checks.check_bool(task_name, 'reverse_answer', p['reverse_answer'])
  p['holdout'] = checks.check_number(task_name, 'holdout', p['holdout'], 0, 0.5, kind=float)
  if p['rationale'] not in RATIONALES:
    checks.fail(task_name, 'rationale', p['rationale'], f'is invalid; set it to one of '
                f'{list(RATIONALES)}.')
  return p


def rationale(x: str, symbol: str, y: str) -> str:
  """The working of `x symbol y`: addition's columns from the least significant digit (digits,
  carry in, sum; the last column's carry out leads the result), or multiplication's partial
  products by each digit of `y`."""
  if symbol == '*':
    return ','.join(f'{x}*{d}{"0" * k}={int(x) * int(d) * 10**k}'
                    for k, d in enumerate(reversed(y)))
  width, carry, columns = max(len(x), len(y)), 0, []
  for a, b in zip(reversed(x.zfill(width)), reversed(y.zfill(width))):
    total = int(a) + int(b) + carry
    columns.append(f'{a}+{b}+{carry}={total}')
    carry = total // 10
  return ','.join(columns)


def _texts(x: str, symbol: str, y: str, result: str, style: str, validation: bool
           ) -> list[tuple[str, str, str]]:
  """(task, prompt, answer) of each document of one problem in rationale `style`."""
  prompt = f'{x}{symbol}{y}='
  if style == 'scratchpad':
    return [('label', prompt, f'{rationale(x, symbol, y)};{result}')]
  if style == 'step_by_step':
    label = ('label', TASK_PREFIXES['label'] + prompt, result)
    return [label] if validation else [label, ('rationale', TASK_PREFIXES['rationale'] + prompt,
                                               rationale(x, symbol, y))]
  return [('label', prompt, result)]


def _format_answer(result: int, reverse_answer: bool) -> str:
  return str(result)[::-1] if reverse_answer else str(result)


def _operand_strings(rng: np.random.Generator, digits_B2: np.ndarray,
                     max_digits: int) -> list[list[str]]:
  """Uniform random operands of the given digit counts, as decimal strings (any length)."""
  num = digits_B2.shape[0]
  chars_B2M = rng.integers(0, 10, size=(num, 2, max_digits), dtype=np.uint8)
  nonzero_B2 = rng.integers(1, 10, size=(num, 2), dtype=np.uint8)
  chars_B2M[:, :, 0] = np.where(digits_B2 > 1, nonzero_B2, chars_B2M[:, :, 0])
  buffer = (chars_B2M + _ZERO).tobytes().decode('ascii')
  return [[buffer[(2 * b + k) * max_digits:(2 * b + k) * max_digits + digits_B2[b, k]]
           for k in range(2)] for b in range(num)]


def held_out(operation: str, x: str, y: str, seed: int, holdout: float) -> bool:
  """Whether problem `x` `operation` `y` (either operand order) is among the `holdout` fraction of
  problems held out of training: a seeded hash of the operation and the unordered operands."""
  a, b = sorted((x, y), key=lambda operand: (len(operand), operand))
  digest = hashlib.blake2b(f'{seed}:{operation}:{a}:{b}'.encode('ascii'), digest_size=8).digest()
  return int.from_bytes(digest, 'big') < holdout * 2**64


def _block(seed: int, split_index: int, block: int, p: dict) -> list[dict]:
  """The documents of one block of `_BLOCK` problems, in order: those on the split's side of the
  holdout (every one when `holdout` is 0)."""
  rng = np.random.default_rng([_STREAM, seed, split_index, block])
  operation_B = rng.integers(0, len(p['operations']), size=_BLOCK)
  larger_B = rng.integers(p['min_digits'], p['max_digits'] + 1, size=_BLOCK)
  smaller_B = rng.integers(p['min_digits'], larger_B + 1)
  swap_B = rng.integers(0, 2, size=_BLOCK).astype(bool)
  digits_B2 = np.stack([np.where(swap_B, smaller_B, larger_B),
                        np.where(swap_B, larger_B, smaller_B)], axis=1)
  operands = _operand_strings(rng, digits_B2, p['max_digits'])
  documents = []
  validation = SPLITS[split_index] == 'validation'
  for b in range(_BLOCK):
    operation = p['operations'][operation_B[b]]
    (x, y), symbol = operands[b], OPERATIONS[operation]
    if p['holdout'] and held_out(operation, x, y, seed, p['holdout']) != validation:
      continue
    result = int(x) + int(y) if symbol == '+' else int(x) * int(y)
    answer = _format_answer(result, p['reverse_answer'])
    for task, prompt, text_answer in _texts(x, symbol, y, answer, p['rationale'], validation):
      documents.append({
          'text': prompt + text_answer,
          'skill': operation,
          'difficulty': int(larger_B[b]),
          'operation': operation,
          'digits': int(larger_B[b]),
          'reversed': p['reverse_answer'],
          'rationale': p['rationale'],
          'task': task,
          'prompt': prompt,
          'answer': text_answer,
      })
  return documents


def _generate(split: str, seed: int, p: dict, task_name: str) -> Iterator[dict]:
  split_index, index, block, empty = SPLITS.index(split), 0, 0, 0
  while index < p['num_documents']:
    documents = _block(seed, split_index, block, p)[:p['num_documents'] - index]
    block, empty = block + 1, 0 if documents else empty + 1
    if empty == _MAX_EMPTY_BLOCKS:
      checks.fail(task_name, 'holdout', p['holdout'], f'leaves the {split} split no problem of '
                  f'{p["min_digits"]} to {p["max_digits"]} digits in {_MAX_EMPTY_BLOCKS * _BLOCK} '
                  'draws; raise max_digits or lower holdout.')
    for document in documents:
      yield {'id': f'{NAME}/{split}/{index}', **document}
      index += 1


def documents(split: str, seed: int, num_documents: int, task_name: str = NAME,
              **params) -> Iterator[dict]:
  """The `num_documents` problems of `split`, each a dict of `id`, `text` and scalar metadata.

  Metadata: `skill` (= `operation`, 'addition' or 'multiplication'), `difficulty` (= `digits`,
  the larger operand's digit count), `reversed` (whether the answer is written reversed),
  `rationale` (the parameter), `task` ('label', or step_by_step's 'rationale'), `prompt`
  ('12+345=') and `answer` ('753' reversed, '357' plain; with a scratchpad the rationale, ';' and
  the result); `text == prompt + answer`. With step_by_step a training problem is two documents
  (`num_documents` counts documents), a validation problem its label alone.
  Validation problems are held out of training (`holdout`, see the module docstring).
  Parameters are validated here, before any document is made; errors name
  `data.tasks.<task_name>.<param>`.
  """
  p = _resolve_params(split, seed, num_documents, params, task_name)
  return _generate(split, int(seed), p, task_name)


def check(document: dict) -> bool:
  """True when the document's answer is its prompt's result (and rationale), recomputed with
  Python ints."""
  prefix = TASK_PREFIXES[document['task']] if document['rationale'] == 'step_by_step' else ''
  match = re.fullmatch(re.escape(prefix) + r'(\d+)([+*])(\d+)=', document['prompt'])
  if match is None:
    return False
  x, symbol, y = match.groups()
  result = int(x) + int(y) if symbol == '+' else int(x) * int(y)
  texts = _texts(x, symbol, y, _format_answer(result, document['reversed']),
                 document['rationale'], validation=False)
  return ((document['task'], document['prompt'], document['answer']) in texts
          and document['text'] == document['prompt'] + document['answer']
          and document['digits'] == max(len(x), len(y)))
