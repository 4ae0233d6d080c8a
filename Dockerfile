# The one image of Icodrip Keys: API processes and workers differ only by command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH"
# The data dir (request-event spool) as a volume mount point the unprivileged user owns.
RUN mkdir -p /var/lib/icodrip && chown nobody /var/lib/icodrip
USER nobody
EXPOSE 8000
CMD ["icodrip", "serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--trusted-proxy", "172.16.0.0/12"]
