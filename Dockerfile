# syntax=docker/dockerfile:1
# queen's container image. Two stages: the first builds wheels for queen and every dependency,
# the second installs them offline into a slim Python with no compiler, no pip cache and no
# source tree, and runs as an unprivileged user. Operator guide: docs/deploy.md.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY queen ./queen
COPY sql ./sql
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim-bookworm
# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify it and volume ownership is
# predictable across rebuilds.
RUN groupadd --system --gid 10001 queen \
    && useradd --system --uid 10001 --gid queen --home-dir /var/lib/queen --no-create-home \
       --shell /usr/sbin/nologin queen \
    && mkdir -p /var/lib/queen/buffers /var/lib/queen/pg \
    && chown -R queen:queen /var/lib/queen
# The wheels are bind-mounted from the build stage, so no layer of this image keeps them; the
# packaging tools go once queen is in (nothing at run time imports them).
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/queen-*.whl \
    && pip uninstall --yes setuptools wheel pip

# Only variables queen reads (queen/config.py); tests/deploy checks that this stays true.
# PG_HOST is left unset on purpose: the image then runs an embedded PostgreSQL in QUEEN_DATA_DIR,
# and every real deployment (compose, Helm, systemd) points it at a server of its own.
ENV HOST=0.0.0.0 \
    PORT=6632 \
    NUM_WORKERS=2 \
    LOG_FORMAT=json \
    FILE_BUFFER_DIR=/var/lib/queen/buffers \
    QUEEN_DATA_DIR=/var/lib/queen/pg

# The disk failover buffer must outlive the container: pushes accepted while PostgreSQL was
# down live there until they are replayed.
VOLUME ["/var/lib/queen/buffers", "/var/lib/queen/pg"]
WORKDIR /var/lib/queen
USER 10001:10001
EXPOSE 6632/tcp 6633/udp

# The slim image has no curl; Python's standard library does the probe. /health answers 503
# while PostgreSQL is unreachable, which urlopen raises, so the check fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '6632'), timeout=4)"]

# Exec form: queen is PID 1 and receives SIGTERM itself; it stops accepting, answers parked
# long-polls, lets in-flight requests finish, closes the buffer file and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["queen"]
CMD ["serve"]
