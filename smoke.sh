#!/usr/bin/env bash
# smoke.sh: one hello-world per toolchain of the crafting-table image.
#
#   smoke.sh                      every toolchain
#   smoke.sh --only python,node   just these
#   smoke.sh --skip bun,swift     all but these (for the reduced image)
#   smoke.sh --list               the toolchain names
#
# Each toolchain compiles and runs a hello-world, or runs its tools on a one-line
# input, in a scratch directory, and checks that its companion tools answer. One line
# per toolchain with its version; `=== ALL TOOLCHAINS GREEN ===` only when every
# selected one passed, otherwise the failing ones are named (with the end of their
# output) and the exit code is 1. Bad arguments exit 2. Nothing here needs the
# network.

# The checks (t_*) are called by name; the sources they write use $ literally.
# shellcheck disable=SC2317,SC2016
set -uo pipefail

TOOLCHAINS=(python node bun go rust ruby bundler-audit php phpstan java java21 maven
  gradle kotlin dotnet swift c bash tools)
# The ones the reduced image leaves out (they come from upstream archives).
UPSTREAM="bun,go,rust,bundler-audit,phpstan,java21,gradle,kotlin,dotnet,swift"

usage() {
  cat <<EOF
usage: smoke.sh [--only LIST | --skip LIST] [--list]
  LIST: comma-separated toolchain names:
        ${TOOLCHAINS[*]}
  the reduced image has no: $UPSTREAM
EOF
}

only="" skip=""
while [ $# -gt 0 ]; do
  case "$1" in
    --only) only="${2:-}"; shift 2 || { usage >&2; exit 2; } ;;
    --only=*) only="${1#*=}"; shift ;;
    --skip) skip="${2:-}"; shift 2 || { usage >&2; exit 2; } ;;
    --skip=*) skip="${1#*=}"; shift ;;
    --list) printf '%s\n' "${TOOLCHAINS[@]}"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "smoke.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

known() { local t; for t in "${TOOLCHAINS[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
in_list() { case ",$2," in *",$1,"*) return 0 ;; esac; return 1; }
for name in ${only//,/ } ${skip//,/ }; do
  known "$name" || { echo "smoke.sh: unknown toolchain: $name" >&2; usage >&2; exit 2; }
done

# --- helpers used by the checks (each check runs in a subshell, in its own dir) ---
# need CMD...: fail naming every missing command.
need() {
  local missing="" c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=" $c"; done
  [ -z "$missing" ] || { echo "missing:$missing"; return 1; }
}
# expect WANT CMD...: run CMD, its output must be exactly WANT.
expect() {
  local want="$1" got
  shift
  got=$("$@") || { echo "failed: $*"; return 1; }
  [ "$got" = "$want" ] || { echo "$*: printed '$got', expected '$want'"; return 1; }
}
# version TEXT: the line printed for a passing toolchain.
version() { printf '%s' "$*" >"$SMOKE_DIR/.version"; }
first() { "$@" 2>&1 | head -n 1; }

t_python() {
  need python3 uv uvx pipx pip-audit ruff mypy pytest semgrep || return 1
  printf 'def greet(name: str) -> str:\n    return f"hello, {name}"\n\n\nif __name__ == "__main__":\n    print(greet("python"))\n' >hello.py
  printf 'from hello import greet\n\n\ndef test_greet() -> None:\n    assert greet("x") == "hello, x"\n' >test_hello.py
  expect "hello, python" python3 hello.py || return 1
  ruff check --no-cache -q hello.py test_hello.py || return 1
  mypy --strict --cache-dir=/dev/null hello.py || return 1
  pytest -q -p no:cacheprovider test_hello.py || return 1
  printf 'rules:\n  - id: no-print\n    pattern: print(...)\n    message: print\n    languages: [python]\n    severity: INFO\n' >rule.yml
  semgrep scan --metrics=off --disable-version-check --quiet --json --config rule.yml hello.py >semgrep.json || return 1
  grep -q '"check_id"' semgrep.json || { echo "semgrep found nothing"; return 1; }
  pipx --version && pip-audit --version || return 1
  version "$(python3 --version), $(uv --version), ruff $(ruff --version | cut -d' ' -f2), mypy $(mypy --version | cut -d' ' -f2), pytest $(pytest --version 2>&1 | cut -d' ' -f2), semgrep $(semgrep --version 2>/dev/null | tail -n 1)"
}

t_node() {
  need node npm npx pnpm tsx tsc eslint || return 1
  echo 'console.log("hello, node");' >hello.js
  printf 'const who: string = "typescript";\nconsole.log(`hello, ${who}`);\n' >hello.ts
  printf 'export default [{ files: ["**/*.js"], rules: { "no-undef": "off", "no-unused-vars": "error" } }];\n' >eslint.config.mjs
  expect "hello, node" node hello.js || return 1
  expect "hello, typescript" tsx hello.ts || return 1
  tsc --strict --noEmit hello.ts || return 1
  eslint hello.js || return 1
  pnpm --version >/dev/null || return 1
  version "node $(node --version), npm $(npm --version), pnpm $(pnpm --version), tsc $(tsc --version | cut -d' ' -f2), eslint $(eslint --version)"
}

t_bun() {
  need bun || return 1
  printf 'const who: string = "bun";\nconsole.log(`hello, ${who}`);\n' >hello.ts
  expect "hello, bun" bun run hello.ts || return 1
  version "bun $(bun --version)"
}

t_go() {
  need go gofmt govulncheck staticcheck || return 1
  printf 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfmt.Println("hello, go")\n}\n' >hello.go
  expect "hello, go" go run hello.go || return 1
  go vet hello.go || return 1
  [ -z "$(gofmt -l hello.go)" ] || { echo "gofmt"; return 1; }
  staticcheck hello.go || return 1
  govulncheck -version >/dev/null || return 1
  version "$(go version | cut -d' ' -f3), staticcheck $(staticcheck -version | cut -d' ' -f2), govulncheck"
}

