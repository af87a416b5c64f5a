# The sidecar: the proxy binary and the few shared libraries it links, on an empty image.
# Runs as UID/GID 1337 (excluded from capture by portcullis-init). Build context: see build.sh.
# The binary carries cap_net_admin,cap_net_raw+p for TPROXY capture (see below).
FROM debian:bookworm-slim AS libs
COPY portcullis-proxy /out/usr/local/bin/portcullis-proxy
RUN ldd /out/usr/local/bin/portcullis-proxy | grep -o '/[^ ]*' | sort -u \
    | xargs -I{} cp --parents -L {} /out/
# TPROXY capture needs CAP_NET_ADMIN, which UID 1337 gets only from a file capability. Permitted
# only (no effective bit): the binary still starts in containers that drop every capability,
# and raises it itself in tproxy mode.
RUN setcap cap_net_admin,cap_net_raw+p /out/usr/local/bin/portcullis-proxy

FROM scratch
COPY --from=libs /out/ /
USER 1337:1337
EXPOSE 15001 15006 15020
ENTRYPOINT ["/usr/local/bin/portcullis-proxy"]
CMD ["run", "--policy", "/etc/portcullis/policy"]
