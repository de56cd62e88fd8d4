#!/usr/bin/env bash
# Side-by-side decode/prefill benchmark: quill vs llama.cpp (llama-bench) vs PyTorch, on the same
# files, in one run. Nothing here is committed except this script; see BENCHMARKS.md.
#
# Needs: a release build of quill (cargo build --release), the fixture venv (fixtures/.venv with
# torch + transformers), llama.cpp built from the llama-cpp-python==0.3.36 sdist:
#   pip download --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36 -d DL
#   tar xzf DL/llama_cpp_python-0.3.36.tar.gz --wildcards --strip-components=2 -C LLAMA '*/vendor/llama.cpp/*'
#   cmake -S LLAMA/llama.cpp -B LLAMA/llama.cpp/build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
#         -DLLAMA_CURL=OFF && cmake --build LLAMA/llama.cpp/build --target llama-bench llama-quantize -j2
# Usage: benches/compare.sh LLAMA_CPP_DIR WORK_DIR [THREADS]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
llama="$1"; work="$2"; threads="${3:-2}"
py="$root/fixtures/.venv/bin/python"
quill="$root/target/release/quill"
bin="$llama/build/bin"
mkdir -p "$work"

# 1. A GPT-2 124M with random weights, as a Hugging Face folder (f32 safetensors).
if [ ! -f "$work/gpt2-rand/model.safetensors" ]; then
  "$py" - "$work/gpt2-rand" <<'PY'
import sys, torch
from transformers import GPT2Config, GPT2LMHeadModel
torch.manual_seed(0)
m = GPT2LMHeadModel(GPT2Config())
m.save_pretrained(sys.argv[1], safe_serialization=True)
import json, os
p = os.path.join(sys.argv[1], "config.json")
c = json.load(open(p)); c["n_ctx"] = c["n_positions"]  # llama.cpp's converter reads n_ctx
json.dump(c, open(p, "w"), indent=1)
PY
  cp "$root/fixtures/tokenizers/gpt2/vocab.json" "$root/fixtures/tokenizers/gpt2/merges.txt" \
     "$root/fixtures/tokenizers/gpt2/tokenizer.json" "$work/gpt2-rand/"
fi
# 2. GGUF at f32, f16 and bf16 (llama.cpp's converter), q8_0 / q4_0 / q4_1 (llama-quantize).
for t in f32 f16 bf16; do
  [ -f "$work/gpt2-$t.gguf" ] || PYTHONPATH="$llama/gguf-py" "$py" "$llama/convert_hf_to_gguf.py" \
      "$work/gpt2-rand" --outtype "$t" --outfile "$work/gpt2-$t.gguf" > /dev/null
done
for q in q8_0 q4_0 q4_1 q4_k_m q5_k_m; do
  [ -f "$work/gpt2-$q.gguf" ] || "$bin/llama-quantize" "$work/gpt2-f16.gguf" "$work/gpt2-$q.gguf" "$q" > /dev/null 2>&1
done
# 3. Measure, same files, same threads, same work: a 128-token prefill, and 64 tokens decoded
#    after a 128-token context (llama-bench's tg64 @ d128; quill decodes after its prefill).
#    llama.cpp's cache is f16 by default: quill's decode is measured with its exact f32 cache
#    and again with --kv-cache f16.
side_by_side() {
  local f="$1"
  "$bin/llama-bench" -m "$f" -p 128 -n 0 -t "$threads" -r 3 2>/dev/null | grep -E "pp128"
  "$bin/llama-bench" -m "$f" -p 0 -n 64 -d 128 -t "$threads" -r 3 2>/dev/null | grep -E "tg64"
  "$quill" --threads "$threads" bench -m "$f" --prompt-tokens 128 --gen-tokens 64 --batch 1,8 --reps 3 \
    | grep -E "read bandwidth|prefill|decode|batch|load time|peak RSS"
  "$quill" --threads "$threads" bench -m "$f" --prompt-tokens 128 --gen-tokens 64 --batch "" --reps 3 \
    --kv-cache f16 | grep -E "decode" | sed 's/^decode /decode (f16 KV)/'
}
for t in f32 f16 bf16 q8_0 q4_0 q4_1 q4_k_m q5_k_m; do
  echo "== $t"
  side_by_side "$work/gpt2-$t.gguf"
done
smol="${QUILL_SMOLLM2:-$root/target/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [ -f "$smol" ]; then
  echo "== SmolLM2-135M q4_1"
  side_by_side "$smol"
fi
echo "== quill, Hugging Face folder (f32 safetensors)"
"$quill" --threads "$threads" bench -m "$work/gpt2-rand" --prompt-tokens 128 --gen-tokens 64 --batch 1,8 --reps 3 \
  | grep -E "prefill|decode|batch"
echo "== PyTorch (same shape, random weights, f32)"
"$py" "$root/benches/pytorch_gpt2.py" --threads "$threads" --gen-tokens 32
# 4. nanoGPT's sample.py workload (10 samples x 500 tokens, top_k 200, temperature 0.8) on the
#    same GPT-2: quill batches the 10 samples; PyTorch runs sample.py's uncached loop, one sample
#    (SAMPLES to change; about 150 s each on this machine), scaled to 10.
echo "== sample.py workload"
mkdir -p "$work/md" && ln -sfn "$work/gpt2-rand" "$work/md/gpt2"
/usr/bin/time -f "quill sample: %e s wall, %M KB peak RSS" "$quill" --threads "$threads" sample \
  --init_from=gpt2 --models_dir="$work/md" --num_samples=10 --max_new_tokens=500 --top_k=200 \
  --temperature=0.8 > /dev/null
if [ "${SAMPLES:-1}" != 0 ]; then
  "$py" "$root/benches/pytorch_sample.py" --threads "$threads" --samples "${SAMPLES:-1}" --tokens 500 | tail -1
fi
