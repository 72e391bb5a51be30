"""The core: run the models over decoded audio, combine them, assess the answer and the session.

Imports :mod:`emotion_service.audio` and :mod:`emotion_service.models`, never the HTTP layer or
the jobs; results are dataclasses (their JSON views are in :mod:`emotion_service.views`).
"""
