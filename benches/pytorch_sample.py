#!/usr/bin/env python3
"""nanoGPT's sample.py workload in PyTorch, as sample.py runs it: no KV cache (every step runs the
whole sequence, cropped to the block size), logits of the last position only, temperature, top-k,
torch.multinomial; samples one after another. GPT-2 124M shape with random weights (seed 0),
float32, CPU.

Usage: fixtures/.venv/bin/python benches/pytorch_sample.py [--threads 2] [--samples 10]
       [--tokens 500] [--top-k 200] [--temperature 0.8]
Prints per-sample seconds and total new tokens/s (JSON on the last line).
"""
import argparse
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--top-k", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    block = model.config.n_positions
    times = []
    with torch.no_grad():
        for s in range(a.samples):
            idx = torch.tensor([[198]])  # "\n", sample.py's default start
            t0 = time.perf_counter()
            for _ in range(a.tokens):
                cond = idx if idx.size(1) <= block else idx[:, -block:]
                h = model.transformer(cond).last_hidden_state[:, -1, :]
                logits = model.lm_head(h) / a.temperature
                v, _ = torch.topk(logits, min(a.top_k, logits.size(-1)))
                logits[logits < v[:, [-1]]] = -float("inf")
                nxt = torch.multinomial(torch.softmax(logits, dim=-1), num_samples=1)
                idx = torch.cat((idx, nxt), dim=1)
            times.append(time.perf_counter() - t0)
            print(f"sample {s}: {times[-1]:.1f} s", flush=True)
    total = sum(times)
    print(json.dumps({"samples": a.samples, "tokens_per_sample": a.tokens, "seconds": total,
                      "tokens_per_s": a.samples * a.tokens / total,
                      "seconds_per_sample": total / a.samples}))


if __name__ == "__main__":
    main()
