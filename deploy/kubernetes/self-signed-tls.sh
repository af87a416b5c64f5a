#!/usr/bin/env bash
# Without cert-manager: makes a CA and the injector's serving certificate with openssl, stores
# them as Secret portcullis-injector-tls and writes the CA into the webhook's caBundle.
# Run after `kubectl apply -k deploy/kubernetes`. Renew by running it again.
set -euo pipefail
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
svc=portcullis-injector.portcullis-system.svc
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj "/CN=portcullis-injector-ca" -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$svc" \
  -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.cluster.local\n' "$svc" "$svc" > "$dir/ext"
openssl x509 -req -in "$dir/tls.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 365 -extfile "$dir/ext" -out "$dir/tls.crt" 2>/dev/null
kubectl -n portcullis-system create secret tls portcullis-injector-tls \
  --cert "$dir/tls.crt" --key "$dir/tls.key" --dry-run=client -o yaml | kubectl apply -f -
ca=$(base64 -w0 < "$dir/ca.crt")
for i in 0 1; do
  kubectl patch mutatingwebhookconfiguration portcullis-injector --type=json \
    -p "[{\"op\":\"add\",\"path\":\"/webhooks/$i/clientConfig/caBundle\",\"value\":\"$ca\"}]"
done
