# The warmscale controller image: the base install only (kubernetes, fastapi, prometheus clients,
# pydantic, numpy, apscheduler); no torch, vLLM, LightGBM or matplotlib (those are extras).
#   docker build -f manifests/controller.Dockerfile -t ghcr.io/warmscale/controller:0.1.0 .
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY autoscaler ./autoscaler
COPY forecasting ./forecasting
COPY loader ./loader
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.12-slim
COPY --from=build /install /usr/local
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# non-root, and nothing is written to the (read-only) root filesystem
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["python", "-m", "autoscaler.controller"]