t_rust() {
  need rustc cargo rustfmt cargo-clippy cargo-audit cargo-deny || return 1
  printf 'fn main() {\n    println!("hello, rust");\n}\n' >hello.rs
  rustc -O hello.rs -o hello-rs || return 1
  expect "hello, rust" ./hello-rs || return 1
  rustfmt --check hello.rs || return 1
  cargo clippy --version >/dev/null && cargo audit --version >/dev/null && cargo deny --version >/dev/null || return 1
  version "$(rustc --version | cut -d' ' -f1-2), $(cargo clippy --version), $(cargo audit --version), $(cargo deny --version)"
}

t_ruby() {
  need ruby bundle rubocop || return 1
  printf "# frozen_string_literal: true\n\nputs 'hello, ruby'\n" >hello.rb
  expect "hello, ruby" ruby hello.rb || return 1
  rubocop --cache false --format quiet hello.rb || return 1
  version "$(ruby --version | cut -d' ' -f1-2), bundler $(bundle --version | cut -d' ' -f3), rubocop $(rubocop --version)"
}

t_bundler_audit() {
  need bundle-audit || return 1
  bundle-audit version >/dev/null || return 1
  version "$(bundle-audit version)"
}

t_php() {
  need php composer phpunit || return 1
  printf '<?php\necho "hello, php\\n";\n' >hello.php
  expect "hello, php" php hello.php || return 1
  php -l hello.php >/dev/null || return 1
  composer --version --no-interaction >/dev/null 2>&1 && phpunit --version >/dev/null || return 1
  version "$(php --version | head -n 1 | cut -d' ' -f1-2), $(composer --version --no-interaction 2>/dev/null | cut -d' ' -f1-3), $(phpunit --version | head -n 1 | cut -d' ' -f1-2)"
}

t_phpstan() {
  need php phpstan || return 1
  printf '<?php\nfunction greet(string $who): string { return "hello, " . $who; }\necho greet("phpstan"), "\\n";\n' >hello.php
  phpstan analyse --no-progress --level=9 hello.php || return 1
  version "$(phpstan --version --no-ansi)"
}

