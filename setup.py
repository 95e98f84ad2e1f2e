"""For Beam's --setup_file (Dataflow workers install the project from it); the metadata is in
pyproject.toml."""

import setuptools

setuptools.setup()
