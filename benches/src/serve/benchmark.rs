//! The run itself, as `vllm bench serve` does it: resolve the model and a
//! tokenizer, build the dataset, send the requests on the arrival schedule
//! (at most `--max-concurrency` in flight), then compute, print and save.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::StdRng, SeedableRng};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::args::{parse_key_values, ServeArgs};
use super::arrivals::arrival_times;
use super::client::{send_request, EndpointKind, RequestFuncInput};
use super::dataset::{
    load_sharegpt, sample_random_requests, sample_sharegpt_requests, RandomDatasetConfig,
    SampleRequest,
};
use super::metrics::{calculate_metrics, GoodputConfig, RequestFuncOutput};
use super::report::{result_path, BenchmarkResult, ResultHeader};
use super::tokenizer::{PromptTokenizer, TextTokenizer};

/// Runs the benchmark and returns the result JSON (also saved with --save-result).
pub async fn run_benchmark(args: &ServeArgs) -> anyhow::Result<Value> {
    validate(args)?;
    let target = Target::resolve(args).await?;
    let (tokenizer, tokenizer_id) = resolve_tokenizer(args, &target).await?;
    let input_requests = sample_requests(args, &tokenizer).await?;
    print_dataset_summary(&input_requests, &tokenizer);
    let inputs = request_inputs(args, &target, &input_requests)?;
    let goodput = GoodputConfig::parse(&args.goodput)?;
    let selected_percentiles = args.selected_percentiles()?;
    print_traffic(args);

    let (outputs, duration) = benchmark_requests(args, &target, &tokenizer, inputs).await?;
    let (metrics, actual_output_lens) =
        calculate_metrics(&outputs, duration, &selected_percentiles, &goodput);
    report_failures(&outputs);
    let result = BenchmarkResult {
        metrics,
        actual_output_lens,
        outputs,
        duration,
        max_concurrency: args.max_concurrency,
        request_rate: args.request_rate,
        goodput_enabled: !goodput.is_empty(),
        selected_metrics: args.selected_metrics()?,
    };
    print!("{}", result.format_table());
    let header = ResultHeader {
        date: chrono::Local::now().format("%Y%m%d-%H%M%S").to_string(),
        backend: target.backend,
        label: args.label.clone(),
        model_id: target.model_id,
        tokenizer_id,
        num_prompts: args.num_prompts,
        request_rate: args.request_rate,
        burstiness: args.burstiness,
        max_concurrency: args.max_concurrency,
        metadata: parse_key_values(&args.metadata, "--metadata")?,
    };
    let json = Value::Object(result.to_json(&header));
    if args.save_result {
        save_result(args, &header, &json)?;
    }
    Ok(json)
}

/// The server side of the run, settled once before any request: endpoint,
/// client, key and model, so every request is built from the same values.
struct Target {
    kind: EndpointKind,
    /// vLLM's backend name, recorded in the result.
    backend: String,
    api_url: String,
    api_key: Option<String>,
    client: reqwest::Client,
    base_url: String,
    /// Sent in the request bodies.
    model_name: String,
    /// Recorded in the result and its file name.
    model_id: String,
}

impl Target {
    /// Resolves the endpoint kind from --backend or --endpoint, and the
    /// model from --model or, as vLLM does, the server's first model.
    async fn resolve(args: &ServeArgs) -> anyhow::Result<Self> {
        let (base_url, api_url) = args.urls();
        let kind = match args.backend.as_deref() {
            Some("openai-chat") | Some("vllm-chat") => EndpointKind::ChatCompletions,
            Some(_) => EndpointKind::Completions,
            None => EndpointKind::from_endpoint(&args.endpoint),
        };
        let backend = args
            .backend
            .clone()
            .unwrap_or_else(|| kind.backend_name().to_string());
        let api_key = std::env::var("OPENAI_API_KEY")
            .ok()
            .filter(|k| !k.is_empty());
        let client = http_client(args)?;
        let (model_name, model_id) = match &args.model {
            Some(model) => (
                args.served_model_name
                    .clone()
                    .unwrap_or_else(|| model.clone()),
                model.clone(),
            ),
            None => {
                println!("Model not specified, fetching first model from server...");
                let (name, id) = first_model(&client, &base_url, api_key.as_deref()).await?;
                println!("First model name: {name}, first model id: {id}");
                (args.served_model_name.clone().unwrap_or(name), id)
            }
        };
        Ok(Self {
            kind,
            backend,
            api_url,
            api_key,
            client,
            base_url,
            model_name,
            model_id,
        })
    }
}

