#!/usr/bin/env bash
# Instructions a command costs imspd's own code, counted by callgrind: the
# same count for the same binary and input however busy the machine is
# (timings here vary 2x from day to day), so a change of a few percent
# shows. Kernel work (system calls, the network) is not counted: the
# timings of `cargo bench` are for that.
#
# One session under --inetd reads a file of commands: LOGIN, then N
# commands, LOGOUT; the count for N=0 is taken away, and what is left is
# divided by N. Needs valgrind and a release build:
#
#   cargo build --release && benches/instructions.sh [N]
#
# KEEP=1 leaves the callgrind files (for callgrind_annotate) and says where.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${IMSPD_BIN:-target/release/imspd}
N=${1:-2000}
command -v valgrind >/dev/null || { echo "valgrind is needed" >&2; exit 1; }
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release first" >&2; exit 1; }
WORK=$(mktemp -d)
if [ -n "${KEEP:-}" ]; then echo "callgrind files kept in $WORK" >&2; else trap 'rm -rf "$WORK"' EXIT; fi

# Journals on, fsync off, no quota: as `cargo bench` runs its
# fsync-off-journal mode.
options() {
  printf '%s\n' 'common.domain R example.org' 'imsp.admin.all N (admin)' \
    'imsp.create.new.users N +' 'imsp.db.fsync N -' 'imsp.db.journal N +' \
    'imsp.log.level N 1' 'imsp.user.quota R 0'
}

# count NAME N: instructions of a session running N commands of NAME.
count() {
  local d="$WORK/data.$1.$2" in="$WORK/in.$1.$2" out="$WORK/cg.$1.$2"
  mkdir -p "$d"
  options >"$d/options"
  echo benchpw | "$BIN" --data-dir "$d" passwd bench >/dev/null
  {
    printf 'a LOGIN bench benchpw\r\n'
    printf 'w STOREADDRESS bench "Warm up" email w@x\r\n'
    for ((i = 0; i < $2; i++)); do
      case $1 in
        setget) printf 'b SET bench.key v%d\r\nc GET bench.key*\r\n' "$i" ;;
        store) printf 'b STOREADDRESS bench "New %d" email new%d@example.org\r\n' "$i" "$i" ;;
      esac
    done
    printf 'z LOGOUT\r\n'
  } >"$in"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$BIN" --inetd --data-dir "$d" <"$in" >"$WORK/stdout" 2>"$WORK/stderr"
  grep -q '^z OK' "$WORK/stdout" || { echo "$1: the session failed" >&2; exit 1; }
  sed -n 's/^==[0-9]*== Collected : //p' "$WORK/stderr"
}

for what in setget store; do
  base=$(count "$what" 0)
  all=$(count "$what" "$N")
  case $what in
    setget) echo "SET+GET pair: $(((all - base) / N)) instructions" ;;
    store) echo "STOREADDRESS (one session, a book of up to $N entries): $(((all - base) / N)) instructions" ;;
  esac
done
