#!/usr/bin/env bash
# Builds the images offline from the local base (base.sh) and binaries built on this host:
#   portcullis/proxy:dev  portcullis/init:dev  portcullis/injector:dev  portcullis/controller:dev
#   portcullis/testapp:dev
# Usage: deploy/docker/build.sh [debug|release]   (default: debug, what the tests build)
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-debug}
flag=(); [ "$profile" = release ] && flag=(--release)
# Tests run this while cargo already holds the build: they have built the binaries and set
# PORTCULLIS_SKIP_BUILD=1.
if [ "${PORTCULLIS_SKIP_BUILD:-0}" != 1 ]; then
  cargo build "${flag[@]}" -p portcullis-proxy -p portcullis-init -p portcullis-injector \
    -p portcullis-controller --bins
fi
for bin in portcullis-proxy portcullis-init portcullis-injector portcullis-controller; do
  [ -x "target/$profile/$bin" ] || { echo "target/$profile/$bin is missing: build it first" >&2; exit 1; }
done
deploy/docker/base.sh
ctx=$(mktemp -d /tmp/portcullis-images.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
cp target/"$profile"/portcullis-proxy target/"$profile"/portcullis-init \
   target/"$profile"/portcullis-injector target/"$profile"/portcullis-controller \
   tests/testbed/echo_server.py deploy/docker/*.Dockerfile "$ctx"/
for image in proxy init injector controller testapp; do
  DOCKER_BUILDKIT=0 docker build -q -f "$ctx/$image.Dockerfile" -t "portcullis/$image:dev" "$ctx" >/dev/null
  echo "built portcullis/$image:dev"
done
