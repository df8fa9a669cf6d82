# vqexplore on CPU: the Gradio demo (default command) or the Streamlit dashboard.
#
#   docker build -t vqexplore .
#   docker run --rm -p 7860:7860 vqexplore                         # demo:      http://localhost:7860
#   docker run --rm -p 8501:8501 vqexplore streamlit run app/dashboard.py \
#       --server.address 0.0.0.0 --server.port 8501                # dashboard: http://localhost:8501
#
# CPU-only torch wheels make the image about 4 GB smaller:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t vqexplore .
# Hosted defaults: the dashboard opens only folders inside checkpoints/ and runs/ (or Hub repo
# ids; VQEXPLORE_CONFINE=0 lifts that); the demo only reads uploaded files and takes Hub ids.
# Demo checkpoints come from checkpoints/ in the build context, or from the Hub:
#   docker run -e VQEXPLORE_HUB_REPOS=user/vq-512,user/fsq-512 -p 7860:7860 vqexplore
#
# tests/test_docker.py lints this file (hadolint) and runs its RUN and CMD steps outside Docker.
FROM python:3.11-slim

# Extra package index for torch (empty: PyPI only).
ARG TORCH_INDEX=""

# PYTHONPATH: the source tree in WORKDIR is the project (the image's stand-in for requirements.txt's `-e .`).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    GRADIO_ANALYTICS_ENABLED=False \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    MPLCONFIGDIR=/tmp/matplotlib \
    VQEXPLORE_CONFINE=1 \
    PYTHONPATH=/home/app/vqexplore

LABEL org.opencontainers.image.title="vqexplore" \
      org.opencontainers.image.description="Train and inspect vector-quantized image tokenizers: Gradio demo and Streamlit dashboard" \
      vqexplore.dashboard.command="streamlit run app/dashboard.py --server.address 0.0.0.0 --server.port 8501"

RUN useradd --create-home --uid 1000 --user-group --shell /usr/sbin/nologin app \
 && install -d -o app -g app /home/app/vqexplore

WORKDIR /home/app/vqexplore

# Dependencies first: this layer is rebuilt only when requirements.txt changes.
COPY requirements.txt .
# requirements.txt less its `-e .` line (the source is not copied yet; PYTHONPATH stands in for it).
RUN sed '/^-e /d' requirements.txt > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"}

# Owned by the runtime user: checkpoint writers may leave model.safetensors mode 0600, which
# a non-root user could not read if root owned it.
COPY --chown=1000:1000 . .

USER 1000:1000

EXPOSE 7860 8501

# Healthy when the demo (or, started with the dashboard command, Streamlit) answers.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as r\nfor url in ('http://127.0.0.1:' + os.environ.get('GRADIO_SERVER_PORT', '7860') + '/config',\n            'http://127.0.0.1:' + os.environ.get('STREAMLIT_SERVER_PORT', '8501') + '/_stcore/health'):\n    try:\n        r.urlopen(url, timeout=5)\n        sys.exit(0)\n    except OSError:\n        pass\nsys.exit(1)"]

CMD ["python", "app/gradio_app.py"]
