# CPU image by default. For NVIDIA GPUs:  docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=5000 \
    MODELS_DIR=/app/models \
    HF_HOME=/app/models/hf \
    LOG_FILE=/app/logs/emotion_api.log \
    JOB_DIR=/app/jobs

RUN apt-get update \
    && apt-get install -y --no-install-recommends libsndfile1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app

WORKDIR /app
COPY requirements.txt .
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 \
    && pip install -r requirements.txt

COPY emotion_service ./emotion_service
COPY emotion_api.py speech_emotion_analyzer.py start_api_server.py test_api.py gunicorn.conf.py ./
RUN mkdir -p /app/models /app/logs /app/jobs && chown app /app/models /app/logs /app/jobs
USER app

EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD python -c "import urllib.request,os; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=4)"
# One process per device; request threads share one copy of the models (see gunicorn.conf.py).
CMD ["python", "start_api_server.py"]