/// The tokenizer that counts prompt and output tokens (--tokenizer, else the
/// server's), and the id recorded for it in the result.
async fn resolve_tokenizer(
    args: &ServeArgs,
    target: &Target,
) -> anyhow::Result<(PromptTokenizer, String)> {
    let tokenizer = PromptTokenizer::resolve(
        args.tokenizer.as_deref(),
        target.client.clone(),
        &target.base_url,
        &target.model_name,
        target.api_key.clone(),
    )
    .await?;
    println!("Counting tokens with {}", tokenizer.describe());
    let tokenizer_id = match &args.tokenizer {
        Some(path) if matches!(tokenizer, PromptTokenizer::Local { .. }) => {
            path.display().to_string()
        }
        _ => target.model_id.clone(),
    };
    Ok((tokenizer, tokenizer_id))
}

/// Prints the dataset's token totals, and warns before the run (not after
/// it) when requests cannot fit the server's context.
fn print_dataset_summary(input_requests: &[SampleRequest], tokenizer: &PromptTokenizer) {
    println!(
        "#Input tokens: {}",
        input_requests.iter().map(|r| r.prompt_len).sum::<usize>()
    );
    println!(
        "#Output tokens: {}",
        input_requests
            .iter()
            .map(|r| r.expected_output_len)
            .sum::<usize>()
    );
    if let Some(max_len) = tokenizer.max_model_len() {
        let too_long = input_requests
            .iter()
            .filter(|r| r.prompt_len + r.expected_output_len > max_len)
            .count();
        if too_long > 0 {
            eprintln!("WARNING: {too_long} requests exceed the server's max_model_len {max_len} and may fail.");
        }
    }
}

/// One request input per sample, with the body options every request shares
/// (ignore_eos, sampling parameters, --extra-body last so it wins).
fn request_inputs(
    args: &ServeArgs,
    target: &Target,
    input_requests: &[SampleRequest],
) -> anyhow::Result<Vec<RequestFuncInput>> {
    // vLLM ignores EOS on the random dataset so outputs run to their length.
    let ignore_eos = args.ignore_eos || args.dataset_name == "random";
    let mut extra_body = args.sampling_params();
    if let Some(text) = &args.extra_body {
        let extra: Map<String, Value> =
            serde_json::from_str(text).context("--extra-body must be a JSON object")?;
        extra_body.extend(extra);
    }
    Ok(input_requests
        .iter()
        .map(|r| RequestFuncInput {
            prompt: r.prompt.clone(),
            api_url: target.api_url.clone(),
            prompt_len: r.prompt_len,
            output_len: r.expected_output_len,
            model: target.model_name.clone(),
            ignore_eos,
            extra_body: extra_body.clone(),
            request_id: Some(r.request_id.clone()),
            api_key: target.api_key.clone(),
        })
        .collect())
}

/// vLLM's lines describing the traffic, printed before the run starts.
fn print_traffic(args: &ServeArgs) {
    let distribution = if args.burstiness == 1.0 {
        "Poisson process"
    } else {
        "Gamma distribution"
    };
    println!(
        "Traffic request rate: {}",
        super::report::python_float(args.request_rate)
    );
    println!("Burstiness factor: {} ({distribution})", args.burstiness);
    match args.max_concurrency {
        Some(c) => println!("Maximum request concurrency: {c}"),
        None => println!("Maximum request concurrency: None"),
    }
}

