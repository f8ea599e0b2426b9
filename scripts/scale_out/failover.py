"""Kill one replica behind the router while requests are in flight, for
scripts/scale-out.sh: every request must still get its answer (the router
retries the ones that hit the dead replica) and the survivors keep serving.

usage: failover.py ROUTER_URL REPLICA_URL... --kill-pid PID --victim URL
                   [--router-metrics URL]
Prints one JSON line; exits non-zero if any request was lost.
"""

import argparse
import concurrent.futures as cf
import json
import os
import random
import signal
import threading
import time
import urllib.error
import urllib.request

from workload import post  # same folder: scripts/scale_out/


def successes(url):
    """Finished requests a replica has counted (all finish reasons)."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def router_retries(url):
    """The router's own count of retried requests (vllm_router_retries_total)."""
    text = urllib.request.urlopen(url + "/metrics", timeout=30).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm_router_retries_total")
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("router")
    ap.add_argument("replicas", nargs="+")
    ap.add_argument("--kill-pid", type=int, required=True)
    ap.add_argument("--victim", required=True, help="URL of the replica that is killed")
    ap.add_argument("--requests", type=int, default=36)
    ap.add_argument("--concurrency", type=int, default=9)
    ap.add_argument("--kill-after", type=int, default=6, help="kill once this many requests finished")
    ap.add_argument("--after", type=int, default=9, help="requests sent once the victim is gone")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--router-metrics", help="the router's Prometheus URL, to count its retries")
    a = ap.parse_args()
    rng = random.Random(a.seed)
    words = ["north", "south", "river", "stone", "cloud", "ember", "frost", "grove"]
    survivors = [u for u in a.replicas if u != a.victim]
    before = {u: successes(u) for u in survivors}

    done = 0
    killed_at = None
    lock = threading.Lock()

    def one(i):
        nonlocal done, killed_at
        prompt = " ".join(rng.choice(words) for _ in range(60)) + f" #{i}"
        body = {"model": "smol", "prompt": prompt, "max_tokens": 24, "temperature": 0, "ignore_eos": True}
        t = time.time()
        try:
            out = post(a.router, body)
            ok = out["usage"]["completion_tokens"] == 24
            err = None if ok else f"short answer: {out['usage']}"
        except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
            ok, err = False, f"{type(e).__name__}: {e}"
        with lock:
            done += 1
            if done == a.kill_after and killed_at is None:
                os.kill(a.kill_pid, signal.SIGKILL)
                killed_at = time.time()
        return {"ok": ok, "error": err, "latency_s": time.time() - t}

    t0 = time.time()
    with cf.ThreadPoolExecutor(a.concurrency) as ex:
        during = list(ex.map(one, range(a.requests)))
    # The victim is gone now: what follows must all land on the survivors.
    with cf.ThreadPoolExecutor(a.concurrency) as ex:
        after = list(ex.map(one, range(a.requests, a.requests + a.after)))
    wall = time.time() - t0
    served = {u: successes(u) - before[u] for u in survivors}
    results = during + after
    lost = [r["error"] for r in results if not r["ok"]]
    print(json.dumps({
        "label": "failover",
        "requests": len(results),
        "lost": len(lost),
        "errors": lost[:5],
        "killed_after_s": round(killed_at - t0, 2) if killed_at else None,
        "max_latency_s": round(max(r["latency_s"] for r in results), 2),
        "wall_s": round(wall, 2),
        "served_by_survivors": [served[u] for u in survivors],
        "router_retries": router_retries(a.router_metrics) if a.router_metrics else None,
    }))
    raise SystemExit(1 if lost or killed_at is None else 0)


if __name__ == "__main__":
    main()
