"""Audio in: decoding any upload to 16 kHz mono, features, voice activity, segmentation and prosody.

The bottom working layer: it imports nothing of the package but :mod:`emotion_service.config`
and :mod:`emotion_service.errors`.
"""
