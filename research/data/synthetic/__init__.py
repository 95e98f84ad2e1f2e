"""Synthetic skill corpora with known ground truth: arithmetic, LEGO chains, biographies, copying
and in-context regression and classification."""
