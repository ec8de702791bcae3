#!/usr/bin/env bash
# compare.sh SUMMARY.json SUMMARY.json...
# Exits 0 when every summary passed and all agree outside "timing" and
# "asynq_version" (the only fields allowed to differ between a direct run,
# a proxied run, or runs at different asynq versions); otherwise prints
# the differing fields against the first file and exits 1.
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 SUMMARY.json SUMMARY.json..." >&2; exit 2; }
exec python3 - "$@" <<'PY'
import json, sys

def flatten(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix, value

def load(path):
    with open(path) as f:
        summary = json.load(f)
    ok = summary.get("ok") is True
    summary.pop("timing", None)
    summary.pop("asynq_version", None)
    return ok, dict(flatten(summary))

paths = sys.argv[1:]
status = 0
base_ok, base = load(paths[0])
if not base_ok:
    print(f"{paths[0]}: ok is not true", file=sys.stderr)
    status = 1
for path in paths[1:]:
    ok, other = load(path)
    if not ok:
        print(f"{path}: ok is not true", file=sys.stderr)
        status = 1
    for key in sorted(set(base) | set(other)):
        if base.get(key) != other.get(key):
            print(f"{path}: {key} = {other.get(key)!r}, {paths[0]} has {base.get(key)!r}", file=sys.stderr)
            status = 1
sys.exit(status)
PY
