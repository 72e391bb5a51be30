"""Emotion models: one small interface (:mod:`.base`), the backends (bundled CNN, transformers),
their registry and optimisation, and the thread plan that shares the cores between model calls.

Imports :mod:`emotion_service.audio` (features) and the vocabulary below it, never the analysis.
"""
