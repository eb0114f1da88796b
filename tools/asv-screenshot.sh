#!/usr/bin/env bash
# Screenshot one graph of an `asv publish` site with headless Chromium, offline.
#
# Usage: tools/asv-screenshot.sh [HTML_DIR] [OUT_PNG] [BENCHMARK]
#   HTML_DIR   asv's html_dir, made offline by `npo-bench publish` (default .asv/html)
#   OUT_PNG    where to write the screenshot (default asv-graph.png)
#   BENCHMARK  benchmark whose graph to show, e.g. bench_solvers.SolveTime.time_solve
#              (default: that one if it was published, else the first in graphs/summary/);
#              any fragment of asv's URLs works: 'summarylist', 'regressions',
#              'bench_solvers.SolveTime.time_solve?x-axis=method&n=32' ...
#
# The site is served by `python3 -m http.server` on 127.0.0.1 (asv's pages fetch
# their JSON with XHR, which file:// pages may not do), on a port the kernel picks.
# Chromium is told to resolve no host but 127.0.0.1, so a page that still
# needed a CDN would render blank (or asv's error page) here too. Requests the
# server answered with 404 are listed on stderr, and if the page fell back to
# asv's error.html (a script failed to load) the script fails. Needs Debian's chromium
# package; installs it with apt-get if it is missing (as root).
set -euo pipefail

html_dir=${1:-.asv/html}
out=${2:-asv-graph.png}
bench=${3:-}
python=${PYTHON:-python3}

if [[ ! -f $html_dir/index.html ]]; then
  echo "asv-screenshot: no $html_dir/index.html; run npo-bench publish first" >&2
  exit 2
fi
if [[ -z $bench ]]; then
  if [[ -f $html_dir/graphs/summary/bench_solvers.SolveTime.time_solve.json ]]; then
    bench=bench_solvers.SolveTime.time_solve
  else
    first=
    if [[ -d $html_dir/graphs/summary ]]; then
      first=$(find "$html_dir/graphs/summary" -maxdepth 1 -name '*.json' | sort | head -n 1)
    fi
    if [[ -z $first ]]; then
      echo "asv-screenshot: $html_dir/graphs/summary/ has no graph; did asv publish find results?" >&2
      exit 2
    fi
    bench=$(basename "$first" .json)
  fi
fi

if ! command -v chromium >/dev/null 2>&1; then
  echo "asv-screenshot: installing Debian's chromium" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

out=$(realpath -m "$out")
mkdir -p "$(dirname "$out")"
tmp=$(mktemp -d)
server_pid=
cleanup() {
  if [[ -n $server_pid ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Port 0: the kernel picks a free port; http.server prints which one.
"$python" -u -m http.server --bind 127.0.0.1 --directory "$html_dir" 0 >"$tmp/server.log" 2>&1 &
server_pid=$!
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.* port \([0-9][0-9]*\) .*/\1/p' "$tmp/server.log" | head -n 1)
  [[ -n $port ]] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then
    cat "$tmp/server.log" >&2
    echo "asv-screenshot: http.server exited" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z $port ]]; then
  echo "asv-screenshot: http.server did not report its port within 10 s" >&2
  exit 1
fi

url="http://127.0.0.1:$port/index.html#$bench"
echo "asv-screenshot: $url -> $out" >&2
rm -f "$out"
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --no-first-run --hide-scrollbars \
  --user-data-dir="$tmp/profile" \
  --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
  --virtual-time-budget=10000 --window-size=1400,900 \
  --screenshot="$out" "$url" >"$tmp/chromium.log" 2>&1 || {
  tail -n 20 "$tmp/chromium.log" >&2
  echo "asv-screenshot: chromium failed" >&2
  exit 1
}
if [[ ! -s $out ]]; then
  tail -n 20 "$tmp/chromium.log" >&2
  echo "asv-screenshot: chromium wrote no screenshot" >&2
  exit 1
fi

if grep -q '"GET /error.html' "$tmp/server.log"; then
  echo "asv-screenshot: the page went to asv's error.html: a script failed to load" >&2
  grep '"GET ' "$tmp/server.log" | grep -v '" 200 ' >&2 || true
  exit 1
fi
requests=$(grep -c '"GET ' "$tmp/server.log" || true)
missing=$(grep '"GET [^"]*" 404' "$tmp/server.log" || true)
echo "asv-screenshot: the page made $requests request(s) to the local server" >&2
if [[ -n $missing ]]; then
  echo "asv-screenshot: answered 404:" >&2
  echo "$missing" >&2
fi
echo "$out"
