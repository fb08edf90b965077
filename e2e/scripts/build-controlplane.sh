#!/usr/bin/env bash
# Builds the real Kubernetes control plane for tests and the sandbox from the Go module proxy, in
# one `go build` of the consumer module e2e/go/controlplane (shared packages compile once):
#
#   kube-apiserver, kube-controller-manager, kubectl  (k8s.io/kubernetes)
#       -> $QUORATE_CACHE/controlplane/<k8s-version>/          e.g. v1.36.3/
#   etcd                                             (go.etcd.io/etcd/server/v3)
#       -> $QUORATE_CACHE/controlplane/etcd-<etcd-version>/    e.g. etcd-v3.6.8/
#
# The versions are the ones pinned in e2e/go/controlplane/go.mod. A directory is complete when
# its `.complete` stamp exists: binaries are built into a temporary directory, moved in, and the
# stamp is written last, so an interrupted build is redone. Complete directories are reused.
#
# Usage: build-controlplane.sh [--print]
#   --print   only print the two target directories (one per line)
#
# Environment: QUORATE_CACHE (default ~/.cache/quorate); GO (the go command; default `go` on
# PATH, then /usr/local/go/bin/go). Needs Go >= 1.26 and the Go module proxy. Go's own module
# and build caches (GOMODCACHE, GOCACHE) make a rebuild fast.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
module="$(cd "$here/../go/controlplane" && pwd)"

print_only=false
for arg in "$@"; do
    case "$arg" in
        --print) print_only=true ;;
        -h | --help)
            sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build-controlplane: unknown argument '$arg' (try --help)" >&2
            exit 2
            ;;
    esac
done

# The versions, from the module's go.mod (the Rust side reads the same file).
pinned() { awk -v m="$1" '($1 == m && $2 ~ /^v/) || ($1 == "require" && $2 == m) { print ($1 == "require" ? $3 : $2); exit }' "$module/go.mod"; }
k8s_version="$(pinned k8s.io/kubernetes)"
etcd_version="$(pinned go.etcd.io/etcd/server/v3)"
if [[ -z "$k8s_version" || -z "$etcd_version" ]]; then
    echo "build-controlplane: cannot read the pinned versions from $module/go.mod" >&2
    exit 1
fi

cache="${QUORATE_CACHE:-}"
[[ -n "$cache" ]] || cache="${HOME:-/tmp}/.cache/quorate"
root="$cache/controlplane"
k8s_dir="$root/$k8s_version"
etcd_dir="$root/etcd-$etcd_version"

if $print_only; then
    echo "$k8s_dir"
    echo "$etcd_dir"
    exit 0
fi

started=$SECONDS
say() { printf '[controlplane %5ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

complete() { # dir binaries...
    local dir="$1"
    shift
    [[ -f "$dir/.complete" ]] || return 1
    local b
    for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}
up_to_date() {
    complete "$k8s_dir" kube-apiserver kube-controller-manager kubectl && complete "$etcd_dir" etcd
}

if up_to_date; then
    say "up to date: $k8s_dir $etcd_dir"
    exit 0
fi

# --- the Go toolchain -----------------------------------------------------------------------
go="${GO:-}"
if [[ -z "$go" ]]; then
    go="$(command -v go || true)"
    if [[ -z "$go" && -x /usr/local/go/bin/go ]]; then go=/usr/local/go/bin/go; fi
fi
if [[ -z "$go" ]] || ! "$go" version > /dev/null 2>&1; then
    cat >&2 << 'EOF'
build-controlplane: no Go toolchain found.
  Building kube-apiserver, kube-controller-manager, kubectl and etcd needs Go 1.26 or newer and
  access to the Go module proxy. Install Go (https://go.dev/doc/install, e.g. into /usr/local/go)
  and put it on PATH, or set GO=/path/to/go.
  Or point KUBEBUILDER_ASSETS at a directory that already holds kube-apiserver, etcd and kubectl
  (envtest's binaries); the testbed then uses those.
EOF
    exit 1
fi
go_version="$("$go" env GOVERSION)"
if ! [[ "$go_version" =~ ^go1\.([0-9]+) ]] || ((BASH_REMATCH[1] < 26)); then
    echo "build-controlplane: $go is $go_version, but k8s.io/kubernetes $k8s_version needs Go 1.26 or newer." \
        "Install a newer Go (https://go.dev/doc/install) or set GO=/path/to/go." >&2
    exit 1
fi

# Static, no VCS stamping, go.sum as committed; never fetch another toolchain behind our back.
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly"

mkdir -p "$root"
# One build at a time per cache: two test processes may ask at once.
exec 9> "$root/.build.lock"
if command -v flock > /dev/null && ! flock -n 9; then
    say "another build holds $root/.build.lock; waiting for it"
    flock 9
    if up_to_date; then
        say "built by the other process: $k8s_dir $etcd_dir"
        exit 0
    fi
fi

# --- version stamps (what upstream's hack/lib/version.sh sets) ------------------------------
major="${k8s_version#v}"
major="${major%%.*}"
minor="${k8s_version#v*.}"
minor="${minor%%.*}"
# The release's own date as buildDate (the proxy's .info of the module; small).
build_date="$(cd "$module" && "$go" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes 2> /dev/null || true)"
[[ -n "$build_date" ]] || build_date="1970-01-01T00:00:00Z"
ldflags="-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-$etcd_version"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitCommit= -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done

# --- the build -------------------------------------------------------------------------------
tmp="$root/.build-tmp-$$"
log="$root/build.log"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
say "building kube-apiserver, kube-controller-manager, kubectl $k8s_version and etcd $etcd_version with $go_version (minutes when cold; log: $log)"
(cd "$module" && "$go" build -v -trimpath -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kubectl \
    go.etcd.io/etcd/server/v3) > "$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2> /dev/null || true; rm -rf "$tmp"' EXIT
# Progress every 20 s: `go build -v` names each package as it compiles it.
while kill -0 "$pid" 2> /dev/null; do
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2> /dev/null; then
        n="$(grep -cv '^go: ' "$log" 2> /dev/null || true)"
        if [[ "${n:-0}" == 0 ]]; then
            say "  downloading modules"
        else
            say "  $n packages compiled"
        fi
    fi
done
if ! wait "$pid"; then
    echo "build-controlplane: go build failed after $((SECONDS - started))s; the last lines of $log:" >&2
    tail -n 40 "$log" | sed 's/^/    /' >&2
    echo "build-controlplane: check Go ($go_version; needs >= 1.26) and access to the Go module proxy ($("$go" env GOPROXY))." >&2
    exit 1
fi

# go build names a main package at a module root ending in /v3 after the element before it.
mv "$tmp/server" "$tmp/etcd"
stamp="built $(date -u +%Y-%m-%dT%H:%M:%SZ) with $go_version in $((SECONDS - started))s"
install_dir() { # dest binaries...
    local dest="$1"
    shift
    rm -rf "$dest"
    mkdir -p "$dest"
    local b
    for b in "$@"; do mv "$tmp/$b" "$dest/$b"; done
    printf '%s\n' "$stamp" > "$dest/.complete"
}
install_dir "$etcd_dir" etcd
install_dir "$k8s_dir" kube-apiserver kube-controller-manager kubectl
say "built in $((SECONDS - started))s (Go module and build caches: $("$go" env GOMODCACHE), $("$go" env GOCACHE)): $k8s_dir $etcd_dir"
