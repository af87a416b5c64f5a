# The init container: portcullis-init with iptables (nft and legacy) and iproute2. Runs as root
# with NET_ADMIN and NET_RAW, installs the capture rules, exits.
FROM debian:bookworm-slim
RUN command -v iptables-restore >/dev/null && command -v ip >/dev/null \
    || (apt-get update && apt-get install -y --no-install-recommends iptables iproute2 \
        && rm -rf /var/lib/apt/lists/*)
COPY portcullis-init /usr/local/bin/portcullis-init
ENTRYPOINT ["/usr/local/bin/portcullis-init"]
