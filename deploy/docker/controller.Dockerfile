# The control plane: the controller binary and its shared libraries on an empty image, non-root.
FROM debian:bookworm-slim AS libs
COPY portcullis-controller /out/usr/local/bin/portcullis-controller
RUN ldd /out/usr/local/bin/portcullis-controller | grep -o '/[^ ]*' | sort -u \
    | xargs -I{} cp --parents -L {} /out/

FROM scratch
COPY --from=libs /out/ /
USER 65532:65532
EXPOSE 15012 15014
ENTRYPOINT ["/usr/local/bin/portcullis-controller"]
