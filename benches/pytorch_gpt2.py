"""PyTorch baseline for BENCHMARKS.md: GPT-2 124M shape (random weights, float32, CPU).

Measures, with the same thread count as quill:
  - prefill: one forward over a 128-token prompt;
  - decode with KV cache (transformers GPT2LMHeadModel, past_key_values), greedy;
  - decode without KV cache, as nanoGPT's sample.py runs it (full forward over the sequence
    every step).
Run: fixtures/.venv/bin/python benches/pytorch_gpt2.py --threads 2
"""
import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def best(f, reps):
    out = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        out = min(out, time.perf_counter() - t0)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    prompt = torch.randint(0, 50257, (1, a.prompt_tokens))

    @torch.inference_mode()
    def prefill():
        model(prompt, use_cache=False)

    @torch.inference_mode()
    def decode_cached():
        out = model(prompt, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(a.gen_tokens):
            out = model(tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return time.perf_counter() - t0

    @torch.inference_mode()
    def decode_uncached():
        seq = prompt
        t0 = time.perf_counter()
        for _ in range(a.gen_tokens):
            logits = model(seq[:, -1024:], use_cache=False).logits
            seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=1)
        return time.perf_counter() - t0

    pre = best(prefill, a.reps)
    cached = min(decode_cached() for _ in range(a.reps))
    uncached = min(decode_uncached() for _ in range(a.reps))
    print(json.dumps({
        "torch": torch.__version__,
        "threads": a.threads,
        "prefill_tokens_per_s": a.prompt_tokens / pre,
        "decode_cached_tokens_per_s": a.gen_tokens / cached,
        "decode_uncached_tokens_per_s": a.gen_tokens / uncached,
    }, indent=1))


if __name__ == "__main__":
    main()
