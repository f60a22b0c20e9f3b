#!/usr/bin/env bash
# Code size of the update core on the host (x86_64), the method the README reports:
# `size` of `core_size` minus `core_size_baseline` (the same shell without the core), and the
# per-crate sum of symbol sizes from `nm`. Built with opt-level "s" and curve25519-dalek's
# portable (serial) backend, the configuration an MCU build uses; a separate target directory
# keeps these flags away from the workspace's normal builds.
set -euo pipefail
cd "$(dirname "$0")/../../.."
target=${SIZE_TARGET_DIR:-target/firmware-size}
CARGO_PROFILE_RELEASE_OPT_LEVEL=s CARGO_PROFILE_RELEASE_DEBUG=false \
RUSTFLAGS='--cfg curve25519_dalek_backend="serial"' \
  cargo build --release --locked -q -p swell-firmware \
  --example core_size --example core_size_baseline --target-dir "$target"
bin=$target/release/examples
size "$bin/core_size" "$bin/core_size_baseline"
echo "per crate, text and read-only data symbols in core_size (bytes):"
nm -C -S --size-sort "$bin/core_size" | awk '
  $3 ~ /^[tTrR]$/ {
    size = strtonum("0x" $2); name = $0
    crate = "other"
    if (name ~ /swell_firmware/) crate = "swell_firmware"
    else if (name ~ /curve25519_dalek/) crate = "curve25519_dalek"
    else if (name ~ /ed25519/) crate = "ed25519(-dalek)"
    else if (name ~ /sha2::/) crate = "sha2"
    sum[crate] += size
  }
  END { for (c in sum) if (c != "other") printf "  %-18s %7d\n", c, sum[c] }' | sort
