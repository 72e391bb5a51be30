"""Whole recordings analysed in the background: job stores, the local runner, the Celery backend
and the webhooks that announce a finished job. Knows no Flask: the HTTP layer is above it.
"""
