# The service image: the locked runtime dependencies, the library (src/) and app/, run as an
# unprivileged user.
# The API (`python -m app`, the default) and the worker (`python -m app.worker`) share it.
FROM python:3.11-slim

ENV UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /srv
COPY pyproject.toml uv.lock README.md ./
# The library's and the service's dependencies only: --no-dev alone would still install the
# default `bench` group.
RUN uv sync --locked --no-default-groups --group service --no-install-project
COPY src ./src
RUN uv sync --locked --no-default-groups --group service --no-editable
COPY app ./app
# The store's default SQLite file (STORE__URL) lives in /srv/data: writable by the app's user,
# and a mounted volume starts with this ownership.
RUN mkdir -p /srv/data && chown nobody:nogroup /srv/data

USER nobody
EXPOSE 8000
# `python -m app` serves with uvicorn's h11 protocol bounded by SERVER__* (head and body
# timeouts, head size, connections per process) and raises the soft descriptor limit to the
# container's hard limit (`docker run --ulimit nofile=1024:65536`, compose's `ulimits`).
CMD ["python", "-m", "app"]
