# syntax=docker/dockerfile:1
# drop-explainer: build with
#   docker build -t ghcr.io/drop-explainer/drop-explainer:0.1.0 .
# (docs/deploy.md: build, push, and what the image contains)
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: a virtual environment with the package and its runtime deps -------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY daemon ./daemon
COPY deploy/docker/install-venv.sh /usr/local/bin/install-venv.sh
RUN sh /usr/local/bin/install-venv.sh /opt/drop-explainer /src

# --- run: the same Python, the venv, nothing else -----------------------------
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="drop-explainer" \
      org.opencontainers.image.description="Explains Kubernetes NetworkPolicy packet drops seen by Cilium Hubble" \
      org.opencontainers.image.source="https://github.com/drop-explainer/drop-explainer" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/drop-explainer /opt/drop-explainer
# HOME on /tmp: uid 65532 has no passwd entry, and /tmp is the one writable
# path besides the store under readOnlyRootFilesystem (an emptyDir in deploy/).
ENV PATH=/opt/drop-explainer/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The store's default directory, writable by the runtime user when no volume
# is mounted there (the manifests always mount one).
RUN mkdir -p /var/lib/drop-explainer && chown 65532:65532 /var/lib/drop-explainer
# Non-root by default (the distroless "nonroot" uid); only the hubble-node
# overlay, whose socket only root may open by default, sets runAsUser 0 with
# every capability dropped (its manifest says why).
USER 65532:65532
WORKDIR /var/lib/drop-explainer
EXPOSE 8080
ENTRYPOINT ["/opt/drop-explainer/bin/drop-explainer"]
CMD ["run"]
