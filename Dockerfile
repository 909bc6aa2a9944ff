# crafting-table: the farm and every toolchain its recipes use, in one image.
#
#   docker compose build                      # the full image (the default)
#   docker build -t crafting-table .          # the same without compose
#   docker build --build-arg VARIANT=reduced -t crafting-table:reduced .
#   podman build --format docker ...          # podman keeps HEALTHCHECK only so
#
# Two variants, one file. The last stage is `FROM runtime-${VARIANT}`:
#   full     (default) Debian's toolchains, plus the upstream ones (Node 22, Bun, Go,
#            Rust, Temurin 21, Gradle, Kotlin, .NET, Swift, phpstan, bundler-audit),
#            each archive pinned by version and SHA-256 (.NET: SHA-512, the only digest
#            Microsoft publishes); the farm is compiled here with
#            `cargo build --release --locked`.
#   reduced  Debian's toolchains and the PyPI/npm tools only (Node is Debian's 18, so
#            the npm tools are pinned to versions that support it), and the farm binary
#            is taken from the build context (FARM_BIN, default
#            target/release/crafting-table) instead of compiled. For hosts that can
#            reach Debian, PyPI and npm but not the upstream download sites, and for
#            CI (.ci/image.sh builds and proves it).
# Stages the chosen variant does not use are skipped (BuildKit and buildah both do).
# The upstream pins are for x86_64 only; the fetch stage stops on another architecture.

# ---- versions (bump a version and its digest together) --------------------------
# The digests are the ones the projects publish. CI cannot reach the upstream sites
# (it builds the reduced variant), so a wrong digest shows up as a failing
# `sha256sum -c` in the first full build, never as an unchecked archive.
ARG VARIANT=full
# The runtime base. Debian bookworm: glibc 2.36, Python 3.11, Ruby 3.1, PHP 8.2, JDK 17.
ARG DEBIAN_IMAGE=debian:bookworm-slim
# npm tools; these versions also run on Debian's Node 18 (the reduced image).
ARG PNPM_VERSION=9.15.9
ARG TSX_VERSION=4.19.2
ARG ESLINT_VERSION=9.39.5
ARG TYPESCRIPT_VERSION=5.7.3
# PyPI tools, each in its own virtual environment made by uv.
ARG UV_VERSION=0.13.9
ARG PIPX_VERSION=1.18.4
ARG PIP_AUDIT_VERSION=2.10.1
ARG RUFF_VERSION=0.17.6
ARG MYPY_VERSION=2.4.1
ARG PYTEST_VERSION=9.2.0
ARG SEMGREP_VERSION=1.185.0
# Upstream archives (full image only).
ARG NODE_VERSION=22.11.0
ARG NODE_SHA256=83bf07dd343002a26211cf1fcd46a9d9534219aad42ee02847816940bf610a72
ARG BUN_VERSION=1.3.9
ARG BUN_SHA256=4680e80e44e32aa718560ceae85d22ecfbf2efb8f3641782e35e4b7efd65a1aa
ARG GO_VERSION=1.22.10
ARG GO_SHA256=736ce492a19d756a92719a6121226087ccd91b652ed5caec40ad6dbfb2252092
# Go tools come from the Go module proxy, checked against sum.golang.org.
ARG GOVULNCHECK_VERSION=v1.1.3
ARG STATICCHECK_VERSION=2024.1.1
# rustup-init is pinned; it then installs the pinned toolchain (checked by rustup).
ARG RUSTUP_VERSION=1.27.1
ARG RUSTUP_SHA256=6aeece6993e902708983b209d04c0d1dbb14ebb405ddb87def578d41f920f56d
ARG RUST_VERSION=1.95.0
# Cargo subcommands come from crates.io with their own Cargo.lock (`--locked`).
ARG CARGO_AUDIT_VERSION=0.21.2
ARG CARGO_DENY_VERSION=0.18.3
ARG TEMURIN21_VERSION=21.0.5+11
ARG TEMURIN21_SHA256=3c654d98404c073b8a7e66bffb27f4ae3e7ede47d13284c132d40a83144bfd8c
ARG GRADLE_VERSION=8.10.2
ARG GRADLE_SHA256=31c55713e40233a8303827ceb42ca48a47267a0ad4bab9177123121e71524c26
ARG KOTLIN_VERSION=1.9.25
ARG KOTLIN_SHA256=6ab72d6144e71cbbc380b770c2ad380972548c63ab6ed4c79f11c88f2967332e
ARG DOTNET_SDK_VERSION=8.0.404
ARG DOTNET_SDK_SHA512=2f166f7f3bd508154d72d1783ffac6e0e3c92023ccc2c6de49d22b411fc8b9e6dd03e7576acc1bb5870a6951181129ba77f3bf94bb45fe9c70105b1b896b9bb9
ARG SWIFT_VERSION=5.9.2
ARG SWIFT_SHA256=6407e39eed7eaefcf7837d192d71765fb0f7cf8bf282c35b021171e8b15617c1
ARG PHPSTAN_VERSION=2.1.29
ARG PHPSTAN_SHA256=339e605ebcfde856cc87650d269087aff3ec61a693aed266d2698dc3c45cc4c6
ARG BUNDLER_AUDIT_VERSION=0.9.2
ARG BUNDLER_AUDIT_SHA256=73051daa09865c436450a35c4d87ceef15f3f9777f4aad4fd015cc6f1f2b1048
# Where the reduced variant finds the farm binary in the build context.
ARG FARM_BIN=target/release/crafting-table

