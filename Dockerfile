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
 && mkdir -p /app /data/keys /data/exports /data/notices \
 && chmod 700 /data /data/keys /data/exports /data/notices \
 && chown -R privacyops:privacyops /app /data

# Everything the service writes lives under /data, so recreating the container loses
# nothing: the SQLite store, the export packages, the file channel's notices, and the keys
# (/data/keys: mount a volume of its own there, or your secrets manager, so the keys are
# never on the store's volume; compose does). Other settings come from PRIVACYOPS_*
# variables. Files are created 0600 (umask 077).
ENV PRIVACYOPS_DB_PATH=/data/privacyops.db \
    PRIVACYOPS_KEY_DIR=/data/keys \
    PRIVACYOPS_EXPORT_DIR=/data/exports \
    PRIVACYOPS_NOTIFY_DIR=/data/notices
VOLUME ["/data"]
WORKDIR /app
USER privacyops

# The ops endpoint (/metrics, /healthz, /readyz), the console and the download page
# (`privacyops console`). Each binds 127.0.0.1 unless told otherwise (compose does).
EXPOSE 9464 8480 8481

# `run`'s liveness: /healthz answers 200 while the broker and the store do. Other commands
# (console) override it in compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4).status == 200 else 1)"]

# privacyops handles SIGTERM itself (drain, then exit); it runs as PID 1 in exec form.
STOPSIGNAL SIGTERM
ENTRYPOINT ["privacyops"]
CMD ["run"]
