# Image for every APS process (worker, executors, archiver, CLI). Build: docker build -t aps .
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/aps
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
COPY infra ./infra
# editable install keeps schemas/ and infra/ next to the package, where APS looks for them
RUN pip install --no-cache-dir -e .
VOLUME ["/data"]
ENV APS_DATA_DIR=/data
ENTRYPOINT ["aps"]
CMD ["--help"]
