#!/usr/bin/env bash
# Every test of the project: the Rust workspace (unit, integration, doc tests; the
# database tests use the PostgreSQL named in README; a Python venv in target/ holds the
# tus client the upload tests drive and moto, the S3-compatible server the tests of the
# bucket file store start), then the web client: type check,
# unit tests, and the end-to-end tests in Debian's Chromium against a real chat-server.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> Python: the tus reference client (tuspy) and an S3-compatible server (moto)"
if [ ! -x target/py-venv/bin/moto_server ] || ! target/py-venv/bin/python -c "import tusclient, moto" 2>/dev/null; then
    python3 -m venv target/py-venv
    target/py-venv/bin/pip install --quiet --disable-pip-version-check "tuspy==1.1.0" "moto[server]==5.2.6"
fi

echo "==> Rust: cargo test --workspace --all-features"
cargo test --workspace --all-features

echo "==> web: dependencies"
cd web
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
fi

echo "==> web: type check (svelte-check)"
npm run check

echo "==> web: unit tests (vitest)"
npm test

echo "==> web: end-to-end tests (Chromium)"
if [ ! -x "${CHROMIUM:-/usr/bin/chromium}" ]; then
    echo "The end-to-end tests drive Debian's Chromium: apt-get install -y chromium" >&2
    exit 1
fi
npm run build
cargo build -p chat-server
# The Rust side of the browser interop test (an SDK bot with a device key).
cargo build -p chat-examples --bin echo_bot
npm run e2e
