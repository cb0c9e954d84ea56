# The rab-certify images, one Dockerfile, chosen by build arguments (docker-compose.yml):
#
#   API            EXTRAS=service                                   no torch at all
#   CPU worker     EXTRAS="service torch" TORCH_INDEX=https://download.pytorch.org/whl/cpu
#   GPU worker     EXTRAS="service torch"                           CUDA torch from PyPI
#
# The dependencies (pinned by constraints.txt, the set `make` installs for the tests) are
# installed from pyproject.toml alone in a layer before the source is copied: a change to the
# code rebuilds only the last layers.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    RAB_DATA_DIR=/var/lib/rab \
    RAB_STORE_DIR=/var/lib/rab/store

RUN useradd --system --uid 10001 --home-dir /var/lib/rab rab \
    && mkdir -p /var/lib/rab/store && chown -R rab /var/lib/rab

WORKDIR /srv/rab
ARG EXTRAS=service
ARG TORCH_INDEX=
COPY pyproject.toml constraints.txt docker/requirements.py ./
# torch and torchvision from TORCH_INDEX when set (their own dependencies then come from PyPI)
RUN if [ -n "$TORCH_INDEX" ]; then \
        pip install --no-deps --index-url "$TORCH_INDEX" -c constraints.txt torch torchvision; \
    fi \
    && python requirements.py $EXTRAS > requirements.txt \
    && pip install -c constraints.txt -r requirements.txt

COPY README.md ./
COPY rab ./rab
COPY app ./app
COPY workers ./workers
COPY models_store ./models_store
COPY migrations ./migrations
COPY contract ./contract
RUN pip install --no-deps . && python -c "import rab.extras as e; [e.require(x, 'this image') for x in '$EXTRAS'.split()]"

USER rab
EXPOSE 8000
# The API; compose overrides the command for the workers.
CMD ["python", "-m", "rab.cli.service", "serve", "--no-worker", "--host", "0.0.0.0", "--port", "8000"]
