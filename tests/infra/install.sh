#!/usr/bin/env bash
# Install what the integration tests need, on Debian, as root. Idempotent: skips
# whatever is already installed and runs `apt-get update` at most once.
#
#   slapd + ldap-utils  without the package's default database (no system slapd)
#   openssh-server      without starting a system sshd on :22
#   postgresql          without creating the default "main" cluster; an existing
#                       installation (even one running on 5432) is left alone
#   tmux, a C compiler, make  (the tests drive terminals; sqlx builds bundled SQLite; jemalloc)
#   python3             (an interpreter the evasion suite runs on the node)
#   chromium + chromium-driver (the web console's tests, headless, through WebDriver)
#   libssl-dev + pkg-config (the broker's passkey library, webauthn-rs, links OpenSSL)
#   schemathesis (PyPI, pinned) in its own venv /opt/sallyport-st (python3-venv): it scans
#                       the HTTP API from its OpenAPI document (tests/api_fuzz.rs)
#
# The tests start their own throwaway slapd/PostgreSQL/sshd instances on 127.0.0.1
# (see start-ldap.sh, start-postgres.sh, tests/support/sshd.rs).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need=()
{ [ -x /usr/sbin/slapd ] && [ -x /usr/bin/ldapsearch ] && command -v slappasswd >/dev/null; } ||
  need+=(slapd ldap-utils)
{ [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null && command -v ssh-keygen >/dev/null; } ||
  need+=(openssh-server openssh-client)
{ ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null; } ||
  need+=(postgresql postgresql-client)
command -v tmux >/dev/null || need+=(tmux)
# the HTTPS tests make a throwaway CA with the openssl CLI
command -v openssl >/dev/null || need+=(openssl)
command -v cc >/dev/null || need+=(gcc libc6-dev)
# the binary's allocator (jemalloc, tikv-jemalloc-sys) is built from C with its configure + make
command -v make >/dev/null || need+=(make)
command -v ss >/dev/null || need+=(iproute2)
# the evasion suite feeds Python code to python3 on the node's stdin
[ -x /usr/bin/python3 ] || need+=(python3)
# the clock-skew tests run an edge or a gateway with its clock moved (LD_PRELOAD libfaketime)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || need+=(libfaketime)
# the several-edges test puts HAProxy in front of two edges, as docs/deploy.md shows
command -v haproxy >/dev/null || need+=(haproxy)
# the console tests drive Debian's Chromium through chromedriver (WebDriver)
{ [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; } || need+=(chromium chromium-driver)
# building the broker: webauthn-rs (console passkeys) links OpenSSL through openssl-sys
{ command -v pkg-config >/dev/null && pkg-config --exists openssl; } || need+=(libssl-dev pkg-config)

# the API scan (tests/api_fuzz.rs): schemathesis from PyPI, in a venv of Debian's python3
ST_VERSION=4.32.5
ST_DIR=/opt/sallyport-st
st_ok() { [ -x "$ST_DIR/bin/st" ] && "$ST_DIR/bin/st" --version 2>/dev/null | grep -q "$ST_VERSION"; }
install_st() {
  st_ok && return 0
  echo "install.sh: installing schemathesis $ST_VERSION (PyPI) in $ST_DIR"
  rm -rf "$ST_DIR"
  /usr/bin/python3 -m venv "$ST_DIR"
  "$ST_DIR/bin/pip" install -q --disable-pip-version-check "schemathesis==$ST_VERSION"
  st_ok || { echo "install.sh: schemathesis did not install in $ST_DIR" >&2; exit 1; }
}
st_ok || /usr/bin/python3 -c "import ensurepip, venv" 2>/dev/null || need+=(python3-venv)

if [ ${#need[@]} -eq 0 ]; then
  install_st
  echo "install.sh: everything is already installed"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "install.sh: must run as root to install: ${need[*]}" >&2; exit 1; }
echo "install.sh: installing ${need[*]}"

# slapd: no_configuration=true -> postinst creates no dc=nodomain database and
# starts no system slapd.
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections

# postgresql-common: do not create (and start) the default "main" cluster. This
# only affects clusters created from now on; an existing cluster is untouched.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.d/00-sallyport-no-main.conf
fi

# policy-rc.d exiting 101 forbids maintainer scripts to start services, so
# openssh-server does not start an sshd on 0.0.0.0:22 (nor slapd/postgres theirs).
# Debian container images often ship one already; otherwise add ours for the
# duration of the install only.
TMP_POLICY=
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  TMP_POLICY=1
fi
cleanup() { if [ -n "$TMP_POLICY" ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${need[@]}" >/dev/null
install_st
echo "install.sh: done"
