"""Synthetic skill corpora with known ground truth: arithmetic, LEGO chains, biographies, copying,
in-context regression and classification, reversal facts, two-hop facts, sorting, associative
recall, set disjointness, SCAN commands, Zipfian (singleton) facts, XOR clusters and skill mixes;
draws.py holds the seeded draws they share."""
