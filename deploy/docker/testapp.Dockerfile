# For the compose testbed only: the HTTP echo server used by the namespace testbed, plus curl
# for the clients.
FROM debian:bookworm-slim
RUN command -v python3 >/dev/null && command -v curl >/dev/null \
    || (apt-get update && apt-get install -y --no-install-recommends python3 curl \
        && rm -rf /var/lib/apt/lists/*)
COPY echo_server.py /usr/local/bin/echo_server.py
USER 1000:1000
ENTRYPOINT ["python3", "/usr/local/bin/echo_server.py"]
