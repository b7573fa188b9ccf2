"""Scorer families, one module each, imported lazily by ``reason2rank.load``."""
