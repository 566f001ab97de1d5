# Convergence Data Pipeline API for Cloud Run: non-root, listens on $PORT (Cloud Run sets it).
FROM python:3.11-slim

# Only Cloud Run's front end can reach the container: trust its X-Forwarded-For, so per-client
# limits see the real client address.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 PORT=8080 FORWARDED_ALLOW_IPS=*

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin app

COPY src ./src
COPY configs ./configs
USER app

EXPOSE 8080
CMD ["python", "-m", "src.app"]
