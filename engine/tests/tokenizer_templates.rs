//! Chat templates render exactly as HF transformers' `apply_chat_template`
//! (reference: fixtures/tokenizer/templates_reference.json, written by
//! make_reference.py with HF's own renderer): Qwen3's template (tools, tool
//! calls, reasoning, `enable_thinking`), Llama 3's, and a template exercising
//! namespace, loop controls, `tojson` options, Python string/dict methods and
//! Jinja filters.

mod tokenizer_common;

use pagoda_engine::tokenizer::ChatTemplate;
use tokenizer_common::*;

#[test]
fn templates_render_like_hf() {
    let cases = load_json("templates_reference.json");
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 8);
    let mut bad = Vec::new();
    for case in cases {
        let file = case["template"].as_str().unwrap();
        let name = case["name"].as_str().unwrap();
        let source = std::fs::read_to_string(fixture_dir().join("templates").join(file)).unwrap();
        let token = |key: &str| case[key].as_str().map(str::to_string);
        let template = ChatTemplate::new(&source, token("bos_token"), token("eos_token")).unwrap();
        let rendered = template.render(
            case["messages"].as_array().unwrap(),
            case["add_generation_prompt"].as_bool().unwrap(),
            Some(&case["extra"]),
        );
        match rendered {
            Ok(text) if text == case["rendered"].as_str().unwrap() => {}
            Ok(text) => bad.push(format!(
                "{file}/{name}:\n--- got\n{text}\n--- HF\n{}",
                case["rendered"].as_str().unwrap()
            )),
            Err(e) => bad.push(format!("{file}/{name}: {e}")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
}
