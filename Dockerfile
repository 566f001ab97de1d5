# Convergence Data Pipeline API for Cloud Run: non-root, listens on $PORT (Cloud Run sets it).
FROM python:3.11-slim

# Fail closed: the image runs as production unless the deployment says otherwise, so it refuses
# to start without its admin key, KMS key and BigQuery (src/core/settings.py, unsafe_reasons).
# Cloud Run's front end is the one proxy in front of the container and appends the real client
# address as the last X-Forwarded-For entry: TRUSTED_PROXY_HOPS=1 makes the per-client limits use
# exactly that entry (never one the client wrote). uvicorn's own proxy-header handling is off.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 PORT=8080 ENVIRONMENT=production TRUSTED_PROXY_HOPS=1

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app

COPY src ./src
COPY configs ./configs
USER app

EXPOSE 8080
CMD ["python", "-m", "src.app"]
