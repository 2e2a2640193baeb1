# segmentflow worker image: `docker build -t segmentflow .` then `docker run segmentflow worker`
# (configured by SEGMENTFLOW_* environment variables, see CONTRACT §7 / README).

# --- build wheels (a compiler is at hand for any dependency without a wheel) ----------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

# --- runtime -------------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEGMENTFLOW_WEB_PORT=6066
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels segmentflow \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /data --create-home segmentflow
# Faust keeps a small "<namespace>-data/" directory in the working directory
WORKDIR /data
USER segmentflow
EXPOSE 6066
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('SEGMENTFLOW_WEB_PORT', '6066'), timeout=2)"
ENTRYPOINT ["segmentflow"]
CMD ["worker"]
