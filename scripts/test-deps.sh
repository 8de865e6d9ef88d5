#!/usr/bin/env bash
# Installs what the test suite needs and prints the environment it should run with:
#   - kubectl 1.20 from Debian's kubernetes-client package, unpacked into a cache folder
#     (the package's /usr/bin/kubectl would clash with the kubectl 1.32 already installed);
#   - kubectl 1.32 is expected at /usr/bin/kubectl.
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
echo "export SHOAL_KUBECTL_120=$k120"
echo "export SHOAL_KUBECTL_132=/usr/bin/kubectl"
