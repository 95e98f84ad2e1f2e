"""ProX's refinement programs: a model writes a small program per document, and running it cleans
the document or drops it.

Zhou et al. 2024, "Programming Every Example: Lifting Pre-training Data Quality Like Experts at
Scale" (ProX, arXiv 2409.17115): a small model, fine-tuned on examples, writes for each document
calls of a few functions, and executing them refines the corpus:

    drop_doc()                          the document is dropped
    keep_doc()                          the document is kept as it is
    remove_lines(line_start, line_end)  lines line_start..line_end (0-based, inclusive) are removed
    normalize(source_str, target_str)   every source_str becomes target_str

A program is one call a line. `parse` reads it with Python's parser, accepting only these
functions with literal arguments of the right types (nothing is evaluated), and `apply` runs it on
the document: None when it drops the document, else the refined text (the line removals by the
original line numbers, then the replacements, in order). A program that does not parse is not run:
the document is kept as it is (`refine`), as ProX keeps a document whose program fails.
launch.rewrite --mode=prox asks a checkpoint for the programs (research/rewrite.py).
"""

import ast
import dataclasses

FUNCTIONS = {'drop_doc': (), 'keep_doc': (), 'remove_lines': (int, int),
             'normalize': (str, str)}


@dataclasses.dataclass(frozen=True)
class Call:
  name: str
  args: tuple


def parse(program: str) -> list[Call] | None:
  """The calls of `program`, one a line (blank lines skipped); None for an empty program, or
  unless every line is a call of one of FUNCTIONS with literal arguments of its types."""
  if not program.strip():
    return None
  calls = []
  for line in program.strip().splitlines():
    if not line.strip():
      continue
    try:
      node = ast.parse(line.strip(), mode='eval').body
    except SyntaxError:
      return None
    if (not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name)
        or node.func.id not in FUNCTIONS or node.keywords):
      return None
    types = FUNCTIONS[node.func.id]
    if len(node.args) != len(types) or not all(
        isinstance(a, ast.Constant) and type(a.value) is t for a, t in zip(node.args, types)):
      return None
    calls.append(Call(node.func.id, tuple(a.value for a in node.args)))
  return calls


def apply(calls: list[Call], text: str) -> str | None:
  """`text` refined by `calls`: None if one is drop_doc; else without the lines of every
  remove_lines (numbered in `text`), then with every normalize's replacement, in order."""
  if any(call.name == 'drop_doc' for call in calls):
    return None
  lines = text.split('\n')
  removed = set()
  for call in calls:
    if call.name == 'remove_lines':
      start, end = call.args
      removed.update(range(max(start, 0), min(end, len(lines) - 1) + 1))
  refined = '\n'.join(line for i, line in enumerate(lines) if i not in removed)
  for call in calls:
    if call.name == 'normalize' and call.args[0]:
      refined = refined.replace(*call.args)
  return refined


def refine(program: str, text: str) -> tuple[str | None, bool]:
  """(the refined text, None if dropped; whether the program parsed): a program that does not
  parse keeps the text as it is."""
  calls = parse(program)
  return (text, False) if calls is None else (apply(calls, text), True)
