#!/bin/bash
# The offline bundle for a GPU machine without network (scripts/gpu_checks.sh; README "Many machines (a
# Ray cluster) and GPUs"): .gpu/py312.tar.xz (Ray 2.55.1 stripped, Flower 1.42.0 and the packages such an
# image lacks, for CPython 3.12 x86-64), .gpu/py312-grpcio.tar.xz, .gpu/openclipart-cache.tar.xz (the
# default data set's decoded cache entry, with OPENCLIPART_ENTRY) and .gpu/setup.sh. Run it here, from
# the repository root (echo /.gpu/ >> .git/info/exclude); carry .gpu; there: source .gpu/setup.sh.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WHEELS=${WHEELS:-/tmp/gpu_bundle/wheels}
OUTDIR=${OUTDIR:-$REPO/.gpu}
WORK=${WORK:-/tmp/gpu_bundle/build}
PIP=${PIP:-$REPO/.venv/bin/pip}
mkdir -p "$WHEELS" "$OUTDIR"
"$PIP" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
  -d "$WHEELS" -r "$HERE/requirements.txt"
cp "$HERE/setup.sh" "$OUTDIR/setup.sh"
rm -rf "$WORK"; mkdir -p "$WORK/site" "$WORK/grpc"
# uvicorn[standard]'s optional speed-ups are left out: only flower-superlink's REST API would use them
skip='^(watchfiles|httptools|websockets|python_dotenv)-'
wheels=$(cd "$WHEELS" && ls *.whl | grep -Ev "$skip")
(cd "$WHEELS" && "$PIP" install -q --no-deps --no-compile --only-binary=:all: --python-version 3.12 \
  --implementation cp --abi cp312 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_5_x86_64 \
  --platform manylinux1_x86_64 --target "$WORK/site" $wheels)
cd "$WORK/site"
rm -rf bin include                                   # console-script stubs (shebang of this machine) and C headers
rm -rf ray/jars ray/dashboard/client/build           # Java (34 MB) and the dashboard's web client
rm -rf ray/rllib ray/data ray/serve ray/tune ray/train ray/llm ray/air   # libraries on top of Ray core: never imported by core, actors, ray.util, flwr or fedfit
find . -depth -type d \( -name tests -o -name __pycache__ \) -exec rm -rf {} +
find sqlalchemy -name '*_cy*.so' -delete             # optional Cython speed-ups: their pure-Python twins (*_cy.py) load instead
find . -type f \( -name '*.so' -o -name '*.so.*' -o -path ./ray/core/src/ray/raylet/raylet -o -path ./ray/core/src/ray/gcs/gcs_server \) -print0 |
  while IFS= read -r -d '' f; do                     # symbol tables and debug info only; dynamic symbols stay
    if [ "$(head -c4 "$f" | od -An -c | tr -d ' ')" = '177ELF' ]; then m=$(stat -c %a "$f"); strip --strip-unneeded "$f"; chmod "$m" "$f"; fi
  done
mv grpc grpcio-*.dist-info "$WORK/grpc/"             # grpcio separately: the image has a grpcio of unknown version
tarxz() { (cd "$1" && tar --owner=0 --group=0 --numeric-owner --sort=name -cf - .) | nice xz ${XZLEVEL:--9e} -T1 > "$2.tmp" && mv "$2.tmp" "$2"; }
[ -n "${NOCOMPRESS:-}" ] && exit 0
tarxz "$WORK/site" "$OUTDIR/py312.tar.xz"
tarxz "$WORK/grpc" "$OUTDIR/py312-grpcio.tar.xz"
if [ -n "${OPENCLIPART_ENTRY:-}" ]; then             # e.g. ~/.cache/fedfit/datasets/openclipart-96px-2922ae239d270836
  d=$(dirname "$OPENCLIPART_ENTRY"); b=$(basename "$OPENCLIPART_ENTRY")
  (cd "$d/.." && tar --owner=0 --group=0 --numeric-owner -cf - "datasets/$b.images.npy" "datasets/$b.meta.npz") | nice xz -9e -T1 > "$OUTDIR/openclipart-cache.tar.xz"
fi
