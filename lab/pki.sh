#!/usr/bin/env bash
# lab/pki.sh DIR [ORG [SAN]]: a throwaway PKI in QEMU's x509 layout, made
# with openssl as docs/security.md shows: ca-cert.pem (+ ca-key.pem),
# server-cert.pem/server-key.pem for SAN (default IP:127.0.0.1,DNS:localhost),
# client-cert.pem/client-key.pem with subject O=ORG,CN=source.  Prints the
# client certificate's DN as QEMU compares it (tls.source-dn).  For tests,
# benchmarks and the lab: the keys are not protected and the certificates
# last PKI_DAYS days (default 2).
set -eu
d=$1 org=${2:-kawarimi-test} san=${3:-IP:127.0.0.1,DNS:localhost} days=${PKI_DAYS:-2}
mkdir -p "$d"
cd "$d"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
# sign NAME SUBJECT EXTENSION...: a key and a certificate signed by the CA.
sign() {
	local name=$1 subj=$2
	shift 2
	key "$name-key.pem"
	openssl req -new -key "$name-key.pem" -subj "$subj" -out "$name.csr"
	printf '%s\n' "basicConstraints=critical,CA:FALSE" \
		"keyUsage=critical,digitalSignature,keyEncipherment" "$@" >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
		-days "$days" -extfile "$name.ext" -out "$name-cert.pem"
	rm "$name.csr" "$name.ext"
}
{
	key ca-key.pem
	openssl req -new -x509 -key ca-key.pem -out ca-cert.pem -days "$days" \
		-subj "/O=$org/CN=$org CA" -addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign"
	sign server "/O=$org/CN=destination" "extendedKeyUsage=serverAuth" "subjectAltName=$san"
	sign client "/O=$org/CN=source" "extendedKeyUsage=clientAuth"
} >pki.log 2>&1 || { cat pki.log >&2; exit 1; }
openssl x509 -noout -subject -nameopt esc_2253,sep_comma_plus -in client-cert.pem |
	sed 's/^subject=//'
