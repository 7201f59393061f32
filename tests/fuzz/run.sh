#!/usr/bin/env bash
# Fuzzes the server's request decoding with libFuzzer for a bounded time
# (default 60 s). Needs cargo-fuzz (`cargo install cargo-fuzz`). The
# machine's stable toolchain builds it with RUSTC_BOOTSTRAP=1, which lets
# stable rustc take the sanitizer flags cargo fuzz passes. A crash is saved
# under tests/fuzz/artifacts/; add its input as a case to
# tests/server_fuzz.rs before fixing it.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${1:-60}"
RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz decode_put -- \
    -max_total_time="$seconds" -max_len=4096