java_hello() {
  printf 'public class Hello {\n    public static void main(String[] a) {\n        System.out.println("hello, java " + Runtime.version().feature());\n    }\n}\n' >Hello.java
}

t_java() {
  need java javac || return 1
  java_hello
  javac Hello.java || return 1
  expect "hello, java 17" java -cp . Hello || return 1
  version "$(java -version 2>&1 | head -n 1)"
}

t_java21() {
  if [ -z "${JAVA_HOME_21:-}" ] || [ ! -x "$JAVA_HOME_21/bin/javac" ]; then
    echo "no JDK at JAVA_HOME_21=${JAVA_HOME_21:-}"
    return 1
  fi
  java_hello
  "$JAVA_HOME_21/bin/javac" Hello.java || return 1
  expect "hello, java 21" "$JAVA_HOME_21/bin/java" -cp . Hello || return 1
  version "$("$JAVA_HOME_21/bin/java" -version 2>&1 | head -n 1) at \$JAVA_HOME_21"
}

t_maven() {
  need mvn || return 1
  # An aggregator POM: `validate` binds no plugin, so it runs offline.
  printf '<project xmlns="http://maven.apache.org/POM/4.0.0">\n  <modelVersion>4.0.0</modelVersion>\n  <groupId>smoke</groupId>\n  <artifactId>hello</artifactId>\n  <version>1</version>\n  <packaging>pom</packaging>\n</project>\n' >pom.xml
  mvn -B -q -o validate || return 1
  version "$(first mvn -B --version | sed 's/\x1b\[[0-9;]*m//g; s/ (.*//')"
}

t_gradle() {
  need gradle || return 1
  printf 'tasks.register("hello") { doLast { println("hello, gradle") } }\n' >build.gradle.kts
  : >settings.gradle.kts
  gradle --offline --no-daemon -q hello >out.txt || return 1
  grep -qx "hello, gradle" out.txt || { cat out.txt; return 1; }
  version "$(gradle --version --offline 2>/dev/null | grep -m1 '^Gradle')"
}

t_kotlin() {
  need kotlinc java || return 1
  printf 'fun main() {\n    println("hello, kotlin")\n}\n' >hello.kt
  kotlinc hello.kt -include-runtime -d hello.jar 2>kotlinc.err || { cat kotlinc.err; return 1; }
  expect "hello, kotlin" java -jar hello.jar || return 1
  version "$(kotlinc -version 2>&1 | grep -o 'kotlinc-jvm [^ ]*')"
}

t_dotnet() {
  need dotnet || return 1
  export DOTNET_CLI_HOME="$SMOKE_DIR" DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1 DOTNET_CLI_WORKLOAD_UPDATE_NOTIFY_DISABLE=1
  dotnet new console --output app --name Hello >/dev/null || return 1
  printf 'System.Console.WriteLine("hello, dotnet");\n' >app/Program.cs
  expect "hello, dotnet" dotnet run --project app || return 1
  version ".NET SDK $(dotnet --version)"
}

t_swift() {
  need swiftc || return 1
  printf 'print("hello, swift")\n' >hello.swift
  swiftc hello.swift -o hello-swift || return 1
  expect "hello, swift" ./hello-swift || return 1
  version "$(swiftc --version 2>&1 | grep -m1 -o 'Swift version [^ ]*')"
}

