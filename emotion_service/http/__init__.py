"""The HTTP layer: the only part of the package that knows Flask.

:func:`emotion_service.http.app.create_app` builds the app; one blueprint per resource
(:mod:`.service`, :mod:`.analysis`, :mod:`.docs`, :mod:`.jobs`).
"""
