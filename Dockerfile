# One image for every FraudOps process (scorer, stream consumer, scheduler, monitor,
# dashboard, MLflow server), built from the locked environment.
FROM python:3.11-slim AS base
ENV PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.9 \
    && apt-get update && apt-get install -y --no-install-recommends curl libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY fraudops ./fraudops
COPY feature_repo ./feature_repo
COPY service ./service
COPY monitoring ./monitoring
COPY dashboard ./dashboard
COPY .streamlit ./.streamlit
COPY bentofile.yaml ./
RUN uv sync --frozen --no-dev
ENV PATH=/app/.venv/bin:$PATH FRAUDOPS_DATA_DIR=/data
RUN useradd --create-home --uid 1000 fraudops && mkdir -p /data && chown fraudops /data
USER fraudops
VOLUME ["/data"]
EXPOSE 3000 8501 5000
CMD ["bentoml", "serve", "--host", "0.0.0.0", "--port", "3000"]
