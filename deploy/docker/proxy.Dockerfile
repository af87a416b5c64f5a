# The sidecar: the proxy binary and the few shared libraries it links, on an empty image.
# Runs as UID/GID 1337 (excluded from capture by portcullis-init). Build context: see build.sh.
FROM debian:bookworm-slim AS libs
COPY portcullis-proxy /out/usr/local/bin/portcullis-proxy
RUN ldd /out/usr/local/bin/portcullis-proxy | grep -o '/[^ ]*' | sort -u \
    | xargs -I{} cp --parents -L {} /out/

FROM scratch
COPY --from=libs /out/ /
USER 1337:1337
EXPOSE 15001 15006 15020
ENTRYPOINT ["/usr/local/bin/portcullis-proxy"]
CMD ["run", "--policy", "/etc/portcullis/policy"]
