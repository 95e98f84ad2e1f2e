"""The denoisers as a seqio preprocessor on a seqio Task built here."""

import functools

import numpy as np
import seqio
import tensorflow as tf

from research.data import vocabularies
from research.objectives import denoising, seqio_denoising

VOCABULARY = vocabularies.make_vocabulary('byte', extra_ids=100)
SENTINELS = {vocabularies.sentinel_id(VOCABULARY, k) for k in range(91)}
MODES = {vocabularies.control_token_id(VOCABULARY, m) for m in denoising.MODE_TOKENS.values()}
TEXTS = [('def f(x):\n    return x * %d\n' % i) * (1 + i % 7) for i in range(40)]


def _dataset_fn(split, shuffle_files, seed=None):
  del split, shuffle_files, seed
  return tf.data.Dataset.from_tensor_slices({'text': TEXTS})


def _task(name):
  features = {k: seqio.Feature(VOCABULARY, add_eos=False) for k in ('inputs', 'targets')}
  return seqio.Task(name, source=seqio.FunctionDataSource(_dataset_fn, splits=['train']),
                    preprocessors=[functools.partial(seqio.preprocessors.rekey,
                                                     key_map={'targets': 'text'}),
                                   seqio.preprocessors.tokenize,
                                   seqio_denoising.denoise('ul2')],
                    output_features=features)


def test_seqio_task_with_the_ul2_preprocessor_denoises_every_chunk():
  task = _task('test_seqio_ul2')
  lengths = {'inputs': 64, 'targets': 64}
  try:
    first = list(task.get_dataset(lengths, shuffle=False, seed=3).as_numpy_iterator())
    again = list(task.get_dataset(lengths, shuffle=False, seed=3).as_numpy_iterator())
    packed = seqio.EncDecFeatureConverter(pack=True)(
        task.get_dataset(lengths, shuffle=False, seed=3), lengths)
    packed = list(packed.as_numpy_iterator())
    prefix_lm = seqio.PrefixLMFeatureConverter(pack=False)(
        task.get_dataset(lengths, shuffle=False, seed=3), lengths)
    prefix_lm = next(prefix_lm.as_numpy_iterator())
  finally:
    seqio.TaskRegistry.remove('test_seqio_ul2')
  assert len(first) == len(again) > len(TEXTS)  # long documents give several chunks
  assert len(packed) < len(first)  # several examples per packed row
  assert sum(int(np.sum(p['decoder_loss_weights'])) for p in packed) == sum(
      len(ex['targets']) for ex in first)
  assert prefix_lm['decoder_target_tokens'].shape == (128,)
  originals = [VOCABULARY.encode(text) for text in TEXTS]
  restored = [denoising.original_tokens(ex['inputs'], ex['targets'], list(SENTINELS),
                                        MODES).tolist() for ex in first]
  assert sum(restored, []) == sum(originals, [])  # no token lost or duplicated, order kept
  for ex, ex_again in zip(first, again):  # seeded per example: the same every time
    np.testing.assert_array_equal(ex['inputs'], ex_again['inputs'])
    assert len(ex['inputs']) <= 64 and len(ex['targets']) <= 64
    assert ex['inputs'][0] in MODES
