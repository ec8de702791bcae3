#!/usr/bin/env bash
# Installs the Debian packages named as arguments (nothing when none),
# through sudo unless run as root. Used by install-deps.sh and
# lint-deploy.sh, which decide what is missing.
set -euo pipefail
(($#)) || exit 0
echo "==> apt-get install $*"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
