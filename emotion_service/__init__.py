"""Speech emotion analysis for job-interview software.

The folders follow the data, and every import looks down (``ARCHITECTURE.md``; the contracts in
``pyproject.toml`` are checked by ``lint-imports`` in CI):

- :mod:`emotion_service.config`, :mod:`emotion_service.errors`, :mod:`emotion_service.labels`:
  the shared vocabulary at the bottom (settings, the sampling rate, errors, canonical emotions);
- :mod:`emotion_service.audio`: any upload decoded to 16 kHz mono, features, VAD, segmentation, prosody;
- :mod:`emotion_service.models`: the emotion model backends, their registry and the thread plan;
- :mod:`emotion_service.analysis`: analyzer, micro-batching, ensemble, assessment, interviews, cache;
- :mod:`emotion_service.views`: the analysis results as the API's JSON;
- :mod:`emotion_service.jobs`: background jobs (stores, runners, Celery backend, webhooks);
- :mod:`emotion_service.http`: the Flask app (the only part that knows Flask);
- at the top, entry points: :mod:`.cli`, :mod:`.train`, :mod:`.download`, :mod:`.celery_app`.
"""

__version__ = "0.1.0"
