"""Rewriting a task's documents with a model: rephrased corpora as new files tasks.

Maini et al. 2024, "Rephrasing the Web: A Recipe for Compute and Data-Efficient Language Modeling"
(WRAP, arXiv 2401.16380) pretrain on web documents rephrased by an instruction-tuned model in a
given style ("like Wikipedia", "as questions and answers") beside the originals; REWIRE ("Recycling
the Web", Nguyen et al. 2025) rewrites the documents a quality filter would discard.
Both are one step: every document of a task, formatted into a prompt template ('{text}' marks the
document), continued by a checkpoint (research/generate.py, batched), the continuation kept as a
new document. With `mode='prox'` the continuation is instead a refinement program (ProX, arXiv
2409.17115; research/prox.py) run on the whole document: the line is the refined document, with
its `program` and whether it parsed (a program that does not parse keeps the document as it is),
and a document the program drops has no line. With `mode='label'` the line is the prompt and its
continuation, a pseudo-labelled example ("Predictions For Pre-training Language Models": a model
fine-tuned on a labelled task labels unlabelled documents, and training on those labels is
pretraining for the task).

The output is a directory of part files, `part-NNNNN.jsonl`, each the rewrites of `part_size`
consecutive documents of the task (one JSON object a line: `text`, the rewrite; `source_id`, the
document it rewrites), written whole or not at all (a temporary file renamed, local or gs://), and
`manifest.json`, the settings. Running again with the same settings resumes: the parts that exist
are kept and the others are made, so a preempted job loses at most a part's work; different settings
are refused, naming the one that changed. A task of the output is `{'source': 'files', 'pattern':
'OUT/part-*.jsonl', 'format': 'jsonl'}` (research/data/tasks.py). At scale the parts are independent
units of work (each a pure function of its documents, the checkpoint and the settings) that workers
of a job can share; here they run in order on one host. """

import dataclasses
import json
from collections.abc import Callable, Sequence

import jax
import numpy as np
from etils import epath

from research import errors, generate, prox
from research.data import score_files
from research.data import store as store_lib
from research.data import vocabularies

MANIFEST = 'manifest.json'
PLACEHOLDER = '{text}'
# What a document becomes: the continuation (rewrite), the document refined by the continuation
# as a ProX program (prox), or the prompt and its continuation (label: pseudo-labelled examples)
MODES = ('rewrite', 'prox', 'label')


@dataclasses.dataclass(frozen=True)
class Settings:
  """What a rewrite depends on; a resumed rewrite must have the same."""
  checkpoint: str
  step: int
  task: str
  split: str
  template: str
  max_new_tokens: int
  max_document_tokens: int
  temperature: float
  seed: int
  part_size: int
  batch_size: int
  num_documents: int
  mode: str = 'rewrite'  # one of MODES


def part_name(part: int) -> str:
  return f'part-{part:05d}.jsonl'


def check_template(template: str) -> None:
  if template.count(PLACEHOLDER) != 1:
    raise errors.UserError(f'--template={template!r} must hold {PLACEHOLDER} exactly once: where '
                           "each document's text goes, e.g. 'Rewrite this like Wikipedia: "
                           "{text}\\nRewritten:'.")


def check_manifest(out: epath.Path, settings: Settings) -> None:
  """Writes OUT/manifest.json, or checks the one there: a rewrite resumes only with the settings it
  started with."""
  path = out / MANIFEST
  wanted = dataclasses.asdict(settings)
  if path.exists():
    found = json.loads(path.read_text())
    changed = [k for k in wanted if found.get(k) != wanted[k]]
    if changed:
      key = changed[0]
      raise errors.UserError(f'{out} holds a rewrite with {key}={found.get(key)!r}, not '
                             f'{wanted[key]!r}: resuming needs the same settings; give another '
                             '--out, or the same settings to resume it.')
    return
  out.mkdir(parents=True, exist_ok=True)
  with score_files.atomic_file(str(path)) as f:
    f.write(json.dumps(wanted, indent=2))


def prompts(store: store_lib.DocumentStore, indices: Sequence[int], template: str,
            vocabulary, max_document_tokens: int) -> list[str]:
  """The prompt of each document: `template` with its text, cut to its first
  `max_document_tokens` tokens, in place of {text}."""
  texts = [vocabulary.decode(store.body(int(i), vocabulary.eos_id)[:max_document_tokens].tolist())
           for i in indices]
  return [template.replace(PLACEHOLDER, text) for text in texts]


def rewrite(loaded, store: store_lib.DocumentStore, settings: Settings, out: epath.Path,
            progress: Callable[[str], None] = lambda _: None) -> int:
  """Makes every missing part of the rewrite of `store`'s first `settings.num_documents` documents
  with the checkpoint `loaded` (research/finished.py), `settings.batch_size` prompts a generation
  step (its sampling key folded from the batch's first document), each part written whole
  (score_files.atomic_file); returns the parts made."""
  config = loaded.config
  vocabulary = vocabularies.make_vocabulary(config.data.vocabulary, config.data.extra_ids)
  sampling = generate.Sampling(settings.temperature)
  made = 0
  for part, first in enumerate(range(0, settings.num_documents, settings.part_size)):
    path = out / part_name(part)
    if path.exists():
      continue
    indices = np.arange(first, min(first + settings.part_size, settings.num_documents))
    lines = []
    for start in range(0, len(indices), settings.batch_size):
      batch = indices[start:start + settings.batch_size]
      key = jax.random.fold_in(jax.random.key(settings.seed), int(batch[0]))
      batch_prompts = prompts(store, batch, settings.template, vocabulary,
                              settings.max_document_tokens)
      tokens, lengths = generate.continue_texts(loaded, batch_prompts, key,
                                                settings.max_new_tokens, sampling)
      for index, prompt, row, length in zip(batch, batch_prompts, tokens, lengths):
        ids = [i for i in row[:length].tolist() if i != vocabulary.eos_id]
        record = {'text': vocabulary.decode(ids), 'source_id': store.doc_ids[int(index)]}
        if settings.mode == 'label':
          record['text'] = prompt + record['text']
        elif settings.mode == 'prox':
          program = record['text']
          text, parsed = prox.refine(program, store.text(int(index), vocabulary))
          if text is None:
            continue
          record.update(text=text, program=program, parsed=parsed)
        lines.append(json.dumps(record) + '\n')
    with score_files.atomic_file(str(path)) as f:
      f.write(''.join(lines))
    made += 1
    progress(f'{path}: documents {first} to {indices[-1]}')
  return made
