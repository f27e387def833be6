# Baseline for `nox -s bench` (image size): the hand-written Dockerfile recipe, as a vendoring
# Dockerfile builds the same packages on the same base. Single stage, requirements and wheels
# COPYed into layers, pip left with its cache. Built only by the bench, then deleted.
# No network in the build: pip installs from the COPYed wheelhouse.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}

ARG LOCK_FILE
WORKDIR /opt/app
COPY --from=locks ${LOCK_FILE} requirements.txt
COPY --from=wheels . /opt/wheels
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --find-links /opt/wheels -r requirements.txt
ENV PATH=/opt/venv/bin:${PATH}

COPY app/ /opt/app/
ENTRYPOINT ["python3", "./__main__.py", "-i", "/input", "-m", "/model/model.ts", "-o", "/output"]
