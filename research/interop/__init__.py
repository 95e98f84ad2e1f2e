"""Interoperation with other ecosystems: Hugging Face checkpoints (import and export) and the
lm-evaluation-harness adapter. It builds on the training core (research/) and is never imported
by it."""
