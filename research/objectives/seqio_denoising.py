"""The denoising objectives as a seqio preprocessor, for seqio Tasks outside our data layer.

A user with a seqio Task of their own (C4 on a TPU VM, say) adds UL2's mixture of denoisers (Tay et
al. 2022, "UL2: Unifying Language Learning Paradigms", arXiv 2205.05131) by appending

    research.objectives.seqio_denoising.denoise('ul2')

to the Task's preprocessors, after tokenization. Every example's `targets` (its document) is cut
into chunks short enough for each denoiser of the mixture to fit `sequence_length['inputs']` and
`sequence_length['targets']`, and each chunk becomes one example of `inputs` (mode token, clean
tokens, sentinels) and `targets` (sentinels and spans), made by the very code our own pipeline
uses (`registry.Objective.denoise`), seeded per example by seqio's seed manager. seqio's
EncDecFeatureConverter then feeds an encoder-decoder and PrefixLMFeatureConverter a prefix-LM
decoder; both pack examples when asked to.
"""

from collections.abc import Mapping

import numpy as np
import seqio
import tensorflow as tf

from research.objectives import registry


def _chunks(tokens: tf.Tensor, chunk_len: int) -> tf.data.Dataset:
  """The consecutive pieces of at most `chunk_len` tokens of one document, as a dataset."""
  length = tf.size(tokens)
  count = (length + chunk_len - 1) // chunk_len
  row_lengths = tf.concat([tf.fill([count - 1], chunk_len), [length - (count - 1) * chunk_len]], 0)
  return tf.data.Dataset.from_tensor_slices(tf.RaggedTensor.from_row_lengths(tokens, row_lengths))


def denoise(name: str = 'ul2', denoisers: Mapping | None = None, rates: Mapping | None = None,
            mode_tokens: bool = True):
  """A seqio preprocessor applying the denoising objective `name` (a preset of denoising.PRESETS,
  or the `denoisers` spec; `rates` reweights) to the tokenized `targets` of every example.

  The vocabulary is the `targets` feature's; it must have enough extra ids for the mode tokens and
  sentinels (research/data/vocabularies.py), which the objective checks when the Task is read.
  """

  def preprocess(dataset: tf.data.Dataset, sequence_length: Mapping[str, int],
                 output_features: Mapping[str, seqio.Feature]) -> tf.data.Dataset:
    vocabulary = output_features['targets'].vocabulary
    objective = registry.denoising_objective(
        name, 'encoder_decoder', sequence_length['inputs'], sequence_length['targets'],
        denoisers or {}, rates or {}, mode_tokens, vocabulary)

    def numpy_denoise(tokens: np.ndarray, seed: np.ndarray):
      rng = np.random.default_rng(np.asarray(seed).astype(np.int64) % 2**32)
      inputs, targets, _ = objective.denoise(tokens, rng)
      return inputs.astype(np.int32), targets.astype(np.int32)

    @seqio.map_over_dataset(num_seeds=1)
    def denoise_chunk(tokens, seed):
      inputs, targets = tf.numpy_function(numpy_denoise, [tokens, seed], [tf.int32, tf.int32])
      return {'inputs': tf.ensure_shape(inputs, [None]), 'targets': tf.ensure_shape(targets, [None])}

    chunks = dataset.flat_map(lambda ex: _chunks(tf.cast(ex['targets'], tf.int32),
                                                 objective.chunk_len))
    return denoise_chunk(chunks)

  return preprocess