# ---- base: Debian's toolchains, PyPI tools, the crafter user --------------------
FROM ${DEBIAN_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# Packages by line: system; Python; Ruby (ruby-thor serves bundler-audit in the full
# image); PHP; Java; C/C++; shell; generic tools. bubblewrap is the job sandbox, tini
# reaps orphaned processes as PID 1, procps gives ps/pgrep to jobs and operators.
# Versions come from the pinned Debian release (bookworm), not from apt pins.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates curl wget git openssh-client gnupg xz-utils unzip zip tzdata \
      bubblewrap tini procps less sqlite3 build-essential pkg-config libssl-dev \
      python3 python3-venv python3-pip python3-dev \
      ruby ruby-dev bundler rubocop ruby-thor \
      php-cli php-xml php-mbstring php-curl php-zip composer phpunit \
      default-jdk-headless maven \
      clang lld cmake ninja-build valgrind \
      bash shellcheck bats shfmt \
      jq yq ripgrep fd-find gh \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/fdfind /usr/local/bin/fd
# Extra CA certificates (*.crt) for hosts behind a TLS-inspecting proxy; the directory
# holds only a README unless you add some. The whole image (pip, npm, uv, cargo, go)
# then trusts them through the system bundle.
COPY deploy/ca-certificates/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates
# The runtime user. No sudo: a recipe runs as crafter, and passwordless sudo would let
# any recipe become root in the container (the original image allowed that).
# Host directories bind-mounted into the container belong to host users; git refuses
# repositories owned by someone else unless they are marked safe.
RUN useradd --uid 1000 --user-group --create-home --shell /bin/bash crafter \
 && git config --system --add safe.directory '*'
# PyPI tools: uv from PyPI in a bootstrap venv, then one isolated venv per tool; uv
# must never download its own Python (UV_PYTHON_DOWNLOADS=never).
ARG UV_VERSION
ARG PIPX_VERSION
ARG PIP_AUDIT_VERSION
ARG RUFF_VERSION
ARG MYPY_VERSION
ARG PYTEST_VERSION
ARG SEMGREP_VERSION
RUN export UV_TOOL_DIR=/opt/uv-tools UV_TOOL_BIN_DIR=/usr/local/bin UV_PYTHON=/usr/bin/python3 \
           UV_PYTHON_DOWNLOADS=never UV_NATIVE_TLS=1 UV_NO_CACHE=1 \
 && python3 -m venv /opt/uv \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/uv/bin/pip install --no-cache-dir --disable-pip-version-check "uv==${UV_VERSION}" \
 && ln -s /opt/uv/bin/uv /opt/uv/bin/uvx /usr/local/bin/ \
 && for tool in "pipx==${PIPX_VERSION}" "pip-audit==${PIP_AUDIT_VERSION}" "ruff==${RUFF_VERSION}" \
                "mypy==${MYPY_VERSION}" "pytest==${PYTEST_VERSION}" "semgrep==${SEMGREP_VERSION}"; do \
      uv tool install --quiet "$tool" || exit 1; \
    done

# ---- fetch: a place to download and verify upstream archives (full only) ---------
FROM base AS fetch
WORKDIR /tmp/fetch
RUN arch="$(dpkg --print-architecture)"; \
    [ "$arch" = amd64 ] || { echo "the full image pins x86_64 archives; build --build-arg VARIANT=reduced on $arch" >&2; exit 1; }

FROM fetch AS node22
ARG NODE_VERSION
ARG NODE_SHA256
ARG PNPM_VERSION
ARG TSX_VERSION
ARG ESLINT_VERSION
ARG TYPESCRIPT_VERSION
RUN curl -fsSLo node.tar.xz "https://nodejs.org/dist/v${NODE_VERSION}/node-v${NODE_VERSION}-linux-x64.tar.xz" \
 && echo "${NODE_SHA256}  node.tar.xz" > node.tar.xz.sum && sha256sum -c node.tar.xz.sum \
 && mkdir -p /opt/node && tar -xJf node.tar.xz -C /opt/node --strip-components=1 --no-same-owner \
 && PATH="/opt/node/bin:$PATH" NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm install -g --no-fund --no-audit \
      "pnpm@${PNPM_VERSION}" "tsx@${TSX_VERSION}" "eslint@${ESLINT_VERSION}" "typescript@${TYPESCRIPT_VERSION}" \
 && rm -rf /root/.npm

FROM fetch AS bun
ARG BUN_VERSION
ARG BUN_SHA256
RUN curl -fsSLo bun.zip "https://github.com/oven-sh/bun/releases/download/bun-v${BUN_VERSION}/bun-linux-x64.zip" \
 && echo "${BUN_SHA256}  bun.zip" > bun.zip.sum && sha256sum -c bun.zip.sum \
 && unzip -q bun.zip && install -D -m 0755 bun-linux-x64/bun /opt/bun/bin/bun

FROM fetch AS go
ARG GO_VERSION
ARG GO_SHA256
ARG GOVULNCHECK_VERSION
ARG STATICCHECK_VERSION
ENV PATH=/usr/local/go/bin:$PATH GOPATH=/tmp/gopath GOBIN=/opt/go-tools/bin GOTOOLCHAIN=local
RUN curl -fsSLo go.tar.gz "https://go.dev/dl/go${GO_VERSION}.linux-amd64.tar.gz" \
 && echo "${GO_SHA256}  go.tar.gz" > go.tar.gz.sum && sha256sum -c go.tar.gz.sum \
 && tar -xzf go.tar.gz -C /usr/local --no-same-owner \
 && go install "golang.org/x/vuln/cmd/govulncheck@${GOVULNCHECK_VERSION}" \
 && go install "honnef.co/go/tools/cmd/staticcheck@${STATICCHECK_VERSION}"

FROM fetch AS rust
ARG RUSTUP_VERSION
ARG RUSTUP_SHA256
ARG RUST_VERSION
ARG CARGO_AUDIT_VERSION
ARG CARGO_DENY_VERSION
ENV RUSTUP_HOME=/usr/local/rustup CARGO_HOME=/usr/local/cargo PATH=/usr/local/cargo/bin:$PATH
RUN curl -fsSLo rustup-init "https://static.rust-lang.org/rustup/archive/${RUSTUP_VERSION}/x86_64-unknown-linux-gnu/rustup-init" \
 && echo "${RUSTUP_SHA256}  rustup-init" > rustup-init.sum && sha256sum -c rustup-init.sum \
 && chmod +x rustup-init \
 && ./rustup-init -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}" --component clippy,rustfmt \
 && cargo install --locked "cargo-audit@${CARGO_AUDIT_VERSION}" "cargo-deny@${CARGO_DENY_VERSION}" \
 && rm -rf /usr/local/cargo/registry /usr/local/cargo/git \
 && chmod -R a+rX /usr/local/rustup /usr/local/cargo

