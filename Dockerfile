# The rab-certify image: the same package and pinned dependency set (constraints.txt) that
# `make` installs for the tests. One image for the API and both worker kinds.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAB_DATA_DIR=/var/lib/rab \
    RAB_STORE_DIR=/var/lib/rab/store

WORKDIR /srv/rab
COPY pyproject.toml constraints.txt README.md ./
COPY rab ./rab
COPY app ./app
COPY workers ./workers
COPY models_store ./models_store
COPY migrations ./migrations
COPY contract ./contract
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 10001 --home-dir /var/lib/rab rab \
    && mkdir -p /var/lib/rab/store && chown -R rab /var/lib/rab

USER rab
EXPOSE 8000
# The API; compose overrides the command for the workers.
CMD ["python", "-m", "rab.cli.service", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]
