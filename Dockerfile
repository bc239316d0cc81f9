# gcs-ha with Ray 2.60: one image for the gcs-ha replicas and for the Ray nodes that use
# them (the head runs `gcs-ha ray-head`, workers run `ray start --address=...`).
#
#   docker build -t gcs-ha:dev .
#   docker run --rm gcs-ha:dev --help
#
# Ports: 6379 gRPC (Ray's GCS protocol, admin, gRPC health), 7379 Raft (replicas only),
# 8080 HTTP (/metrics, /livez, /readyz, /leader, /status). The Ray head also listens on
# Ray's own ports (dashboard 8265, client 10001, ...), which Ray documents.
# Data: /var/lib/gcs-ha, a volume; give every replica its own (deploy/compose,
# deploy/kubernetes). Runs as uid 1000, not root.
FROM python:3.11-slim

ARG RAY_VERSION=2.60.0

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/gcs-ha \
    PATH=/opt/gcs-ha/bin:$PATH

LABEL org.opencontainers.image.title="gcs-ha" \
      org.opencontainers.image.description="Ray's GCS, highly available (Raft over LMDB), with Ray ${RAY_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --gid 1000 gcs-ha \
    && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/gcs-ha \
       --shell /bin/bash gcs-ha \
    && mkdir -p /var/lib/gcs-ha \
    && chown 1000:1000 /var/lib/gcs-ha \
    && python -m venv /opt/gcs-ha

# Ray first: the biggest layer, and it changes less often than gcs-ha.
RUN pip install "ray[default]==${RAY_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY gcs_ha ./gcs_ha
RUN pip install . && rm -rf /src

USER 1000:1000
WORKDIR /home/gcs-ha
VOLUME ["/var/lib/gcs-ha"]
EXPOSE 6379 7379 8080

ENTRYPOINT ["gcs-ha"]
CMD ["--help"]