# The farm itself, compiled as the README says (release, the committed Cargo.lock).
FROM rust AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src/ src/
COPY benches/ benches/
RUN cargo build --release --locked \
 && install -D -m 0755 target/release/crafting-table /out/crafting-table

FROM fetch AS jdk21
ARG TEMURIN21_VERSION
ARG TEMURIN21_SHA256
RUN feature="${TEMURIN21_VERSION%%+*}" build="${TEMURIN21_VERSION##*+}" \
 && curl -fsSLo jdk.tar.gz "https://github.com/adoptium/temurin21-binaries/releases/download/jdk-${feature}%2B${build}/OpenJDK21U-jdk_x64_linux_hotspot_${feature}_${build}.tar.gz" \
 && echo "${TEMURIN21_SHA256}  jdk.tar.gz" > jdk.tar.gz.sum && sha256sum -c jdk.tar.gz.sum \
 && mkdir -p /opt/java/temurin-21 && tar -xzf jdk.tar.gz -C /opt/java/temurin-21 --strip-components=1 --no-same-owner

FROM fetch AS gradle
ARG GRADLE_VERSION
ARG GRADLE_SHA256
RUN curl -fsSLo gradle.zip "https://services.gradle.org/distributions/gradle-${GRADLE_VERSION}-bin.zip" \
 && echo "${GRADLE_SHA256}  gradle.zip" > gradle.zip.sum && sha256sum -c gradle.zip.sum \
 && unzip -q gradle.zip && mv "gradle-${GRADLE_VERSION}" /opt/gradle

