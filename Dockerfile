# lockmaster workers (and CLI). Build: docker build -t lockmaster .
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client libvirt-dev pkg-config gcc \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/lockmaster
COPY pyproject.toml README.md ./
COPY lockmaster ./lockmaster
RUN pip install --no-cache-dir .
ENV LOCKMASTER_CONFIG=/etc/lockmaster/lockmaster.yaml
ENTRYPOINT ["lockmaster"]
CMD ["worker", "all"]
