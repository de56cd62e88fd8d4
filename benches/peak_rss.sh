#!/usr/bin/env bash
# Peak resident memory of `quill bench` for one or two quill binaries on the same model files,
# alternated, two runs each. Binaries and files are first evicted from the page cache and
# warmed by one small run, so every binary's code is read the same way: a binary freshly
# written by `cp` sits in the page cache in large folios, and the kernel maps whole folios
# around each code fault, which shows as more code resident than a cold read gives.
#
# usage: benches/peak_rss.sh QUILL_A [QUILL_B] -- MODEL.gguf...
set -euo pipefail
bins=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do bins+=("$1"); shift; done
[ $# -gt 0 ] && shift
[ ${#bins[@]} -ge 1 ] && [ $# -ge 1 ] || { echo "usage: $0 QUILL_A [QUILL_B] -- MODEL..." >&2; exit 2; }
evict() {
  python3 -c '
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
' "$@"
}
for f in "$@"; do
  evict "${bins[@]}" "$f"
  for b in "${bins[@]}"; do
    "$b" --threads 2 bench -m "$f" --prompt-tokens 16 --gen-tokens 4 --batch "" --reps 1 > /dev/null
  done
  for _ in 1 2; do
    for b in "${bins[@]}"; do
      rss=$("$b" --threads 2 bench -m "$f" --prompt-tokens 128 --gen-tokens 64 --batch 1,8 --reps 1 \
        | sed -n 's/^peak RSS *//p')
      echo "$(basename "$f")  $b  $rss"
    done
  done
done
