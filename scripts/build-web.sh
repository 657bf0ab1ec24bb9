#!/usr/bin/env bash
# Rebuilds the dashboard (web/src → web/dist) after a change to its sources: type-checks
# with tsc, bundles with esbuild. Commit web/dist with the sources: the binary embeds it,
# so `cargo build` needs no Node.js, and a test fails while web/dist is stale.
set -euo pipefail
source "$(dirname "$0")/lib/services.sh"

ensure_web_tools
cd "$CC_ROOT/web"
npm run --silent build