/// The timed part: sends every request on its arrival schedule, then fills
/// in output lengths the server did not report. Returns the outputs in
/// request order and the run's duration in seconds.
async fn benchmark_requests(
    args: &ServeArgs,
    target: &Target,
    tokenizer: &PromptTokenizer,
    inputs: Vec<RequestFuncInput>,
) -> anyhow::Result<(Vec<RequestFuncOutput>, f64)> {
    // Its own stream, so the arrival times do not depend on the dataset's draws.
    let mut arrival_rng = StdRng::seed_from_u64(args.seed ^ 0x9e37_79b9_7f4a_7c15);
    let arrivals = arrival_times(
        inputs.len(),
        args.request_rate,
        args.burstiness,
        &mut arrival_rng,
    )?;
    let progress = progress_bar(inputs.len() as u64, args.disable_tqdm);
    let (mut outputs, duration) = send_all(
        &target.client,
        target.kind,
        inputs,
        &arrivals,
        args.max_concurrency,
        &progress,
    )
    .await;
    progress.finish_and_clear();
    count_missing_output_tokens(tokenizer, &mut outputs).await;
    Ok((outputs, duration))
}

/// Writes the result JSON under vLLM's file name (see `result_path`).
fn save_result(args: &ServeArgs, header: &ResultHeader, json: &Value) -> anyhow::Result<()> {
    let path = result_path(
        header,
        args.result_filename.as_deref(),
        args.result_dir.as_deref(),
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&path, serde_json::to_vec(json)?)
        .with_context(|| format!("writing {}", path.display()))?;
    println!("Results saved to {}", path.display());
    Ok(())
}

fn validate(args: &ServeArgs) -> anyhow::Result<()> {
    if args.max_concurrency == Some(0) {
        anyhow::bail!("--max-concurrency must be greater than 0");
    }
    if args.num_prompts == 0 {
        anyhow::bail!("--num-prompts must be greater than 0");
    }
    match (args.dataset_name.as_str(), &args.dataset_path) {
        ("random", Some(path)) => anyhow::bail!(
            "cannot use the 'random' dataset with --dataset-path {}: use --dataset-name sharegpt",
            path.display()
        ),
        ("sharegpt", None) => {
            anyhow::bail!("--dataset-name sharegpt needs --dataset-path (a ShareGPT JSON file)")
        }
        _ => {}
    }
    args.selected_percentiles()?;
    args.selected_metrics()?;
    GoodputConfig::parse(&args.goodput)?;
    Ok(())
}

/// One client for the whole run: pooled connections, --header on every
/// request, and vLLM's 6-hour timeout.
fn http_client(args: &ServeArgs) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in parse_key_values(&args.header, "--header")? {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .with_context(|| format!("invalid --header name {k:?}"))?;
        let value = reqwest::header::HeaderValue::from_str(&v)
            .with_context(|| format!("invalid --header value {v:?}"))?;
        headers.insert(name, value);
    }
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .timeout(Duration::from_secs(6 * 60 * 60))
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.max_concurrency.unwrap_or(1024))
        .build()?)
}

/// `(id, root)` of the first model the server lists (root falls back to id).
async fn first_model(
    client: &reqwest::Client,
    base_url: &str,
    api_key: Option<&str>,
) -> anyhow::Result<(String, String)> {
    let url = format!("{base_url}/v1/models");
    let mut req = client.get(&url);
    if let Some(key) = api_key {
        req = req.bearer_auth(key);
    }
    let fail = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!(
            "failed to fetch models from {url}: {e}. Check that the server is running and the URL is right, \
             or pass --model"
        )
    };
    let resp = req.send().await.map_err(|e| fail(&e))?;
    if !resp.status().is_success() {
        return Err(fail(&format!("HTTP {}", resp.status())));
    }
    let v: Value = resp.json().await.map_err(|e| fail(&e))?;
    let first = v
        .get("data")
        .and_then(Value::as_array)
        .and_then(|d| d.first())
        .ok_or_else(|| anyhow::anyhow!("no models found on the server at {base_url}"))?;
    let id = first
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("the first model at {url} has no id"))?;
    let root = first.get("root").and_then(Value::as_str).unwrap_or(id);
    Ok((id.to_string(), root.to_string()))
}

