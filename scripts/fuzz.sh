#!/usr/bin/env bash
# Fuzz targets in fuzz/ (cargo-fuzz; stable Rust, so --sanitizer none, release build with debug
# assertions and overflow checks).
#
#   scripts/fuzz.sh --smoke                 build; replay fuzz/regressions; each target 5 s from
#                                           its seeds (copied into a temporary corpus)
#   scripts/fuzz.sh --seconds N [TARGET…]   build; replay fuzz/regressions; each target (default:
#                                           all) N s, corpus kept in fuzz/corpus/TARGET (ignored)
#   scripts/fuzz.sh --regressions [TARGET…] build; replay fuzz/regressions only
#
# Any crash, timeout (-timeout=10) or memory blow-up (-rss_limit_mb=2048) fails the script;
# crash inputs land in fuzz/artifacts/TARGET/ (ignored). Minimize one with
#   cargo fuzz tmin --sanitizer none --debug-assertions TARGET fuzz/artifacts/TARGET/crash-…
# and keep it as fuzz/regressions/TARGET/SHORT-NAME.
# Environment: FUZZ_NICE (default 10), FUZZ_ARGS (extra libFuzzer flags).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
ALL=(normalize policy_load http1_head chunked detect admission_review jwt)
LIBFUZZER_ARGS=(-rss_limit_mb=2048 -timeout=10)
NICE=(nice -n "${FUZZ_NICE:-10}")

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

mode=""
seconds=5
case "${1:-}" in
    --smoke) mode=smoke; shift ;;
    --seconds) mode=run; seconds=${2:?--seconds needs a number}; shift 2 ;;
    --regressions) mode=regressions; shift ;;
    *) usage ;;
esac
[[ "$seconds" =~ ^[0-9]+$ ]] || usage
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=("${ALL[@]}")
for t in "${targets[@]}"; do
    [[ -f fuzz/fuzz_targets/$t.rs ]] || { echo "fuzz.sh: no target $t" >&2; exit 2; }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

echo "== building ${targets[*]}"
for t in "${targets[@]}"; do
    "${NICE[@]}" cargo fuzz build --sanitizer none --debug-assertions "$t"
done
triple=$(rustc -vV | sed -n 's/^host: //p')
bin() { echo "$ROOT/fuzz/target/$triple/release/$1"; }

failed=()

echo "== regressions"
for t in "${targets[@]}"; do
    dir=fuzz/regressions/$t
    [[ -d $dir ]] || continue
    mapfile -t files < <(find "$dir" -type f | sort)
    [[ ${#files[@]} -gt 0 ]] || continue
    echo "-- $t: ${#files[@]} input(s)"
    for f in "${files[@]}"; do
        if ! "$(bin "$t")" "${LIBFUZZER_ARGS[@]}" "$f" >"/tmp/fuzz-regression.$$.log" 2>&1; then
            echo "FAIL $t $f:" >&2
            grep -v '^INFO\|^WARNING' "/tmp/fuzz-regression.$$.log" | head -20 >&2
            failed+=("$t:$f")
        fi
    done
done
rm -f "/tmp/fuzz-regression.$$.log"

if [[ $mode != regressions ]]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    for t in "${targets[@]}"; do
        if [[ $mode == smoke ]]; then
            corpus=$tmp/corpus/$t
        else
            corpus=fuzz/corpus/$t
        fi
        mkdir -p "$corpus" "fuzz/artifacts/$t"
        [[ -d fuzz/seeds/$t ]] && cp -n fuzz/seeds/$t/* "$corpus"/ 2>/dev/null || true
        log=fuzz/artifacts/$t/last-run.log
        echo "== $t: ${seconds}s, corpus $corpus, log $log"
        # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
        if "${NICE[@]}" "$(bin "$t")" "${LIBFUZZER_ARGS[@]}" -max_total_time="$seconds" \
            -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/" ${FUZZ_ARGS:-} \
            "$corpus" >"$log" 2>&1; then
            grep -E '^#[0-9]+' "$log" | tail -1
            grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log"
            echo "corpus: $(find "$corpus" -type f | wc -l) files"
        else
            grep -E -A12 "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written" "$log" | head -40 >&2
            echo "FAIL $t: see $log and fuzz/artifacts/$t/" >&2
            failed+=("$t")
        fi
    done
fi

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "== failed: ${failed[*]}" >&2
    exit 1
fi
echo "== ok"
