# The admission webhook: the injector binary and its shared libraries on an empty image,
# non-root.
FROM debian:bookworm-slim AS libs
COPY portcullis-injector /out/usr/local/bin/portcullis-injector
RUN ldd /out/usr/local/bin/portcullis-injector | grep -o '/[^ ]*' | sort -u \
    | xargs -I{} cp --parents -L {} /out/

FROM scratch
COPY --from=libs /out/ /
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/portcullis-injector"]
