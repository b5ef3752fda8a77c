# syntax=docker/dockerfile:1
# FeedAgent container image: a wheel built in a throw-away stage, installed into
# a virtualenv on python:3.11-slim, run as uid/gid 10001 with nothing writable
# but /var/lib/feedagent (state) and /tmp.
#
#   docker build -t feedagent:0.1.0 .
#   docker run --rm --read-only --tmpfs /tmp -v feedagent-state:/var/lib/feedagent \
#     -v $PWD/feedagent.yaml:/etc/feedagent/feedagent.yaml:ro --env-file feedagent.env \
#     -p 127.0.0.1:9464:9464 feedagent:0.1.0
#
# The config must listen on 0.0.0.0:9464 (admin.listen) to be reachable from
# outside the container. No HEALTHCHECK: Kubernetes ignores it and uses the
# chart's probes (/-/healthy, /-/ready); for plain Docker use
#   --health-cmd 'python -c "import urllib.request as u; u.urlopen(\"http://127.0.0.1:9464/-/healthy\", timeout=2)"'.
#
# The base image is pinned by tag; pin it by digest too in your registry mirror
# (python:3.11.11-slim-bookworm@sha256:...) for byte-reproducible builds.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent ./agent
RUN python -m pip wheel --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/feedagent/bin:$PATH
COPY --from=build /dist/*.whl /tmp/wheels/
RUN python -m venv /opt/feedagent \
    && /opt/feedagent/bin/pip install /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && groupadd --system --gid 10001 feedagent \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/feedagent \
        --shell /usr/sbin/nologin feedagent \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/feedagent \
    && install -d -m 0755 /etc/feedagent
# A default that runs anywhere (`docker run feedagent`): the simulator config,
# listening on all interfaces. Kubernetes and real deployments mount their own.
COPY configs/feedagent.yaml /etc/feedagent/feedagent.yaml
RUN sed -i 's/^  listen: 127\.0\.0\.1:9464/  listen: 0.0.0.0:9464/' /etc/feedagent/feedagent.yaml \
    && grep -q '^  listen: 0\.0\.0\.0:9464' /etc/feedagent/feedagent.yaml \
    && chmod 0644 /etc/feedagent/feedagent.yaml \
    && feedagent validate -c /etc/feedagent/feedagent.yaml
USER 10001:10001
WORKDIR /var/lib/feedagent
VOLUME ["/var/lib/feedagent"]
EXPOSE 9464
ENTRYPOINT ["feedagent"]
CMD ["run", "-c", "/etc/feedagent/feedagent.yaml"]
