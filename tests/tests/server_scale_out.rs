//! End-to-end scale-out: `scripts/scale-out.sh` runs three `pagoda serve`
//! replicas behind the real `vllm-router` (PyPI) with `kv_aware` routing
//! fed by Pagoda's KV-cache events, then with `round_robin` and the
//! load-aware `power_of_two`. Shared-prefix follow-ups must all reach the
//! replica holding the prefix under kv_aware (and hit its cache),
//! unrelated concurrent traffic must spread over all three. Last, one
//! replica is SIGKILLed mid-load: no request may be lost (the router
//! retries them) and both survivors keep serving. Skips loudly without the
//! `vllm_router` package (CI installs it).

mod server_common;

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use server_common::{model_or_skip, pagoda_bin, python_imports};

#[test]
fn kv_aware_routing_sends_a_prefix_to_its_holder() {
    let Some(model) = model_or_skip("kv_aware_routing_sends_a_prefix_to_its_holder") else {
        return;
    };
    if !python_imports("vllm_router") {
        eprintln!(
            "\n*** SKIPPED kv_aware_routing_sends_a_prefix_to_its_holder: install the router \
             with `python3 -m pip install vllm-router==0.1.17`. ***\n"
        );
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(root.join("scripts/scale-out.sh"))
        .env("PAGODA_BIN", pagoda_bin())
        .env("PAGODA_SMOLLM2_GGUF", &model)
        .output()
        .expect("running scripts/scale-out.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scale-out.sh failed:\n{stdout}\n{stderr}"
    );
    let runs: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let run = |label: &str| {
        runs.iter()
            .find(|r| r["label"] == label)
            .unwrap_or_else(|| panic!("no {label} result in\n{stdout}\n{stderr}"))
    };
    let (kv, rr, p2) = (run("kv_aware"), run("round_robin"), run("power_of_two"));
    let numbers = |r: &Value, key: &str| -> Vec<f64> {
        r[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let holder = kv["holder"].as_u64().unwrap() as usize;
    let hits = numbers(kv, "follow_up_hits_per_replica");
    for (i, h) in hits.iter().enumerate() {
        assert_eq!(
            *h > 0.0,
            i == holder,
            "kv_aware follow-up hits {hits:?}, holder {holder}"
        );
    }
    let rate = |r: &Value| r["follow_up_hit_rate"].as_f64().unwrap();
    assert!(rate(kv) > 0.9, "{kv}");
    assert!(rate(kv) > rate(rr), "kv_aware {kv} vs round_robin {rr}");
    for r in [kv, p2] {
        let spread = numbers(r, "unrelated_prompt_tokens_per_replica");
        assert!(
            spread.iter().all(|&t| t > 0.0),
            "unrelated traffic not spread: {r}"
        );
    }

    let failover = run("failover");
    assert_eq!(failover["lost"], 0, "{failover}");
    assert!(
        numbers(failover, "served_by_survivors")
            .iter()
            .all(|&n| n > 0.0),
        "a survivor stopped serving: {failover}"
    );
    assert!(
        failover["router_retries"].as_f64().unwrap() > 0.0,
        "the kill never reached the router, so nothing was tested: {failover}"
    );
}
