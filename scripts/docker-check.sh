#!/usr/bin/env bash
# Build the Docker image for real and run it, on a machine that reaches only Debian's archive and
# PyPI (no Docker Hub, no ghcr.io). As root. Start to finish:
#
#   1. installs docker.io and mmdebstrap with apt if missing;
#   2. starts its own dockerd (own data root, exec root, pidfile and socket; no iptables, no
#      bridge) and stops it by its pid when the script ends, on failure too;
#   3. builds the base image local/bookworm with mmdebstrap (Debian bookworm minbase; the tar is
#      cached in the work folder, the image in the data root);
#   4. builds the image with the local recipe of the one Dockerfile
#      (BASE_IMAGE=local/bookworm, PYTHON_SOURCE=debian): install.sh and requirements.lock as for
#      every other install. pip gets this machine's CA bundle as a BuildKit secret for the
#      install step only, never into the image; proxy variables, if set, go in as build args;
#   5. checks the image: the user is uid 1000, `fairxray --help` works, `reproduce` with empty
#      mounts prints the one-message preflight and exits 2, and `demo` with --network none runs
#      the pipeline on the CPU and leaves the report, mlruns/ and metrics in the mounted /out,
#      readable by the host user;
#   6. prints one JSON object on stdout: image size, times (base build, image build, demo run),
#      and what it ran on. Everything else goes to stderr.
#
# `scripts/docker-check.sh --record` also writes the result to docs/docker-check.json and adds
# a row to the table in docs/docker.md (scripts/docker-check-if-changed.sh uses it in CI).
#
# Environment:
#   FAIRXRAY_DOCKER_DIR      work folder (data root, base tar, daemon state), kept between runs
#                            so a rerun reuses the layer cache; default /var/tmp/fairxray-docker
#   FAIRXRAY_DOCKER_FRESH=1  delete the work folder first: a cold build, as on a new machine
#   FAIRXRAY_DOCKER_STORAGE  storage driver, default overlay2 (vfs when overlay2 will not start)
#   FAIRXRAY_PIP_CERT        CA bundle for pip during the build; default $PIP_CERT, else
#                            /etc/ssl/certs/ca-certificates.crt when present
#   FAIRXRAY_DOCKER_IMAGE    tag to build, default fairxray:local-check
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

record=0
for arg in "$@"; do
  case "$arg" in
    --record) record=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker-check: unknown argument $arg (see --help)" >&2; exit 64 ;;
  esac
done

log() { echo "docker-check: $*" >&2; }
die() { log "FAILED: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || die "run as root (it starts its own dockerd)"

t_start="$(now)"
work="${FAIRXRAY_DOCKER_DIR:-/var/tmp/fairxray-docker}"
image="${FAIRXRAY_DOCKER_IMAGE:-fairxray:local-check}"
base_image=local/bookworm
if [ "${FAIRXRAY_DOCKER_FRESH:-0}" = 1 ] && [ -d "$work" ]; then
  log "FAIRXRAY_DOCKER_FRESH=1: removing $work"
  rm -rf "$work"
fi
mkdir -p "$work"

# --- 1. tools ---------------------------------------------------------------------------------
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} with apt"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
# The client shipped with that dockerd (docker.io's /usr/bin/docker): it runs BuildKit builds
# itself, where a newer client alone would want the buildx plugin.
docker_bin="${DOCKER:-}"
if [ -z "$docker_bin" ]; then
  if [ -x /usr/bin/docker ]; then docker_bin=/usr/bin/docker; else docker_bin="$(command -v docker)"; fi
fi
[ -x "$docker_bin" ] || die "no docker client found"