async fn sample_requests(
    args: &ServeArgs,
    tokenizer: &PromptTokenizer,
) -> anyhow::Result<Vec<SampleRequest>> {
    match args.dataset_name.as_str() {
        "sharegpt" => {
            let path = args
                .dataset_path
                .as_deref()
                .context("--dataset-path is required")?;
            let conversations = load_sharegpt(path)?;
            let fixed_output_len = args.output_len.or(args.sharegpt_output_len);
            sample_sharegpt_requests(
                tokenizer,
                conversations,
                args.num_prompts,
                fixed_output_len,
                args.seed,
                &args.request_id_prefix,
            )
            .await
        }
        _ => {
            let (input_len, output_len) = args.random_lens();
            let config = RandomDatasetConfig {
                input_len,
                output_len,
                range_ratio: args.random_range_ratio,
                prefix_len: args.random_prefix_len,
                seed: args.seed,
            };
            let pool = tokenizer.token_pool().await?;
            let num_special = tokenizer.num_special_tokens_to_add().await?;
            sample_random_requests(
                tokenizer,
                &pool,
                num_special,
                &config,
                args.num_prompts,
                &args.request_id_prefix,
            )
            .await
        }
    }
}

fn progress_bar(len: u64, disabled: bool) -> ProgressBar {
    if disabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(
        "{percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed_precise}<{eta_precise}]",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Sends every request at its arrival time and waits for all of them.
/// Returns the outputs in request order and the run's duration in seconds.
async fn send_all(
    client: &reqwest::Client,
    kind: EndpointKind,
    inputs: Vec<RequestFuncInput>,
    arrivals: &[f64],
    max_concurrency: Option<usize>,
    progress: &ProgressBar,
) -> (Vec<RequestFuncOutput>, f64) {
    let semaphore = max_concurrency.map(|c| Arc::new(Semaphore::new(c)));
    let clock = Instant::now();
    let mut tasks = Vec::with_capacity(inputs.len());
    for (input, &at) in inputs.into_iter().zip(arrivals) {
        let wait = Duration::from_secs_f64(at.max(0.0)).saturating_sub(clock.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let (client, semaphore, progress) = (client.clone(), semaphore.clone(), progress.clone());
        tasks.push(tokio::spawn(async move {
            let arrived = clock.elapsed().as_secs_f64();
            // Never closed, so acquiring cannot fail; a failure would only lift the cap.
            let _permit = match &semaphore {
                Some(s) => s.clone().acquire_owned().await.ok(),
                None => None,
            };
            let mut output = send_request(&client, kind, &input, clock).await;
            output.client_queue_time = output.start_time - arrived;
            progress.inc(1);
            output
        }));
    }
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap_or_else(|e| RequestFuncOutput {
            error: format!("request task failed: {e}"),
            ..Default::default()
        }));
    }
    (outputs, clock.elapsed().as_secs_f64())
}

/// For servers that send no usage: count the generated text's tokens, as
/// vLLM does with its tokenizer. A text that cannot be counted stays unknown.
async fn count_missing_output_tokens(
    tokenizer: &PromptTokenizer,
    outputs: &mut [RequestFuncOutput],
) {
    for output in outputs
        .iter_mut()
        .filter(|o| o.success && o.output_tokens.is_none())
    {
        if let Ok(ids) = tokenizer.encode(&output.generated_text, false).await {
            output.output_tokens = Some(ids.len());
        }
    }
}

fn report_failures(outputs: &[RequestFuncOutput]) {
    let failed: Vec<&RequestFuncOutput> = outputs.iter().filter(|o| !o.success).collect();
    if !failed.is_empty() {
        println!("Failed requests during benchmark run detected (capping to 10):");
        for (i, o) in failed.iter().take(10).enumerate() {
            println!("Error {i}: {}", o.error);
        }
    }
}
