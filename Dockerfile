# opsync operator image: a virtualenv built in one stage, copied into a slim runtime
# that runs as a non-root user with no shell tools it does not need.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/opsync
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN /opt/opsync/bin/pip install --no-cache-dir .

FROM python:3.11-slim
COPY --from=build /opt/opsync /opt/opsync
ENV PATH=/opt/opsync/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["opsync"]
CMD ["run"]