FROM fetch AS kotlin
ARG KOTLIN_VERSION
ARG KOTLIN_SHA256
RUN curl -fsSLo kotlin.zip "https://github.com/JetBrains/kotlin/releases/download/v${KOTLIN_VERSION}/kotlin-compiler-${KOTLIN_VERSION}.zip" \
 && echo "${KOTLIN_SHA256}  kotlin.zip" > kotlin.zip.sum && sha256sum -c kotlin.zip.sum \
 && unzip -q kotlin.zip && mv kotlinc /opt/kotlinc

FROM fetch AS dotnet
ARG DOTNET_SDK_VERSION
ARG DOTNET_SDK_SHA512
RUN curl -fsSLo dotnet.tar.gz "https://builds.dotnet.microsoft.com/dotnet/Sdk/${DOTNET_SDK_VERSION}/dotnet-sdk-${DOTNET_SDK_VERSION}-linux-x64.tar.gz" \
 && echo "${DOTNET_SDK_SHA512}  dotnet.tar.gz" > dotnet.tar.gz.sum && sha512sum -c dotnet.tar.gz.sum \
 && mkdir -p /opt/dotnet && tar -xzf dotnet.tar.gz -C /opt/dotnet --no-same-owner

# Swift publishes Ubuntu builds only; the 22.04 one runs on bookworm's glibc/libstdc++.
FROM fetch AS swift
ARG SWIFT_VERSION
ARG SWIFT_SHA256
RUN curl -fsSLo swift.tar.gz "https://download.swift.org/swift-${SWIFT_VERSION}-release/ubuntu2204/swift-${SWIFT_VERSION}-RELEASE/swift-${SWIFT_VERSION}-RELEASE-ubuntu22.04.tar.gz" \
 && echo "${SWIFT_SHA256}  swift.tar.gz" > swift.tar.gz.sum && sha256sum -c swift.tar.gz.sum \
 && mkdir -p /opt/swift && tar -xzf swift.tar.gz -C /opt/swift --strip-components=1 --no-same-owner

