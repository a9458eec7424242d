# One image for every Pitstop process of the scale-out topology (API servers, processors, the init
# step, Dask scheduler and workers): deploy/compose.yaml and the Helm chart run it with their commands.
#   docker build -t pitstop:latest .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# the platform's pinned, hash-checked dependencies first (requirements/lock.txt is pitstop[server]),
# a layer that survives code changes
COPY requirements/ requirements/
RUN pip install --no-cache-dir --require-hashes -r requirements/lock.txt

# Pitstop with the server and scale extras, its versions held to the dev lock (which pins the extras)
COPY pyproject.toml README.md LICENSE ./
COPY src/ src/
RUN pip install --no-cache-dir --no-build-isolation -c requirements/lock-dev.txt ".[server,scale]"

RUN useradd --create-home --uid 10001 pitstop && mkdir /data && chown pitstop /data
USER pitstop
ENV PITSTOP_DATA_DIR=/data PITSTOP_HOST=0.0.0.0
EXPOSE 8000
CMD ["pitstop", "serve", "--no-processor"]
