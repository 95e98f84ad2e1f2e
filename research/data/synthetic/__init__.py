"""Synthetic skill corpora with known ground truth: arithmetic, LEGO chains, biographies and
copying."""
