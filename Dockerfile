# tracecode: the API and consumer pages. Give it DATABASE_URL, REDIS_URL and TRACECODE_SECRET;
# without the URLs it starts embedded Postgres and Redis under TRACECODE_DATA_DIR.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN useradd --system --create-home --uid 10001 tracecode
WORKDIR /app

# Locked dependencies in their own layer: rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

COPY pyproject.toml README.md ./
COPY resolver ./resolver
COPY codegen ./codegen
COPY cache ./cache
COPY schema ./schema
RUN pip install --no-deps --no-build-isolation .

USER tracecode
ENV TRACECODE_DATA_DIR=/home/tracecode/data \
    NUMBA_CACHE_DIR=/home/tracecode/.cache/numba
EXPOSE 8000
# Migrate as its own step first: docker run ... tracecode migrate
CMD ["tracecode", "serve", "--host", "0.0.0.0", "--port", "8000"]
