"""Alignment engine: vectors, dictionaries, retrieval, evaluation (IO) and mapping methods (methods.md; see registry.align)."""
