# privacyops workers. Build: docker build -t privacyops .   Run: see docker-compose.yml.
# Stage 1 builds a wheel from pyproject.toml; stage 2 installs it (not editable), so the
# image holds the installed package only, not the source tree.
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY config ./config
COPY infra ./infra
COPY messages ./messages
COPY workers ./workers
RUN pip wheel --no-deps --wheel-dir /wheels .


FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl \
 && rm -rf /wheels \
 && groupadd --system --gid 10001 privacyops \
 && useradd --system --uid 10001 --gid privacyops --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin privacyops \
 && mkdir -p /app /data /run/secrets/privacyops \
 && chmod 700 /data /run/secrets/privacyops \
 && chown privacyops:privacyops /app /data /run/secrets/privacyops

# The SQLite store lives on the /data volume; keys on a secrets mount, never beside the store;
# other settings come from PRIVACYOPS_* variables. Files are created 0600 (umask 077).
ENV PRIVACYOPS_DB_PATH=/data/privacyops.db \
    PRIVACYOPS_KEY_DIR=/run/secrets/privacyops
VOLUME ["/data"]
WORKDIR /app
USER privacyops

# privacyops handles SIGTERM itself (drain, then exit); it runs as PID 1 in exec form.
STOPSIGNAL SIGTERM
ENTRYPOINT ["privacyops"]
CMD ["run"]
