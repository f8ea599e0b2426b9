//! The deployment artefacts (`server/deploy/`) stay true to the binary:
//! every flag the Kubernetes Deployment and the Dockerfile pass exists in
//! `pagoda serve --help`, the ports agree, and a server started with the
//! manifest's arguments (model and ports swapped for the test's) answers
//! the probes and serves the metrics the Inference Extension's endpoint
//! picker scrapes. Nothing here needs Docker or a cluster, which the
//! project's machines do not have.

mod server_common;

use std::path::Path;
use std::process::Command;

use server_common::{
    free_port, model_or_skip, pagoda_bin, set_flag, small_server_args, TestServer,
};

fn deploy_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../server/deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The container's `args:` list of the Deployment, unquoted.
fn manifest_args(yaml: &str) -> Vec<String> {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "args:").skip(1);
    let mut args = Vec::new();
    for line in lines.by_ref() {
        let Some(item) = line.trim().strip_prefix("- ") else {
            break;
        };
        let item = item.trim();
        let unquoted = item
            .strip_prefix('\'')
            .and_then(|s| s.strip_suffix('\''))
            .or_else(|| item.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            .unwrap_or(item);
        args.push(unquoted.to_string());
    }
    args
}

fn serve_help() -> String {
    let out = Command::new(pagoda_bin())
        .args(["serve", "--help"])
        .output()
        .expect("running pagoda serve --help");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn manifests_and_dockerfile_use_real_flags_and_ports() {
    let help = serve_help();
    let yaml = deploy_file("kubernetes/pagoda.yaml");
    let args = manifest_args(&yaml);
    assert!(args.len() >= 8, "args not found in pagoda.yaml: {args:?}");
    let dockerfile = deploy_file("Dockerfile");
    let entrypoint: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("ENTRYPOINT"))
        .flat_map(|l| l.split('"'))
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(
        !entrypoint.is_empty(),
        "no ENTRYPOINT flags in the Dockerfile"
    );
    for flag in args
        .iter()
        .map(String::as_str)
        .filter(|a| a.starts_with("--"))
        .chain(entrypoint)
    {
        assert!(
            help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
            "{flag} is not a `pagoda serve` flag"
        );
    }
    for port in ["8000", "5557", "5558"] {
        assert!(
            dockerfile.contains(port) && yaml.contains(port),
            "port {port}"
        );
    }
    assert!(dockerfile.contains("-p pagoda-cli"), "the binary's package");
    let pool = deploy_file("kubernetes/inference-pool.yaml");
    assert!(pool.contains("app: pagoda") && pool.contains("number: 8000"));
}

#[test]
fn a_server_with_the_manifest_s_args_answers_the_probes() {
    let Some(model) = model_or_skip("a_server_with_the_manifest_s_args_answers_the_probes") else {
        return;
    };
    let mut args = manifest_args(&deploy_file("kubernetes/pagoda.yaml"));
    let swap = |args: &mut Vec<String>, flag: &str, value: String| {
        let i = args.iter().position(|a| a == flag).expect(flag);
        args[i + 1] = value;
    };
    swap(&mut args, "--model", model.display().to_string());
    swap(&mut args, "--device", "cpu".into());
    let kv = args.iter().position(|a| a == "--kv-events-config").unwrap() + 1;
    args[kv] = args[kv]
        .replace("5557", &free_port().to_string())
        .replace("5558", &free_port().to_string());
    // Small enough for the test machine; the manifest's own sizes stay.
    let small = small_server_args(&model);
    for pair in small[4..].chunks(2) {
        set_flag(&mut args, &pair[0], &pair[1]);
    }
    let server = TestServer::start(&args, &[]);
    let (status, _) = server.get("/health");
    assert_eq!(status, 200);
    let metrics = server.metrics();
    for name in [
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:cache_config_info",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(
        server.log().contains("Publishing KV-cache events"),
        "{}",
        server.log()
    );
}
