#!/usr/bin/env bash
# Make sure the Fashion-MNIST IDX files are installed (Debian package dataset-fashion-mnist).
set -euo pipefail
dir="${SPNAS_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
if ls "$dir"/train-images-idx3-ubyte* >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing dataset-fashion-mnist with apt-get ..."
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; }
  exit 0
fi
echo "Fashion-MNIST is missing from $dir." >&2
echo "Install it with: sudo apt-get install -y dataset-fashion-mnist" >&2
echo "(or set SPNAS_FASHION_MNIST to a folder holding the four *-idx*-ubyte.gz files)" >&2
exit 1
