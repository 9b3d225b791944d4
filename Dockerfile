# lockmaster workers (and CLI). Build: docker build -t lockmaster .
# The packaging tools: executors run package jobs on local slots (mmdebstrap makes their clean
# roots); the publisher role signs and publishes (reprepro, createrepo_c, gpg, rsync);
# apt-cacher-ng is the package cache (`lockmaster packaging serve-cache`, docker-compose's
# package-cache service).
FROM python:3.11-slim-bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends git openssh-client libvirt-dev pkg-config gcc \
    dpkg-dev debhelper fakeroot rpm lintian rpmlint reprepro createrepo-c gnupg dnf rsync \
    mmdebstrap apt-cacher-ng \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/lockmaster
COPY pyproject.toml README.md ./
COPY lockmaster ./lockmaster
RUN pip install --no-cache-dir .
ENV LOCKMASTER_CONFIG=/etc/lockmaster/lockmaster.yaml
ENTRYPOINT ["lockmaster"]
CMD ["worker", "all"]
