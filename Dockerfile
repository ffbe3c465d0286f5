# The resnet-study image: one experiment per container (`docker run resnet-study train ...`), a sweep cell per
# Kubernetes pod (`resnet-study sweep cell`), or the read-only results service (`resnet-study serve`).
#
#   docker build -t resnet-study .
#   docker run --gpus all -v data:/data -v results:/results resnet-study train --n 7 --dataset cifar10
#
# The pinned torch wheels from PyPI bundle the CUDA runtime, so the default base already gives a CUDA-capable image
# (the host needs the NVIDIA driver and container toolkit, and `--gpus all`). BASE_IMAGE may be any image with
# Python >= 3.11 and its venv module, e.g. an NVIDIA CUDA image with python3.11 and python3.11-venv installed:
#   docker build --build-arg BASE_IMAGE=<that image> -t resnet-study .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
# The git commit the image is built from (`docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) .`): a label,
# and RESNET_STUDY_COMMIT, which every run records as its code_commit (beside the hash of the installed source).
ARG GIT_COMMIT=""

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RESNET_STUDY_DATA=/data \
    RESNET_STUDY_RESULTS=/results \
    MPLCONFIGDIR=/tmp/matplotlib \
    OMP_WAIT_POLICY=PASSIVE

RUN python3 -m venv "$VIRTUAL_ENV" \
    && groupadd --gid 10001 study \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin study \
    && mkdir -p /data /results \
    && chown study:study /data /results

WORKDIR /app

# Dependencies first, in their own layers, so that editing the code rebuilds in seconds. torch/torchvision are
# pinned: nothing else caps them inside a build, and an unpinned torch pulls a newer multi-GB build.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install torch==2.14.1 torchvision==0.29.1
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY core ./core
COPY jobs ./jobs
COPY results_api ./results_api
RUN pip install --no-cache-dir --no-deps . && resnet-study --help > /dev/null

LABEL org.opencontainers.image.revision=$GIT_COMMIT \
      org.opencontainers.image.source="resnet-study" \
      org.opencontainers.image.title="resnet-study"
ENV RESNET_STUDY_COMMIT=$GIT_COMMIT
USER 10001:10001
VOLUME ["/data", "/results"]
EXPOSE 8000
ENTRYPOINT ["resnet-study"]
CMD ["--help"]
