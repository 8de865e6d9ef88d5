#!/usr/bin/env bash
# Installs what the test suite needs and prints the environment it should run with:
#   - kubectl 1.20 from Debian's kubernetes-client package, unpacked into a cache folder
#     (the package's /usr/bin/kubectl would clash with the kubectl 1.32 already installed);
#   - kubectl 1.32 is expected at /usr/bin/kubectl;
#   - a running Docker engine (Debian's docker.io), started in the background when it is not up;
#   - the official Python client (`kubernetes` from PyPI, the release for Kubernetes 1.32) in
#     a virtual environment in the cache folder.
# Usage: eval "$(scripts/test-deps.sh)"
set -euo pipefail
cache="${SHOAL_CACHE:-/var/cache/shoal}"
mkdir -p "$cache"
k120="$cache/kubectl-1.20/usr/bin/kubectl"
if [ ! -x "$k120" ]; then
  work="$(mktemp -d)"
  (
    cd "$work"
    if ! apt-get download kubernetes-client >/dev/null 2>&1; then
      apt-get update >/dev/null
      apt-get download kubernetes-client >/dev/null
    fi
    dpkg -x kubernetes-client_*.deb "$cache/kubectl-1.20"
  ) >&2
  rm -rf "$work"
fi
"$k120" version --client >/dev/null

if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    (apt-get install -y docker.io >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y docker.io >/dev/null; }) >&2
  fi
  nohup dockerd >"$cache/dockerd.log" 2>&1 &
  echo $! >"$cache/dockerd.pid"
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see $cache/dockerd.log" >&2; exit 1; }
fi
python="$cache/python/bin/python"
if ! "$python" -c 'import kubernetes' >/dev/null 2>&1; then
  (python3 -m venv "$cache/python" && "$cache/python/bin/pip" install -q "kubernetes==32.0.1") >&2
fi
"$python" -c 'import kubernetes' >/dev/null

echo "export SHOAL_KUBECTL_120=$k120"
echo "export SHOAL_PYTHON=$python"
echo "export SHOAL_KUBECTL_132=/usr/bin/kubectl"
