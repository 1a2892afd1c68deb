#!/usr/bin/env bash
# Start a throwaway slapd for the tests, with its own config and data in RUNDIR.
#
# Usage: start-ldap.sh RUNDIR        (stop and remove: stop-ldap.sh RUNDIR;
#                                     stop/start keeping data: ldap-ctl.sh stop|start RUNDIR)
# Env:   LDAP_PORT (3890)  LDAPS_PORT (3891)  LDAP_SEED (tests/infra/ldap/seed.ldif)
#        LDAP_ADMIN_PW (admin-pw)
#
# Listens on ldap://127.0.0.1:$LDAP_PORT (plain, and StartTLS) and
# ldaps://127.0.0.1:$LDAPS_PORT only, suffix dc=example,dc=com, memberof overlay on
# groupOfNames/member. Writes RUNDIR/env (shell syntax) describing it.
#
# TLS: a throwaway CA made here with openssl (RUNDIR/tls/ca.pem) signs slapd's
# certificate, which names IP:127.0.0.1 only (so "localhost", which resolves to the same
# server, is a host name the certificate is NOT for). RUNDIR/tls/other-ca.pem is a second
# CA that signed nothing slapd serves (the "wrong CA").
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

[ $# -eq 1 ] || die "usage: $0 RUNDIR"
D=$1
PORT=${LDAP_PORT:-3890}
TLS_PORT=${LDAPS_PORT:-3891}
SUFFIX=dc=example,dc=com
ADMIN_DN="cn=admin,$SUFFIX"
ADMIN_PW=${LDAP_ADMIN_PW:-admin-pw}
SERVICE_DN="cn=sallyport,ou=services,$SUFFIX"
SEED=${LDAP_SEED:-$HERE/ldap/seed.ldif}
URI="ldap://127.0.0.1:$PORT"
TLS_URI="ldaps://127.0.0.1:$TLS_PORT"

[ -x /usr/sbin/slapd ] || die "slapd is not installed (run tests/infra/install.sh)"
command -v openssl >/dev/null || die "openssl is not installed (run tests/infra/install.sh)"
[ -e "$D/slapd.conf" ] && die "$D already holds a slapd; use ldap-ctl.sh start $D, or stop-ldap.sh $D first"
mkdir -p "$D/data" "$D/tls"
D=$(cd "$D" && pwd)

# openssl_q ARGS...: run openssl quietly in $D/tls; show its output only when it fails.
openssl_q() {
  local out
  out=$(cd "$D/tls" && openssl "$@" </dev/null 2>&1) || { echo "$out" >&2; die "openssl $1 failed"; }
}
for ca in ca other-ca; do
  openssl_q req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$ca.key" -out "$ca.pem" -days 2 -subj "/CN=sallyport test LDAP $ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
done
openssl_q req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -keyout server.key -out server.csr -subj "/CN=127.0.0.1"
cat >"$D/tls/server.ext" <<EXT
subjectAltName = IP:127.0.0.1
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
EXT
openssl_q x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out server.pem -days 2 -extfile server.ext
chmod 600 "$D/tls/"*.key

cat >"$D/slapd.conf" <<CONF
include   /etc/ldap/schema/core.schema
include   /etc/ldap/schema/cosine.schema
include   /etc/ldap/schema/nis.schema
include   /etc/ldap/schema/inetorgperson.schema
pidfile   $D/slapd.pid
argsfile  $D/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof

database  mdb
maxsize   67108864
suffix    "$SUFFIX"
rootdn    "$ADMIN_DN"
rootpw    $(slappasswd -s "$ADMIN_PW")
directory $D/data
index     objectClass,uid,cn,member,memberOf eq

TLSCACertificateFile  $D/tls/ca.pem
TLSCertificateFile    $D/tls/server.pem
TLSCertificateKeyFile $D/tls/server.key

# The root DSE and the schema are public (readiness probes, client discovery).
access to dn.base="" by * read
access to dn.base="cn=Subschema" by * read
# Passwords: only usable to bind.
access to attrs=userPassword
  by anonymous auth
  by * none
# Everything else: the service account and any bound user may read; anonymous nothing.
access to dn.subtree="$SUFFIX"
  by dn.exact="$SERVICE_DN" read
  by users read
  by * none

overlay memberof
memberof-group-oc    groupOfNames
memberof-member-ad   member
memberof-memberof-ad memberOf
memberof-refint      TRUE
CONF

cat >"$D/env" <<ENV
LDAP_PORT=$PORT
LDAP_URI=$URI
LDAPS_PORT=$TLS_PORT
LDAPS_URI=$TLS_URI
LDAP_TLS_CA=$D/tls/ca.pem
LDAP_TLS_OTHER_CA=$D/tls/other-ca.pem
LDAP_BASE=$SUFFIX
LDAP_ADMIN_DN=$ADMIN_DN
LDAP_ADMIN_PW=$ADMIN_PW
LDAP_SERVICE_DN=$SERVICE_DN
LDAP_SERVICE_PW=svc-pw
LDAP_DIR=$D
ENV

slaptest -Q -u -f "$D/slapd.conf" || die "slapd.conf in $D does not parse"
"$HERE/ldap-ctl.sh" start "$D"

# Load the seed through the server (not slapadd) so the memberof overlay fills
# memberOf. Plain-text userPassword values are hashed first.
if [ -n "$SEED" ]; then
  [ -f "$SEED" ] || die "seed $SEED not found"
  while IFS= read -r line || [ -n "$line" ]; do
    case $line in
      "userPassword: {"*) printf '%s\n' "$line" ;;
      "userPassword: "*) printf 'userPassword: %s\n' "$(slappasswd -s "${line#userPassword: }")" ;;
      *) printf '%s\n' "$line" ;;
    esac
  done <"$SEED" >"$D/seed.ldif"
  ldapadd -x -H "$URI" -D "$ADMIN_DN" -w "$ADMIN_PW" -f "$D/seed.ldif" >"$D/seed.log" 2>&1 ||
    { cat "$D/seed.log" >&2; die "loading $SEED failed"; }
fi
echo "$D"