FROM fetch AS phptools
ARG PHPSTAN_VERSION
ARG PHPSTAN_SHA256
ARG BUNDLER_AUDIT_VERSION
ARG BUNDLER_AUDIT_SHA256
RUN curl -fsSLo phpstan.phar "https://github.com/phpstan/phpstan/releases/download/${PHPSTAN_VERSION}/phpstan.phar" \
 && echo "${PHPSTAN_SHA256}  phpstan.phar" > phpstan.phar.sum && sha256sum -c phpstan.phar.sum \
 && install -D -m 0755 phpstan.phar /out/phpstan \
 && curl -fsSLo bundler-audit.gem "https://rubygems.org/downloads/bundler-audit-${BUNDLER_AUDIT_VERSION}.gem" \
 && echo "${BUNDLER_AUDIT_SHA256}  bundler-audit.gem" > bundler-audit.gem.sum && sha256sum -c bundler-audit.gem.sum \
 && install -D -m 0644 bundler-audit.gem /out/bundler-audit.gem

# ---- the two runtimes -------------------------------------------------------------
FROM base AS runtime-full
# Shared libraries the .NET SDK and the Swift toolchain load.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libicu72 libcurl4 libedit2 libxml2 libz3-4 libsqlite3-0 libncurses6 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node22 /opt/node /opt/node
COPY --from=bun /opt/bun/bin/bun /usr/local/bin/bun
COPY --from=go /usr/local/go /usr/local/go
COPY --from=go /opt/go-tools/bin/ /usr/local/bin/
COPY --from=rust /usr/local/rustup /usr/local/rustup
COPY --from=rust /usr/local/cargo/bin /usr/local/cargo/bin
COPY --from=jdk21 /opt/java/temurin-21 /opt/java/temurin-21
COPY --from=gradle /opt/gradle /opt/gradle
COPY --from=kotlin /opt/kotlinc /opt/kotlinc
COPY --from=dotnet /opt/dotnet /opt/dotnet
COPY --from=swift /opt/swift /opt/swift
COPY --from=phptools /out/ /tmp/phptools/
COPY --from=build /out/crafting-table /usr/local/bin/crafting-table
# bundler-audit's only dependencies (thor, bundler) are Debian packages already; the
# gem file itself is pinned by version and SHA-256 in the phptools stage.
# hadolint ignore=DL3028
RUN ln -s /opt/gradle/bin/gradle /opt/kotlinc/bin/kotlinc /opt/kotlinc/bin/kotlin /opt/dotnet/dotnet /usr/local/bin/ \
 && ln -s /opt/swift/usr/bin/swift /opt/swift/usr/bin/swiftc /usr/local/bin/ \
 && install -m 0755 /tmp/phptools/phpstan /usr/local/bin/phpstan \
 && gem install --local --no-document /tmp/phptools/bundler-audit.gem \
 && rm -rf /tmp/phptools

FROM base AS runtime-reduced
ARG PNPM_VERSION
ARG TSX_VERSION
ARG ESLINT_VERSION
ARG TYPESCRIPT_VERSION
ARG FARM_BIN
# Debian's Node.js 18 and npm; the npm tools' pins support it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/* \
 && NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm install -g --no-fund --no-audit \
      "pnpm@${PNPM_VERSION}" "tsx@${TSX_VERSION}" "eslint@${ESLINT_VERSION}" "typescript@${TYPESCRIPT_VERSION}" \
 && rm -rf /root/.npm
COPY ${FARM_BIN} /usr/local/bin/crafting-table

