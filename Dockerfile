# rtcs: one node on the embedded default (in-memory backend).
# Build: docker build -t rtcs .   Run: docker run -p 8765:8765 -e RTCS_JWT_SECRET=... rtcs
FROM python:3.11-slim AS build
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY rtcs ./rtcs
COPY actors ./actors
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /srv/rtcs --create-home rtcs
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/* && rm -rf /wheels
COPY conf/rtcs.toml /etc/rtcs/rtcs.toml
USER rtcs
WORKDIR /srv/rtcs
# Listen on all interfaces inside the container: a secret is then required
# (RTCS_JWT_SECRET, at least 32 bytes for HS256), rtcs refuses to start without one.
ENV RTCS_SERVER_HOST=0.0.0.0 \
    PYTHONUNBUFFERED=1
EXPOSE 8765
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8765/healthz', timeout=2).status == 200 else 1)"
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "rtcs", "--config", "/etc/rtcs/rtcs.toml"]
