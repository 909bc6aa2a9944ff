#!/usr/bin/env bash
# Runs the README's quickstart commands as written, in a fresh clone of this
# repository: `serve` with no configuration (the debug build, already made by the
# tests, stands in for `cargo run --release`), then the second terminal's block
# exactly as the README prints it, then the "Your own projects" block with its
# example Gitea URL replaced by a local path (tests never reach beyond loopback).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/debug/crafting-table"
[ -x "$bin" ] || (cd "$root" && cargo build --locked)
work=$(mktemp -d)
git clone -q "$root" "$work/crafting-table"
cd "$work/crafting-table"
git checkout -q -B main

# The n-th ```sh block after a heading of README.md.
block() {
  awk -v head="$1" -v n="$2" '
    $0 == head { on = 1; next }
    on && /^## / { exit }
    on && /^```sh$/ { k++; if (k == n) { grab = 1; next } }
    grab && /^```$/ { exit }
    grab { print }
  ' README.md
}

"$bin" serve >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
# The API answers at once; the banner follows the first reconcile, as a user sees it.
for _ in $(seq 1 200); do curl -sf http://127.0.0.1:8810/healthz >/dev/null && break; sleep 0.1; done
for _ in $(seq 1 100); do grep -q "try       curl" "$work/serve.out" && break; sleep 0.1; done
grep -q "try       curl" "$work/serve.out"
grep -q "registry .*applied" "$work/serve.out"
# The quickstart runs with the default job sandbox, as a user gets it.
grep -q "sandbox   bwrap" "$work/serve.out"

echo "-- quickstart, second terminal"
block "## Quickstart: from a fresh clone to findings" 1 >"$work/second.sh"
[ -s "$work/second.sh" ] || { echo "quickstart block not found in README.md"; exit 1; }
bash -euo pipefail "$work/second.sh" >"$work/second.out"
status=$(grep -m1 -E '^"(succeeded|failed)"' "$work/second.out" || true)
count=$(sed -n '2p' <(grep -A1 -E '^"(succeeded|failed)"' "$work/second.out"))
echo "job status $status, findings $count"
[ "$status" = '"succeeded"' ] && [ "${count:-0}" -gt 0 ]
# The pages the README points at: log in with the bearer, the farm grid lists the
# project with its lint result.
grep -q "pages     http://127.0.0.1:8810/ui/" "$work/serve.out"
cookie=$(curl -s -o /dev/null -D - --data-urlencode "token=$(cat data/admin-bearer.txt)" http://127.0.0.1:8810/ui/login \
  | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: \(ct_session=[^;]*\).*/\1/p')
farm_page=$(curl -sf -H "Cookie: $cookie" http://127.0.0.1:8810/ui/)
grep -q 'data-project="crafting-table"' <<<"$farm_page"
echo "the farm page lists crafting-table"
python3 -c 'import json,sys; d=json.load(open("lint.sarif")); n=sum(len(r["results"]) for r in d["runs"]); assert n > 0; print(f"lint.sarif: {n} results")'

echo "-- your own projects"
block "### Your own projects" 1 | sed "s#https://gitea.lan/team-a/webapp.git#$work/crafting-table#" >"$work/own.sh"
[ -s "$work/own.sh" ] || { echo "'Your own projects' block not found in README.md"; exit 1; }
B=$(cat data/admin-bearer.txt) bash -euo pipefail "$work/own.sh" | tee "$work/own.out" | tail -c 300
grep -q '"job_id"' "$work/own.out"
echo "quickstart commands ran as written"
