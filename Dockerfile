# One image for the API, the worker, the serving process and the `sightline` command (the compose
# `migrate` job); the command picks the role.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml requirements.lock README.md ./
COPY infra infra
COPY workflows workflows
COPY activities activities
COPY workers workers
COPY vision vision
COPY serving serving
COPY api api
COPY cli cli
# The data dir (Ray's temp files, caches) belongs to the unprivileged user the processes run as. Secrets
# never enter the image: they come from the environment at run time (.env, see .env.example).
RUN pip install --no-cache-dir -c requirements.lock . && useradd --create-home sightline \
    && mkdir -p /data && chown sightline:sightline /data
USER sightline
