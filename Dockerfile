# Rivalwatch: `tracker run` (the scheduler) with a system Chromium for browser checks.
# Build:  docker build -t rivalwatch .
# Run:    docker run -v $PWD/config:/app/config -e TRACKER_SMTP_PASSWORD=... rivalwatch
# The same image runs workers:  docker run rivalwatch tracker worker --queues http,browser
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    TRACKER_CHROMIUM=/usr/bin/chromium \
    TRACKER_CHROMIUM_NO_SANDBOX=1 \
    TRACKER_CONFIG=/app/config/tracker.yaml

# Debian's Chromium (Playwright drives it through executable_path; no browser download at build time),
# fonts so pages render text, and tini to pass SIGTERM to the scheduler for a clean shutdown.
RUN apt-get update \
 && apt-get install -y --no-install-recommends chromium fonts-dejavu-core fonts-noto-core tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY tracker ./tracker
COPY scrapers ./scrapers
COPY templates ./templates
COPY config ./config
RUN pip install --upgrade pip && pip install .

# Run as an unprivileged user (Chromium runs without its own sandbox: the container is the boundary).
RUN useradd --create-home --uid 10001 tracker && mkdir -p /app/data && chown tracker /app/data
USER tracker
VOLUME ["/app/data"]

HEALTHCHECK --interval=60s --timeout=10s CMD tracker validate || exit 1
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["tracker", "run"]
