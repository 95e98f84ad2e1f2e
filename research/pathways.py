"""Monitoring generalisation without a test set: the expert pathways of training samples.

Li, Fan & Zhou 2025, "Where to find Grokking in LLM Pretraining? Monitor Memorization-to-
Generalization without Test" (arXiv 2506.21551), find that in mixture-of-experts pretraining the
training samples' pathways (their expert choices across layers) go from random and instance-specific
to structured and shared between samples, and that one sample's pathway grows smoother across
layers, after the training loss has converged too; two metrics of training rows alone track
downstream generalisation:

- **Pathway distance** (between samples, lower = shared pathways). A sample's pathway is the
  sequence of its expert choices: for each MoE layer in depth order, for each valid (non-padding)
  token in position order, its top-k experts in the router's top-k order. Two samples' distance
  is the edit (Levenshtein) distance of their pathways; the metric is its mean over all pairs of
  the monitored samples.
- **Pathway consistency** (within a sample, higher = a smoother pathway, lower pathway complexity).
  At each MoE layer the sample's aggregated expert embedding is the gate-weighted sum, over its
  tokens and their k choices, of the chosen experts' embeddings; the metric is the cosine similarity
  of the aggregated embeddings of subsequent MoE layers, averaged over the layer pairs and then over
  the samples. It needs two MoE layers or more.

Two choices are this implementation's, not the paper's: the edit distance is normalised by the
longer pathway's length, so it lies in [0, 1] whatever the row lengths, depth and k; and an expert's
embedding is its router weight vector, column e of the layer's router kernel W_r [D, E] (every
layer's router reads the residual stream, so the columns compare across layers). The MoE layer
(research/model/moe.py) sows each row's choices and aggregated embedding into the `pathways`
collection, which only `make_pathway_step` asks for. An encoder-decoder's pathways are its decoder's
(its tokens are the targets' rows, `segment_ids` > 0); the encoder's MoE layers are left out.

The training loop (research/train.py, config `eval.pathway_rows`) runs `make_pathway_step` at each
evaluation on the first rows of every training task's packed rows and logs
`monitor/<task>/pathway_distance` and `monitor/<task>/pathway_consistency` (`pathway_metrics`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from research.objectives import load_balance


def collect(pathways) -> dict | None:
  """The pathways every decoder MoE layer sowed (the `pathways` collection), in depth order.

  Returns {'choices': int32 [M, B, L, K], 'embedding': float32 [M, B, D]} over the M MoE layers,
  or None when there is none. An encoder-decoder's encoder stack (`encoder_layers*`) is left out.
  """
  decoder = {key: value for key, value in pathways.items() if not key.startswith('encoder_layers')}
  found = load_balance.sown(decoder, 'pathway')
  if not found:
    return None
  return {'choices': jnp.concatenate([s['choices'].reshape(-1, *s['choices'].shape[-3:])
                                      for s in found]),
          'embedding': jnp.concatenate([s['embedding'].reshape(-1, *s['embedding'].shape[-2:])
                                        for s in found])}


def make_pathway_step(model, out_shardings=None):
  """A jitted (params, batch) -> {'choices' [M, B, L, K], 'embedding' [M, B, D], 'valid' [B, L]}.

  `valid` marks the tokens the MoE layers route (segment_ids > 0, as the model derives it).
  `out_shardings` (e.g. the mesh's replicated sharding) places the outputs for fetching.
  """
  if not getattr(model.config, 'moe_experts', 0):
    raise ValueError('The pathway metrics need a mixture-of-experts model (model.moe_experts > 0).')

  def pathway_step(params, batch):
    _, variables = model.apply({'params': params}, batch, mutable=['pathways'])
    return {**collect(variables['pathways']), 'valid': batch['segment_ids'] > 0}
  if out_shardings is None:
    return jax.jit(pathway_step)
  return jax.jit(pathway_step, out_shardings=out_shardings)


def pathway_sequences(choices_NMLK, valid_NL):
  """Each sample's pathway as one sequence of expert ids: (sequences_NT, lengths_N).

  Sample n's pathway is choices[n, m, l, k] over m (depth), then its valid tokens l in position
  order, then k (top-k order): lengths_N = M * K * (valid tokens), T = M * L * K, padded with -1.
  """
  choices_NMLK, valid_NL = np.asarray(choices_NMLK), np.asarray(valid_NL, bool)
  samples, layers, length, top_k = choices_NMLK.shape
  sequences_NT = np.full((samples, layers * length * top_k), -1, np.int32)
  lengths_N = layers * top_k * valid_NL.sum(axis=1)
  for n in range(samples):
    sequences_NT[n, :lengths_N[n]] = choices_NMLK[n][:, valid_NL[n]].reshape(-1)
  return sequences_NT, lengths_N


def edit_distances(sequences_NT, lengths_N):
  """The Levenshtein distance of every pair of sequences i < j, in np.triu_indices(N, 1) order.

  Sequence n is sequences_NT[n, :lengths_N[n]]. One dynamic-programming row of all pairs at a time:
  with D[i][j] the distance of the first i and j symbols, t[j] = min(D[i-1][j] + 1,
  D[i-1][j-1] + [a_i != b_j]) (deletion, substitution) and t[0] = i, the insertions make the row a
  running minimum, D[i][j] = min_{j' <= j} t[j'] + j - j' = cummin(t - j)[j] + j. Each pair's value
  is read when the rows reach its own lengths, so what lies past them is never used. O(N^2 T^2) work
  in numpy.
  """
  sequences_NT, lengths_N = np.asarray(sequences_NT), np.asarray(lengths_N)
  first_P, second_P = np.triu_indices(len(lengths_N), 1)
  first_len_P, second_len_P = lengths_N[first_P], lengths_N[second_P]
  if not len(first_P):
    return np.zeros((0,), np.int64)
  width = int(second_len_P.max())
  a_PT, b_PJ = sequences_NT[first_P], sequences_NT[second_P, :width]
  j_J = np.arange(width + 1, dtype=np.int32)
  row_PJ = np.broadcast_to(j_J, (len(first_P), width + 1)).copy()  # D[0][j] = j
  pairs_P = np.arange(len(first_P))
  distance_P = row_PJ[pairs_P, second_len_P].astype(np.int64)  # pairs whose first sequence is empty
  t_PJ = np.empty_like(row_PJ)
  for i in range(1, int(first_len_P.max()) + 1):
    t_PJ[:, 0] = i
    np.minimum(row_PJ[:, 1:] + 1, row_PJ[:, :-1] + (a_PT[:, i - 1:i] != b_PJ), out=t_PJ[:, 1:])
    row_PJ = np.minimum.accumulate(t_PJ - j_J, axis=1) + j_J
    done_P = first_len_P == i
    distance_P[done_P] = row_PJ[done_P, second_len_P[done_P]]
  return distance_P


def pathway_distances(choices_NMLK, valid_NL) -> float | None:
  """The mean over all pairs of samples of their pathways' edit distance over the longer pathway's
  length, in [0, 1]: 0 when all pathways are the same, 1 when no two share an expert at all.

  `choices_NMLK` are the samples' top-k experts per MoE layer and token, `valid_NL` their valid
  tokens (`pathway_sequences`). Samples without a valid token are left out; None when fewer than
  two remain. Per pair: `edit_distances` of `pathway_sequences`.
  """
  sequences_NT, lengths_N = pathway_sequences(choices_NMLK, valid_NL)
  kept_N = lengths_N > 0
  sequences_NT, lengths_N = sequences_NT[kept_N], lengths_N[kept_N]
  if len(lengths_N) < 2:
    return None
  first_P, second_P = np.triu_indices(len(lengths_N), 1)
  longer_P = np.maximum(lengths_N[first_P], lengths_N[second_P])
  return float(np.mean(edit_distances(sequences_NT, lengths_N) / longer_P))


def pathway_consistency(embedding_MND) -> float | None:
  """The mean over samples of the mean over adjacent MoE layers of the cosine similarity of the
  sample's aggregated expert embeddings [M, N, D]: 1 when every layer's is the same direction.

  A zero embedding (a sample without valid tokens) is left out with its layer pairs, and a sample
  left with no pair too; None with fewer than two layers or no pair left.
  """
  embedding_MND = np.asarray(embedding_MND, np.float64)
  if embedding_MND.shape[0] < 2:
    return None
  norm_MN = np.linalg.norm(embedding_MND, axis=-1)
  dot_MN = np.sum(embedding_MND[1:] * embedding_MND[:-1], axis=-1)
  held_MN = (norm_MN[1:] > 0) & (norm_MN[:-1] > 0)
  cosine_MN = np.where(held_MN, dot_MN / np.maximum(norm_MN[1:] * norm_MN[:-1], 1e-300), 0.0)
  pairs_N = held_MN.sum(axis=0)
  if not pairs_N.any():
    return None
  per_sample_N = cosine_MN.sum(axis=0)[pairs_N > 0] / pairs_N[pairs_N > 0]
  return float(np.mean(per_sample_N))


def pathway_metrics(outputs: list[dict], prefix: str = '') -> dict:
  """`prefix`pathway_distance and `prefix`pathway_consistency (where defined: two samples with
  tokens; two MoE layers) of one set of rows, from `make_pathway_step`'s outputs on its batches
  (fetched here; all-padding rows count for nothing)."""
  outputs = jax.device_get(outputs)
  choices_MNLK, embedding_MND = (np.concatenate([o[key] for o in outputs], axis=1)
                                 for key in ('choices', 'embedding'))
  valid_NL = np.concatenate([o['valid'] for o in outputs])
  values = {
      'pathway_distance': pathway_distances(np.swapaxes(choices_MNLK, 0, 1), valid_NL),
      'pathway_consistency': pathway_consistency(embedding_MND),
  }
  return {prefix + name: value for name, value in values.items() if value is not None}