# --- 2. our own dockerd -----------------------------------------------------------------------
sock="$work/docker.sock"
pidfile="$work/dockerd.pid"
dockerd_pid=""
tmp=""
cleanup() {
  local rc=$?
  if [ -n "$dockerd_pid" ] && kill -0 "$dockerd_pid" 2>/dev/null; then
    log "stopping dockerd (pid $dockerd_pid)"
    kill "$dockerd_pid" 2>/dev/null || true
    for _ in $(seq 60); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      log "dockerd did not stop in 30 s; killing it"
      kill -9 "$dockerd_pid" 2>/dev/null || true
    fi
  fi
  [ -n "$tmp" ] && rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  die "a dockerd from an earlier run still holds $pidfile (pid $(cat "$pidfile")); stop it first"
fi

start_dockerd() {
  local driver="$1"
  rm -f "$sock" "$pidfile"
  dockerd --data-root "$work/root" --exec-root "$work/exec" --pidfile "$pidfile" \
    --host "unix://$sock" --storage-driver "$driver" --iptables=false --ip-masq=false \
    --bridge=none >>"$work/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 120); do
    if "$docker_bin" -H "unix://$sock" version >/dev/null 2>&1; then return 0; fi
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  kill "$dockerd_pid" 2>/dev/null || true
  wait "$dockerd_pid" 2>/dev/null || true
  dockerd_pid=""
  return 1
}
storage="${FAIRXRAY_DOCKER_STORAGE:-overlay2}"
log "starting dockerd (data root $work/root, storage $storage; log $work/dockerd.log)"
if ! start_dockerd "$storage"; then
  [ "$storage" != vfs ] || die "dockerd did not start; see $work/dockerd.log"
  log "dockerd did not start with $storage; trying vfs (slower, no layer sharing)"
  storage=vfs
  start_dockerd vfs || die "dockerd did not start; see $work/dockerd.log"
fi
docker() { "$docker_bin" -H "unix://$sock" "$@"; }
server_version="$(docker version -f '{{.Server.Version}}')"

# --- 3. base image ----------------------------------------------------------------------------
base_tar="$work/bookworm-minbase.tar"
base_cached=true
t0="$(now)"
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
  if [ ! -s "$base_tar" ]; then
    base_cached=false
    log "building $base_image with mmdebstrap (bookworm minbase, with -updates and -security)"
    mmdebstrap --variant=minbase bookworm "$base_tar.tmp.tar" \
      "deb http://deb.debian.org/debian bookworm main" \
      "deb http://deb.debian.org/debian bookworm-updates main" \
      "deb http://deb.debian.org/debian-security bookworm-security main" >&2
    mv "$base_tar.tmp.tar" "$base_tar"
  else
    log "importing the cached $base_tar"
  fi
  docker import "$base_tar" "$base_image" >&2
fi
base_s="$(since "$t0")"

# --- 4. the image, local recipe ---------------------------------------------------------------
cert="${FAIRXRAY_PIP_CERT:-${PIP_CERT:-}}"
[ -n "$cert" ] || { [ ! -s /etc/ssl/certs/ca-certificates.crt ] || cert=/etc/ssl/certs/ca-certificates.crt; }
build_args=(--build-arg BASE_IMAGE="$base_image" --build-arg PYTHON_SOURCE=debian)
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
dirty=false
[ -z "$(git status --porcelain 2>/dev/null)" ] || dirty=true
build_args+=(--build-arg GIT_SHA="$commit")
secret=()
if [ -n "$cert" ]; then
  log "handing pip the CA bundle $cert as a build secret (install step only)"
  secret=(--secret "id=pip-cert,src=$cert")
fi
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  # Docker's predefined proxy build args: used by RUN, kept out of the image's history.
  if [ -n "${!v:-}" ]; then build_args+=(--build-arg "$v=${!v}"); fi
done
rx() { awk -F'[: ]+' 'NR > 2 && $2 != "lo" { s += $3 } END { printf "%.0f", s }' /proc/net/dev; }
rx0="$(rx)"
log "building $image (BASE_IMAGE=$base_image PYTHON_SOURCE=debian, commit ${commit:0:12}, dirty=$dirty)"
t0="$(now)"
DOCKER_BUILDKIT=1 docker build --progress=plain --network host "${build_args[@]}" "${secret[@]}" \
  -t "$image" . >&2 || die "docker build failed"
build_s="$(since "$t0")"
rx_build=$(($(rx) - rx0))
size="$(docker image inspect -f '{{.Size}}' "$image")"
log "built $image: $((size / 1000000)) MB in $build_s s"

# --- 5. checks --------------------------------------------------------------------------------
tmp="$(mktemp -d "$work/run.XXXXXX")"
run() { docker run --rm --network none "$@"; }

uid="$(run --entrypoint id "$image" -u)"
[ "$uid" = 1000 ] || die "the container user is uid $uid, not 1000"
run "$image" --help >/dev/null || die "fairxray --help failed in the container"
log "user uid $uid; fairxray --help works"

# reproduce with empty mounts: every problem in one message, exit 2, before any work.
mkdir -p "$tmp/nih" "$tmp/weights" "$tmp/pre-out"
chown 1000:1000 "$tmp/pre-out"
set +e
pre="$(run -v "$tmp/nih:/data/nih:ro" -v "$tmp/weights:/weights:ro" -v "$tmp/pre-out:/out" \
  "$image" reproduce 2>&1)"
pre_rc=$?
set -e
printf '%s\n' "$pre" | sed 's/^/  | /' >&2
[ "$pre_rc" = 2 ] || die "reproduce with empty mounts exited $pre_rc, not 2"
n="$(printf '%s\n' "$pre" | grep -c 'problem(s) found before any work was started' || true)"
[ "$n" = 1 ] || die "reproduce printed $n preflight messages, not one"
[ -z "$(ls -A "$tmp/pre-out")" ] || die "reproduce wrote to /out although the preflight failed"
log "reproduce preflight: one message, exit 2, nothing written"

# The demo on the CPU, no network, into a mounted /out.
mkdir -p "$tmp/out"
chown 1000:1000 "$tmp/out"
log "running the demo in the container (--network none, CPU)"
t0="$(now)"
run -v "$tmp/out:/out" "$image" demo >&2 || die "the demo failed in the container"
demo_s="$(since "$t0")"
for want in reports/report.html reports/report.md mlruns/mlflow.db; do
  [ -s "$tmp/out/$want" ] || die "the demo left no $want in /out"
done
metrics_files="$(find "$tmp/out/metrics" -name metrics.json | wc -l)"
[ "$metrics_files" -gt 0 ] || die "the demo left no metrics/**/metrics.json in /out"
unreadable="$(find "$tmp/out" ! -perm -o=r | head -5)"
[ -z "$unreadable" ] || die "files in /out that other users cannot read: $unreadable"
owner="$(stat -c %u "$tmp/out/reports/report.html")"
[ "$owner" = 1000 ] || die "report.html belongs to uid $owner, not 1000"
out_files="$(find "$tmp/out" -type f | wc -l)"
log "demo: $demo_s s; $out_files files in /out ($metrics_files metrics.json), all readable"

# --- 6. result --------------------------------------------------------------------------------
root_bytes="$(du -sb "$work/root" | cut -f1)"
json="$(
  R_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" R_COMMIT="$commit" R_DIRTY="$dirty" R_IMAGE="$image" \
  R_RECIPE="BASE_IMAGE=$base_image PYTHON_SOURCE=debian" R_SIZE="$size" R_BASE_CACHED="$base_cached" \
  R_BASE_S="$base_s" R_BUILD_S="$build_s" R_DEMO_S="$demo_s" R_RX="$rx_build" R_ROOT="$work/root" \
  R_ROOT_BYTES="$root_bytes" R_STORAGE="$storage" R_SERVER="$server_version" R_CPUS="$(nproc)" \
  R_TOTAL_S="$(since "$t_start")" R_UID="$uid" R_PRE_RC="$pre_rc" R_METRICS="$metrics_files" R_FILES="$out_files" \
  python3 -c '
import json, os
e = os.environ
size = int(e["R_SIZE"])
print(json.dumps({
    "date": e["R_DATE"],
    "commit": e["R_COMMIT"],
    "dirty": e["R_DIRTY"] == "true",
    "recipe": e["R_RECIPE"],
    "image": e["R_IMAGE"],
    "image_size_bytes": size,
    "image_size_gb": round(size / 1e9, 2),
    "base_cached": e["R_BASE_CACHED"] == "true",
    "base_build_s": float(e["R_BASE_S"]),
    "image_build_s": float(e["R_BUILD_S"]),
    "demo_run_s": float(e["R_DEMO_S"]),
    "total_s": float(e["R_TOTAL_S"]),
    "host_rx_bytes_during_build": int(e["R_RX"]),
    "data_root": e["R_ROOT"],
    "data_root_bytes": int(e["R_ROOT_BYTES"]),
    "storage_driver": e["R_STORAGE"],
    "docker_server": e["R_SERVER"],
    "cpus": int(e["R_CPUS"]),
    "checks": {
        "uid": int(e["R_UID"]),
        "help": True,
        "reproduce_preflight_exit": int(e["R_PRE_RC"]),
        "demo_metrics_json": int(e["R_METRICS"]),
        "demo_out_files": int(e["R_FILES"]),
    },
}, indent=2))'
)"
echo "$json"
if [ "$record" = 1 ]; then
  printf '%s\n' "$json" > "$tmp/result.json"
  python3 scripts/docker-check-record.py "$tmp/result.json" docs/docker-check.json docs/docker.md >&2
fi
