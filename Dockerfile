# syntax=docker/dockerfile:1
# Build stage: dependencies from the lock in their own cached layer, then the project itself.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
RUN /opt/venv/bin/pip install --no-deps -r /tmp/requirements.lock
COPY pyproject.toml README.md /src/
COPY core /src/core
COPY bots /src/bots
RUN /opt/venv/bin/pip install --no-deps /src

# Runtime stage: the virtualenv only, run by an unprivileged user.
FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --create-home --home-dir /app chatgw
COPY --from=build /opt/venv /opt/venv
# Inside a container the listeners must face the pod/container address: probes and Slack come from outside.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 DATA_DIR=/app/data HEALTH_PORT=8080 HEALTH_HOST=0.0.0.0 HOST=0.0.0.0 PORT=3000
WORKDIR /app
USER 10001
EXPOSE 3000 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["chat-gateway"]
CMD ["run", "slack", "discord"]
