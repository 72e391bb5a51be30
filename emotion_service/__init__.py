"""Speech emotion analysis for job-interview software.

The package is split one module per job:

- :mod:`emotion_service.audio` decodes any upload to 16 kHz mono float32;
- :mod:`emotion_service.labels` holds the canonical emotion set and maps model labels onto it;
- :mod:`emotion_service.models` holds the emotion model backends and their registry;
- :mod:`emotion_service.ensemble` combines the models' scores;
- :mod:`emotion_service.assessment` turns emotions into an interview assessment;
- :mod:`emotion_service.analyzer` ties these together behind one class;
- :mod:`emotion_service.api` is the HTTP layer (the only module that knows Flask).
"""

__version__ = "0.1.0"
