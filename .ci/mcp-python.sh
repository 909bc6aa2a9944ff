#!/usr/bin/env bash
# The official MCP Python SDK against `crafting-table mcp` (stdio), which talks to a
# real `serve` on loopback: a stock client not written here.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/debug/crafting-table"
[ -x "$bin" ] || (cd "$root" && cargo build --locked)
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
git init -q -b main "$work/repo"
mkdir -p "$work/repo/src" "$work/registry"
echo "let x: number = 'one';" > "$work/repo/src/a.ts"
git -C "$work/repo" add -A
git -C "$work/repo" -c user.name=ci -c user.email=ci@example.com commit -qm one
cat > "$work/registry/app.yaml" <<YAML
apiVersion: crafting-table/v1
kind: Project
metadata:
  name: app
spec:
  git_url: $work/repo
  subprojects:
    - path: .
      language: typescript
      test: 'echo all good'
      lint: "echo \"src/a.ts(1,5): error TS2322: Type 'string' is not assignable to type 'number'.\"; exit 2"
YAML
CRAFTING_DATA_DIR="$work/data" CRAFTING_REGISTRY="$work/registry" CRAFTING_BIND="127.0.0.1:$port" \
  "$bin" serve >"$work/serve.out" 2>"$work/serve.err" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do grep -q "try       curl" "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
admin=$(cat "$work/data/admin-bearer.txt")
team=$(curl -sf "http://127.0.0.1:$port/admin/tokens" -H "Authorization: Bearer $admin" \
  -H 'content-type: application/json' -d '{"name":"team","is_admin":false,"ip_cidrs":[]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["bearer"])')
python3 "$root/.ci/mcp_client.py" "$bin" "http://127.0.0.1:$port" "$admin" "$team"
