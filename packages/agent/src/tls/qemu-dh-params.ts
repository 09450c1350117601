/**
 * The Diffie-Hellman group QEMU's TLS servers use (`dh-params.pem` in a
 * `tls-creds-x509` directory): RFC 7919's ffdhe2048, a published safe-prime
 * group (`openssl genpkey -genparam -algorithm DH -pkeyopt group:ffdhe2048`).
 *
 * Without the file QEMU generates fresh 2048-bit parameters at every
 * `object-add` of a server endpoint (`gnutls_dh_params_generate2`): a prime
 * search that took 215–1033 ms on the test machines, in the middle of a
 * migration's preparation. A standard group is what TLS 1.3 itself uses
 * (RFC 8446 names ffdhe2048); the ECDHE suites gnutls prefers do not use it.
 */
export const qemuDhParamsPem = `-----BEGIN DH PARAMETERS-----
MIIBCAKCAQEA//////////+t+FRYortKmq/cViAnPTzx2LnFg84tNpWp4TZBFGQz
+8yTnc4kmz75fS/jY2MMddj2gbICrsRhetPfHtXV/WVhJDP1H18GbtCFY2VVPe0a
87VXE15/V8k1mE8McODmi3fipona8+/och3xWKE2rec1MKzKT0g6eXq8CrGCsyT7
YdEIqUuyyOP7uWrat2DX9GgdT0Kj3jlN9K5W7edjcrsZCwenyO4KbXCeAvzhzffi
7MA0BM0oNC9hkXL+nOmFg/+OTxIy7vKBg8P+OxtMb61zO7X8vC7CIAXFjvGDfRaD
ssbzSibBsu/6iGtCOGEoXJf//////////wIBAg==
-----END DH PARAMETERS-----
`;
