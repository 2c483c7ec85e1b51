# The suite as an image, for teams that run the checks in-cluster (see deploy/kubernetes/).
# The image runs pytest; arguments are pytest's, e.g. --review today --fail-on P1.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /suite
COPY pyproject.toml README.md conftest.py ./
COPY src ./src
COPY checks ./checks
COPY fixtures ./fixtures
# PostgreSQL's binaries: pg_restore --list reads Friday's backups, and the restore drill restores the
# newest one into a scratch server here (initdb, pg_ctl). Their version must be at least the dumps'.
RUN apt-get update && apt-get install -y --no-install-recommends postgresql \
    && rm -rf /var/lib/apt/lists/*
# Bytecode compiled at build time: the image runs with PYTHONDONTWRITEBYTECODE=1, so nothing is compiled
# (or, with --assert=plain, rewritten) on each run.
RUN python -m pip install . && python -m compileall -q checks conftest.py \
    && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin checks \
    && mkdir -p reports && chown checks reports

USER 10001
# In a cluster there is no sandbox: name the environment (ACGS_ENV or --env), as CI must.
ENV CI=true
ENTRYPOINT ["python", "-m", "pytest", "-p", "no:cacheprovider"]
CMD ["--review", "today", "--fail-on", "P1"]
