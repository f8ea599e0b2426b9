"""Builds gpu-check.md from the step results in OUT: the kernel tests'
status, generation agreement, throughput, decode step time at each batch
beside the HBM roofline (weight bytes + KV bytes read per step, over the
measured copy bandwidth). Usage: report.py OUT CONFIG_JSON INPUT_LEN OUTPUT_LEN"""
import json
import os
import sys

out, config_path, input_len, output_len = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])


def read(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def status(step):
    try:
        with open(os.path.join(out, f"{step}.status")) as f:
            return f.read().strip()
    except OSError:
        return "not run"


cfg = json.load(open(config_path))
h, L, v, inter = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["intermediate_size"]
heads, kvh = cfg["num_attention_heads"], cfg["num_key_value_heads"]
hd = cfg.get("head_dim", h // heads)
layer = h * heads * hd + 2 * h * kvh * hd + heads * hd * h + 3 * h * inter + 2 * h
# Read per decode step: every layer, the final norm and lm_head (not the embedding table).
weight_bytes = 2 * (L * layer + h + v * h)
kv_per_token = 2 * L * kvh * hd * 2
bw = read("bandwidth.json")
bw_gbps = bw["copy_gbps"] if bw else None

lines = ["# Pagoda GPU check", ""]
if bw:
    lines.append(f"Device: {bw['device']}; device-to-device copy {bw_gbps:.0f} GB/s (read + write).")
lines += ["", "| check | result |", "| --- | --- |"]
lines.append(f"| NVRTC compile (sm_90, sm_80) | {status('nvrtc')} |")
lines.append(f"| kernels vs CPU | {status('kernels')} |")
gen = read("generate.json")
if gen and "prompts" in gen:
    firsts = [r["first_difference"] for r in gen["rows"] if not r["identical"]]
    detail = f"; first differences at token {firsts}" if firsts else ""
    lines.append(f"| generate cuda vs cpu ({status('generate')}) | {gen['identical']}/{gen['prompts']} prompts identical over 32 tokens{detail} |")
else:
    lines.append(f"| generate cuda vs cpu | {status('generate')} |")
ge = read("graphs_vs_eager.json")
if ge and "prompts" in ge:
    firsts = [r["first_difference"] for r in ge["rows"] if not r["identical"]]
    detail = f"; first differences at token {firsts}" if firsts else ""
    lines.append(f"| CUDA graphs vs --enforce-eager ({status('graphs_vs_eager')}) | {ge['identical']}/{ge['prompts']} prompts identical over 32 tokens{detail} |")
else:
    lines.append(f"| CUDA graphs vs --enforce-eager | {status('graphs_vs_eager')} |")
tp = read("throughput.json")
if tp:
    lines.append(f"| bench throughput, Llama-3-8B shape, 256 x (256 in, 256 out) | {tp['tokens_per_second']:.0f} total tok/s, {tp['output_tokens_per_second']:.0f} output tok/s (target 15000 total) |")
else:
    lines.append(f"| bench throughput | {status('throughput')} |")
lines += ["", "| decode batch | step ms | roofline ms | roofline / step | avg context |", "| --- | --- | --- | --- | --- |"]
ctx = input_len + output_len / 2
for b, name in ((1, "1_eager"), (1, "1"), (32, "32"), (256, "256")):
    lat = read(f"latency_b{name}.json")
    step = lat.get("mean_decode_step_ms") if lat else None
    if bw_gbps:
        roof = (weight_bytes + b * ctx * kv_per_token) / (bw_gbps * 1e9) * 1e3
        roof_s = f"{roof:.2f}"
    else:
        roof, roof_s = None, "n/a"
    if step:
        ratio = f"{roof / step:.0%}" if roof else "n/a"
        lines.append(f"| {name.replace('_', ' ')} | {step:.2f} | {roof_s} | {ratio} | {ctx:.0f} |")
    else:
        lines.append(f"| {name.replace('_', ' ')} | {status(f'latency_b{name}')} | {roof_s} | | {ctx:.0f} |")
lines += ["", f"Weights read per step: {weight_bytes / 1e9:.2f} GB; KV cache {kv_per_token / 1024:.0f} KiB per token."]
text = "\n".join(lines) + "\n"
open(os.path.join(out, "gpu-check.md"), "w").write(text)
print(text)
