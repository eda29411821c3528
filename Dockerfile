# Transferability Explorer as a container: CPU torch by default, a shared demo when TLCORE_DEMO=1.
#   docker build -t tlx .                       # CPU (about 1 GB of torch wheels)
#   docker run -p 8501:8501 -e TLCORE_DEMO=1 tlx
# GPU variant: build with the CUDA wheels and run with the NVIDIA container toolkit:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 -t tlx-gpu .
#   docker run --gpus all -p 8501:8501 tlx-gpu
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    TLCORE_HOME=/home/app/.tlcore TORCH_HOME=/home/app/.cache/torch

# A non-root user owns the app and its caches (run history, decoded datasets, renders, weights).
RUN useradd --create-home --uid 1000 app
WORKDIR /home/app/explorer

# torch first, from its own index (CPU wheels are a fifth of the CUDA ones), then the rest: a code
# change does not reinstall torch.
RUN pip install --index-url "$TORCH_INDEX" $TORCH_SPEC
COPY requirements.txt .
RUN pip install -r requirements.txt
COPY --chown=app:app . .
RUN pip install --no-deps -e .

USER app
# Every architecture's depth and block list: shipped for torchvision 0.29.1 (tlcore/zoo/known/); for
# another TORCH_SPEC worked out once here (about 17 s on 2 cores) and kept in TLCORE_HOME, or the
# first visitor of a fresh container would wait for it on the zoo page.
RUN python -m tlcore zoo --format csv > /dev/null
# The Inside-the-network page's first view too — its first model's middle layer on the default
# dataset, rendered with the device's settings (tests/app/test_visualize.py keeps this in step with
# the page): a fresh container's first visitor reads it from the cache (~15 → ~7 s on 2 cores). The
# build has no GPU, so this serves CPU images; a GPU container's page asks for larger renders.
RUN python -m tlcore vis --model efficientnet_lite0 --data digits --data-size 64 --out /tmp/warm && rm -rf /tmp/warm
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health', timeout=4)"
CMD ["streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
