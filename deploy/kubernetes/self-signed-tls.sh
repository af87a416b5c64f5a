#!/usr/bin/env bash
# Without cert-manager: makes a CA and the controller's serving certificate with openssl, stores
# them as Secret portcullis-controller-tls (with the CA as ca.crt) and writes the CA into the
# caBundle of both webhook configurations (injection and policy validation, both served by the
# controller). One certificate serves the sidecar API (15012) and the webhooks (8443).
# It also makes the mesh CA's root once (Secret portcullis-mesh-ca; never replaced by a later
# run: delete the Secret to rotate it, and the controller keeps trusting the old root for one
# workload-certificate lifetime).
# Run after `kubectl apply -k deploy/kubernetes`. Renew by running it again.
set -euo pipefail
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=portcullis-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
# serve NAME SECRET: a certificate for NAME.portcullis-system.svc signed by the CA, as SECRET.
serve() {
  local svc=$1.portcullis-system.svc
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$svc" \
    -keyout "$dir/$1.key" -out "$dir/$1.csr" 2>/dev/null
  printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\n' "$svc" "$svc" > "$dir/$1.ext"
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 365 -extfile "$dir/$1.ext" -out "$dir/$1.crt" 2>/dev/null
  kubectl -n portcullis-system create secret generic "$2" --type=kubernetes.io/tls \
    --from-file=tls.crt="$dir/$1.crt" --from-file=tls.key="$dir/$1.key" \
    --from-file=ca.crt="$dir/ca.crt" --dry-run=client -o yaml | kubectl apply -f -
}
serve portcullis-controller portcullis-controller-tls
ca=$(base64 -w0 < "$dir/ca.crt")
# cabundle KIND NAME: the CA into every webhook of that configuration.
cabundle() {
  local n i
  n=$(kubectl get "$1" "$2" -o jsonpath='{range .webhooks[*]}x{end}')
  for ((i = 0; i < ${#n}; i++)); do
    kubectl patch "$1" "$2" --type=json \
      -p "[{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$ca\"}]"
  done
}
cabundle mutatingwebhookconfiguration portcullis-injector
cabundle validatingwebhookconfiguration portcullis-policy-validation

# The mesh CA root, made once and stored.
if ! kubectl -n portcullis-system get secret portcullis-mesh-ca >/dev/null 2>&1; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=portcullis-mesh-ca" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/mesh-ca.key" -out "$dir/mesh-ca.crt" 2>/dev/null
  kubectl -n portcullis-system create secret tls portcullis-mesh-ca \
    --cert="$dir/mesh-ca.crt" --key="$dir/mesh-ca.key"
fi
