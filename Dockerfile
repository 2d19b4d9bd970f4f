# r2sf: the OData service, the sync scheduler and the operator commands in one image.
#   docker build -t r2sf .
#   docker run -e DATABASE_URL=... -e ODATA_CREDENTIALS=user:password -p 8000:8000 r2sf
#   docker run ... r2sf r2sf scheduler        (the clock process; same commands as the Procfile)

# -- build: a virtualenv from the hash-checked lock file, then the project itself ------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/r2sf
WORKDIR /src
# The runtime lock: the service's dependencies and the build backend, no test or lint tools.
COPY requirements-runtime.lock ./
RUN /opt/r2sf/bin/pip install --require-hashes -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY service/ service/
COPY odata/ odata/
COPY sync/ sync/
# --no-deps: every dependency came from the lock above; nothing unpinned gets in.
RUN /opt/r2sf/bin/pip install --no-deps --no-build-isolation .
# Your r2sf.toml, when there is one next to this file, becomes the image's config (the glob
# lets the build succeed without it; R2SF_CONFIG or --config override it at run time).
COPY r2sf.example.toml r2sf.tom[l] /config/

# -- runtime: the virtualenv only, run as an unprivileged user --------------------------------
FROM python:3.11-slim
ENV PATH=/opt/r2sf/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    LOG_FORMAT=json PORT=8000
RUN useradd --system --uid 10001 --home-dir /app --create-home r2sf
COPY --from=build /opt/r2sf /opt/r2sf
COPY --from=build --chown=r2sf:r2sf /config/ /app/
WORKDIR /app
USER r2sf
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["r2sf", "serve"]
