"""Shared defaults for every experiment: the schema of research/defaults.py.

An experiment file starts from `get_config()` here, changes what it studies and returns the result.
"""

from research.defaults import get_config

__all__ = ['get_config']
