# Baseline for `nox -s bench` (image size): a competent single-stage Dockerfile for the same app.
# Same base and lock as container/Dockerfile; the wheels enter one RUN through a bind mount and
# leave with it (pip --no-cache-dir, no build tools installed), so no layer keeps them.
# Built only by the bench, then deleted.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

ARG LOCK_FILE
RUN --mount=type=bind,from=wheels,target=/tmp/wheels \
    --mount=type=bind,from=locks,target=/tmp/locks \
    python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links /tmp/wheels --require-hashes --only-binary=:all: -r "/tmp/locks/${LOCK_FILE}" \
 && rm -rf /root/.cache
ENV PATH=/opt/venv/bin:${PATH}

WORKDIR /opt/app
COPY app/ /opt/app/
ENTRYPOINT ["python3", "./__main__.py", "-i", "/input", "-m", "/model/model.ts", "-o", "/output"]