t_c() {
  need clang clang++ ld.lld cmake ninja valgrind || return 1
  printf '#include <stdio.h>\nint main(void) { puts("hello, c"); return 0; }\n' >hello.c
  printf '#include <iostream>\nint main() { std::cout << "hello, c++" << std::endl; }\n' >hello.cpp
  clang -Wall -Werror -fuse-ld=lld hello.c -o hello-c || return 1
  expect "hello, c" ./hello-c || return 1
  clang++ -Wall -Werror -fuse-ld=lld hello.cpp -o hello-cpp || return 1
  expect "hello, c++" ./hello-cpp || return 1
  valgrind -q --error-exitcode=1 --leak-check=full ./hello-c >/dev/null || return 1
  mkdir cm && printf 'cmake_minimum_required(VERSION 3.16)\nproject(hello C)\nadd_executable(hello ../hello.c)\n' >cm/CMakeLists.txt
  (cd cm && CC=clang cmake -G Ninja -S . -B build >/dev/null && ninja -C build >/dev/null) || return 1
  expect "hello, c" cm/build/hello || return 1
  version "$(clang --version | head -n 1), cmake $(cmake --version | head -n 1 | cut -d' ' -f3), ninja $(ninja --version), $(valgrind --version)"
}

t_bash() {
  need bash shellcheck bats shfmt || return 1
  printf '#!/usr/bin/env bash\nset -eu\nwho="bash"\necho "hello, ${who}"\n' >hello.sh
  printf '@test "hello" {\n  run bash ./hello.sh\n  [ "$output" = "hello, bash" ]\n}\n' >hello.bats
  expect "hello, bash" bash hello.sh || return 1
  shellcheck hello.sh || return 1
  shfmt -d -i 2 hello.sh || return 1
  bats hello.bats >/dev/null || return 1
  version "bash ${BASH_VERSION}, shellcheck $(shellcheck --version | sed -n 's/^version: //p'), $(bats --version), shfmt $(shfmt --version)"
}

t_tools() {
  need git jq yq rg fd gh curl wget || return 1
  git init -q repo && git -C repo -c user.name=smoke -c user.email=smoke@localhost commit -q --allow-empty -m hello || return 1
  expect "hello" git -C repo log -1 --format=%s || return 1
  expect "tools" jq -r .hello <<<'{"hello": "tools"}' || return 1
  printf 'hello: yaml\n' >hello.yaml
  expect "yaml" yq -r .hello hello.yaml || return 1
  expect "hello.yaml" rg -l '^hello' hello.yaml || return 1
  expect "hello.yaml" fd -t f '^hello\.yaml$' || return 1
  gh --version >/dev/null && curl --version >/dev/null && wget --version >/dev/null || return 1
  version "$(git --version), jq $(jq --version), yq $(yq --version 2>&1 | cut -d' ' -f2), ripgrep $(rg --version | head -n 1 | cut -d' ' -f2), fd $(fd --version | cut -d' ' -f2), gh $(gh --version | head -n 1 | cut -d' ' -f3)"
}

# --- run ---------------------------------------------------------------------------
selected=()
for t in "${TOOLCHAINS[@]}"; do
  if [ -n "$only" ] && ! in_list "$t" "$only"; then continue; fi
  if [ -n "$skip" ] && in_list "$t" "$skip"; then continue; fi
  selected+=("$t")
done
[ ${#selected[@]} -gt 0 ] || { echo "smoke.sh: no toolchain selected" >&2; exit 2; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/smoke.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
echo "smoke: ${#selected[@]} toolchain(s) as $(id -un 2>/dev/null || id -u)${skip:+, skipping $skip}${only:+, only $only}"

failed=()
for t in "${selected[@]}"; do
  dir="$scratch/$t"
  mkdir -p "$dir"
  start=$SECONDS
  if (cd "$dir" && export SMOKE_DIR="$dir" && "t_${t//-/_}") >"$dir/.log" 2>&1; then
    printf '  PASS  %-14s %3ss  %s\n' "$t" "$((SECONDS - start))" "$(cat "$dir/.version" 2>/dev/null)"
  else
    failed+=("$t")
    printf '  FAIL  %-14s %3ss\n' "$t" "$((SECONDS - start))"
    tail -n 15 "$dir/.log" | sed 's/^/          | /'
  fi
done

if [ ${#failed[@]} -eq 0 ]; then
  echo "=== ALL TOOLCHAINS GREEN ==="
  exit 0
fi
echo "=== ${#failed[@]} OF ${#selected[@]} TOOLCHAINS FAILED: ${failed[*]} ==="
exit 1
