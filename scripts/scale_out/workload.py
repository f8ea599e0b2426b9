"""Traffic for scripts/scale-out.sh: shared-prefix and unrelated requests
through a router, read back from each replica's vLLM-named metrics.

usage: workload.py ROUTER_URL REPLICA_URL... --label NAME --seed N
Prints one JSON line with per-replica prefix-cache hits and prompt tokens.
"""

import argparse
import concurrent.futures as cf
import json
import random
import time
import urllib.request


def post(url, body):
    req = urllib.request.Request(
        url + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def metric(url, name):
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def snapshot(replicas):
    return [
        {
            "hits": metric(u, "vllm:prefix_cache_hits_total"),
            "queries": metric(u, "vllm:prefix_cache_queries_total"),
            "prompt_tokens": metric(u, "vllm:prompt_tokens_total"),
        }
        for u in replicas
    ]


def delta(after, before):
    return [{k: a[k] - b[k] for k in a} for a, b in zip(after, before)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("router")
    ap.add_argument("replicas", nargs="+")
    ap.add_argument("--label", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--follow-ups", type=int, default=6)
    ap.add_argument("--unrelated", type=int, default=12)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]

    # A long shared prefix (a system prompt with documents), new per run so
    # earlier runs' caches do not help.
    prefix = f"Session {a.seed}. " + " ".join(
        f"Fact {i}: {rng.choice(words)} {rng.randint(0, 999)}." for i in range(90)
    )
    s0 = snapshot(a.replicas)
    post(a.router, {"model": "smol", "prompt": prefix + " Q: first?", "max_tokens": 2, "temperature": 0})
    time.sleep(0.5)  # the events reach the router
    s1 = snapshot(a.replicas)
    t = time.time()
    for q in range(a.follow_ups):
        post(a.router, {"model": "smol", "prompt": prefix + f" Q: number {q}?", "max_tokens": 2, "temperature": 0})
    follow_up_s = (time.time() - t) / a.follow_ups
    s2 = snapshot(a.replicas)

    prompts = [" ".join(rng.choice(words) for _ in range(100)) for _ in range(a.unrelated)]
    with cf.ThreadPoolExecutor(a.unrelated) as ex:
        list(ex.map(lambda p: post(a.router, {"model": "smol", "prompt": p, "max_tokens": 16, "temperature": 0}), prompts))
    s3 = snapshot(a.replicas)

    first = delta(s1, s0)
    follow = delta(s2, s1)
    holder = max(range(len(first)), key=lambda i: first[i]["prompt_tokens"])
    hits = sum(r["hits"] for r in follow)
    queries = sum(r["queries"] for r in follow)
    print(json.dumps({
        "label": a.label,
        "holder": holder,
        "follow_up_hits_per_replica": [r["hits"] for r in follow],
        "follow_up_hit_rate": round(hits / queries, 3) if queries else 0.0,
        "follow_up_mean_latency_s": round(follow_up_s, 3),
        "unrelated_prompt_tokens_per_replica": [r["prompt_tokens"] for r in delta(s3, s2)],
    }))


if __name__ == "__main__":
    main()