# ---- the image --------------------------------------------------------------------
# `:-full` repeats the default on purpose: buildah (podman build) decides which
# stages to build before it applies ARG defaults, and would otherwise skip
# runtime-full when VARIANT is not given on the command line.
# hadolint ignore=DL3006
FROM runtime-${VARIANT:-full} AS final
COPY smoke.sh /usr/local/bin/smoke.sh
COPY deploy/entrypoint.sh /usr/local/bin/crafting-entrypoint
# /registry: an empty registry directory, so `serve` starts on a fresh host; bind-mount
# yours there or set CRAFTING_REGISTRY to a git URL.
RUN mkdir -p /data /workspace /caches /registry \
 && chown crafter:crafter /data /workspace /caches \
 && chmod 0755 /usr/local/bin/smoke.sh /usr/local/bin/crafting-entrypoint \
 && crafting-table --version
# Tool caches live on the /caches volume. Jobs run in bwrap with a fresh HOME per
# project: CRAFTING_SANDBOX_WRITABLE lets them write /caches, and
# CRAFTING_SANDBOX_PASS_ENV hands them the variables below (never a CRAFTING_* one).
ENV PATH=/usr/local/cargo/bin:/opt/node/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/caches/cargo \
    npm_config_cache=/caches/npm \
    npm_config_store_dir=/caches/pnpm-store \
    PIP_CACHE_DIR=/caches/pip \
    UV_CACHE_DIR=/caches/uv \
    MAVEN_OPTS=-Dmaven.repo.local=/caches/maven/repository \
    GRADLE_USER_HOME=/caches/gradle \
    BUN_INSTALL_CACHE_DIR=/caches/bun \
    GOPATH=/caches/go \
    GOMODCACHE=/caches/go/mod \
    GOCACHE=/caches/go/build \
    GOTOOLCHAIN=local \
    NUGET_PACKAGES=/caches/nuget \
    JAVA_HOME=/usr/lib/jvm/default-java \
    JAVA_HOME_21=/opt/java/temurin-21 \
    DOTNET_ROOT=/opt/dotnet \
    DOTNET_CLI_TELEMETRY_OPTOUT=1 \
    DOTNET_NOLOGO=1 \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
    SEMGREP_ENABLE_VERSION_CHECK=0 \
    SEMGREP_SEND_METRICS=off \
    CRAFTING_BIND=0.0.0.0:8810 \
    CRAFTING_DATA_DIR=/data \
    CRAFTING_WORKSPACE_DIR=/workspace \
    CRAFTING_REGISTRY=/registry \
    CRAFTING_SANDBOX_WRITABLE=/caches \
    CRAFTING_SANDBOX_PASS_ENV=RUSTUP_HOME,CARGO_HOME,npm_config_cache,npm_config_store_dir,PIP_CACHE_DIR,UV_CACHE_DIR,MAVEN_OPTS,GRADLE_USER_HOME,BUN_INSTALL_CACHE_DIR,GOPATH,GOMODCACHE,GOCACHE,GOTOOLCHAIN,NUGET_PACKAGES,JAVA_HOME,JAVA_HOME_21,DOTNET_ROOT,DOTNET_CLI_TELEMETRY_OPTOUT,DOTNET_NOLOGO,SSL_CERT_FILE,NODE_EXTRA_CA_CERTS,SEMGREP_ENABLE_VERSION_CHECK,SEMGREP_SEND_METRICS
VOLUME ["/data", "/workspace", "/caches"]
EXPOSE 8810
WORKDIR /home/crafter
# The entrypoint starts as root only to hand root-owned volume mounts to crafter,
# then drops to crafter for good (setpriv, no_new_privs) and runs tini, which runs
# the command: `serve` and its jobs never run as root. Started with --user 1000 it
# only checks the volumes and names the chown to run when one is not writable.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/bin/sh", "-c", "curl -fsS -o /dev/null \"http://127.0.0.1:${CRAFTING_BIND##*:}/healthz\""]
ENTRYPOINT ["/usr/local/bin/crafting-entrypoint"]
CMD ["crafting-table", "serve"]
