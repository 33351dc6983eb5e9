#!/bin/bash
# What a fleet's idle polls cost (issue 14): bytes on the wire and requests
# per poll when nothing changed, for `slate channel fetch` (the device's
# poll) against python-tuf's ngclient (the reference client) refreshing the
# same repository, both served by nginx on 127.0.0.1 and counted from its
# access log. Also the first poll (nothing trusted yet beyond the root).
#
#   scripts/bench-channel-poll.sh [N]   (default N=10 idle polls each;
#                                        SLATE=BIN skips cargo, TUF_PYTHON=python
#                                        with PyPI tuf, default target/tuf-venv)
set -euo pipefail
export LC_ALL=C
prog=bench-channel-poll.sh
die() {
    echo "$prog: $*" >&2
    exit 1
}
polls=${1:-10}
cd "$(dirname "$0")/.."
[ -x /usr/sbin/nginx ] || die "nginx is not installed (Debian: nginx)"
py=${TUF_PYTHON:-$PWD/target/tuf-venv/bin/python}
"$py" -c 'import tuf.ngclient, cryptography' 2>/dev/null ||
    die "$py lacks PyPI tuf and cryptography (python3 -m venv target/tuf-venv && target/tuf-venv/bin/pip install tuf cryptography)"
if [ -z "${SLATE:-}" ]; then
    cargo build -q
    SLATE=$PWD/target/debug/slate
fi
work=$(mktemp -d "${TMPDIR:-/var/tmp}/slate-bench-channel.XXXXXX")
nginx_pid=
cleanup() {
    [ -z "$nginx_pid" ] || kill "$nginx_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# A small build directory and its bundle (the payload does not matter here).
mkdir -p "$work/build" "$work/web" "$work/ngx"
head -c 1048576 /dev/urandom >"$work/build/rootfs.ext4"
python3 - "$work/build" <<'EOF'
import hashlib, json, os, sys
d = sys.argv[1]
f = os.path.join(d, "rootfs.ext4")
m = {"format": 1, "name": "bench", "version": "2.0.0", "compatible": "bench-x86_64",
     "security_version": 1, "source_date_epoch": 1700000000,
     "artifacts": [{"name": "rootfs", "file": "rootfs.ext4", "size": os.path.getsize(f),
                    "sha256": hashlib.sha256(open(f, "rb").read()).hexdigest(), "verity": None}],
     "disk": None, "layout": None, "packages": []}
open(os.path.join(d, "manifest.json"), "w").write(json.dumps(m, indent=2) + "\n")
EOF
"$SLATE" keygen "$work/bundle" >/dev/null
"$SLATE" bundle "$work/build" --key "$work/bundle.key" -o "$work/v2.slate" -q >/dev/null
"$SLATE" channel init "$work/web/repo" --keys "$work/keys" >/dev/null
"$SLATE" channel publish "$work/web/repo" "$work/v2.slate" --keys "$work/keys" --channel stable >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/ngx/nginx.conf" <<EOF
$( [ "$(id -u)" = 0 ] && echo 'user root;' )
worker_processes 1;
pid $work/ngx/nginx.pid;
error_log $work/ngx/error.log;
events { worker_connections 64; }
http {
    log_format bench '\$status \$bytes_sent \$request_length';
    access_log $work/ngx/access.log bench;
    client_body_temp_path $work/ngx/body;
    proxy_temp_path $work/ngx/proxy;
    fastcgi_temp_path $work/ngx/fastcgi;
    uwsgi_temp_path $work/ngx/uwsgi;
    scgi_temp_path $work/ngx/scgi;
    server { listen 127.0.0.1:$port; root $work/web; }
}
EOF
/usr/sbin/nginx -c "$work/ngx/nginx.conf" -p "$work/ngx" -e "$work/ngx/error.log" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
url=http://127.0.0.1:$port/repo
root=$work/web/repo/metadata/1.root.json
log=$work/ngx/access.log

# Totals of the access log since the last reset: requests, bytes sent
# (headers and body), bytes received (request lines and headers).
totals() { awk '{n++; s+=$2; r+=$3} END {printf "%d %d %d\n", n, s, r}' "$log"; }
reset() { : >"$log"; }

slate_poll() {
    "$SLATE" channel fetch "$url" --root "$root" --compatible bench-x86_64 --version 2.0.0 \
        --state "$work/slate-state" --json >/dev/null
}
tuf_poll() {
    "$py" - "$url" "$root" "$work/tuf-state" <<'EOF' >/dev/null
import os, sys
from tuf.ngclient import Updater
url, root, d = sys.argv[1:]
os.makedirs(d, exist_ok=True)
boot = None if os.path.exists(os.path.join(d, "root.json")) else open(root, "rb").read()
Updater(d, url + "/metadata/", bootstrap=boot).refresh()
EOF
}

measure() { # NAME FUNCTION
    reset
    "$2"
    read -r fn fs fr < <(totals)
    reset
    for _ in $(seq "$polls"); do "$2"; done
    read -r n s r < <(totals)
    printf '%-28s first poll: %2d requests %6d B down | idle poll: %.1f requests %6.0f B down %5.0f B up\n' \
        "$1" "$fn" "$fs" "$(echo "$n / $polls" | bc -l)" "$(echo "$s / $polls" | bc -l)" "$(echo "$r / $polls" | bc -l)"
    echo "$s $r" >"$work/$1.idle"
}
echo "idle polls: $polls each, nginx $(/usr/sbin/nginx -v 2>&1 | sed 's/.*\///'), $(nproc) cores, $(date -u +%F)"
measure slate slate_poll
measure python-tuf tuf_poll
read -r ss sr <"$work/slate.idle"
read -r ts tr <"$work/python-tuf.idle"
printf 'ratio slate / python-tuf, idle poll bytes on the wire (down + up): %.2fx\n' \
    "$(echo "($ss + $sr) / ($ts + $tr)" | bc -l)"
