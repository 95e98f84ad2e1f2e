"""Synthetic skill corpora with known ground truth: arithmetic, LEGO chains and biographies."""
