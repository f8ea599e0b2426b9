//! Chat templates: the Jinja template shipped with a model turns a list of
//! messages into the prompt text. Rendered with minijinja, set up to match HF
//! transformers' `apply_chat_template` (`utils/chat_template_utils.py`):
//! `trim_blocks` and `lstrip_blocks` on, `raise_exception`, `strftime_now`,
//! a `tojson` that is Python's `json.dumps` (no HTML escaping, ", " / ": "
//! separators, `indent`), loop controls, Python string/dict methods, and the
//! variables `messages`, `tools`, `documents`, `add_generation_prompt` and
//! the special tokens.

use std::sync::Arc;

use minijinja::value::{Kwargs, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};

use super::{TokenizerConfig, TokenizerError};

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct ChatTemplate {
    env: Arc<Environment<'static>>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is reported with its line.
    pub fn new(
        source: &str,
        bos_token: Option<String>,
        eos_token: Option<String>,
    ) -> Result<Self, TokenizerError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, without_generation_tags(source))
            .map_err(template_error)?;
        Ok(Self {
            env: Arc::new(env),
            bos_token,
            eos_token,
        })
    }

    /// The template of a tokenizer config, if it has one.
    pub fn from_config(config: &TokenizerConfig) -> Result<Option<Self>, TokenizerError> {
        config
            .chat_template
            .as_deref()
            .map(|source| Self::new(source, config.bos_token.clone(), config.eos_token.clone()))
            .transpose()
    }

    /// Renders `messages` (JSON objects with `role`, `content`, ...).
    /// `extra` is a JSON object whose keys become template variables, as
    /// HF's keyword arguments do (`tools`, `documents`, `enable_thinking`, ...).
    pub fn render(
        &self,
        messages: &[serde_json::Value],
        add_generation_prompt: bool,
        extra: Option<&serde_json::Value>,
    ) -> Result<String, TokenizerError> {
        let mut ctx = serde_json::Map::new();
        for (name, token) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
        ] {
            if let Some(token) = token {
                ctx.insert(name.into(), token.clone().into());
            }
        }
        // HF passes these as None when absent (`tools is none` holds).
        ctx.insert("tools".into(), serde_json::Value::Null);
        ctx.insert("documents".into(), serde_json::Value::Null);
        match extra {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Object(vars)) => {
                for (key, value) in vars {
                    if key == "messages" || key == "add_generation_prompt" {
                        return Err(TokenizerError::Template(format!(
                            "`{key}` cannot be passed as an extra template variable"
                        )));
                    }
                    ctx.insert(key.clone(), value.clone());
                }
            }
            Some(other) => {
                return Err(TokenizerError::Template(format!(
                    "extra template variables must be a JSON object, got {other}"
                )))
            }
        }
        let messages = messages
            .iter()
            .map(alias_reasoning_fields)
            .collect::<Result<Vec<_>, _>>()?;
        ctx.insert("messages".into(), serde_json::Value::Array(messages));
        ctx.insert("add_generation_prompt".into(), add_generation_prompt.into());
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        template
            .render(Value::from_serialize(&ctx))
            .map_err(template_error)
    }
}

/// A template error reaches the client as text, so its whole chain (where
/// minijinja says what failed) goes into the message.
fn template_error(e: Error) -> TokenizerError {
    TokenizerError::Template(crate::error_chain(&e))
}

/// A message must be an object. Its reasoning, under any of the names HF
/// accepts, is also given as `reasoning_content` and `thinking`
/// (transformers' `_alias_reasoning_fields`).
fn alias_reasoning_fields(
    message: &serde_json::Value,
) -> Result<serde_json::Value, TokenizerError> {
    let obj = message.as_object().ok_or_else(|| {
        TokenizerError::Template(format!(
            "a chat message must be a JSON object, got {message}"
        ))
    })?;
    let reasoning = ["reasoning_content", "thinking", "reasoning"]
        .iter()
        .find_map(|k| obj.get(*k).filter(|v| !v.is_null()));
    let Some(reasoning) = reasoning else {
        return Ok(message.clone());
    };
    let mut aliased = serde_json::Map::new();
    aliased.insert("thinking".into(), reasoning.clone());
    for (k, v) in obj {
        aliased.insert(k.clone(), v.clone());
    }
    aliased.insert("reasoning_content".into(), reasoning.clone());
    Ok(serde_json::Value::Object(aliased))
}

/// HF's `{% generation %}` blocks only mark assistant text for training
/// masks; they render their body. minijinja has no such tag, so it becomes
/// an `if true` block, keeping any whitespace-control marks.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(open) = rest.find("{%") {
        out.push_str(&rest[..open]);
        let tag = &rest[open..];
        let Some(close) = tag.find("%}") else {
            break;
        };
        let inner = &tag[2..close];
        let left = inner.strip_prefix(['-', '+']).map_or("", |_| &inner[..1]);
        let body = &inner[left.len()..];
        let right = body
            .strip_suffix(['-', '+'])
            .map_or("", |_| &body[body.len() - 1..]);
        let word = body[..body.len() - right.len()].trim();
        let replacement = match word {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => out.push_str(&format!("{{%{left} {r} {right}%}}")),
            None => out.push_str(&tag[..close + 2]),
        }
        rest = &tag[close + 2..];
    }
    out.push_str(rest);
    out
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// Python's `datetime.now().strftime(format)`; an invalid format is an
/// error (chrono would panic while printing it).
fn strftime_now(format: String) -> Result<String, Error> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(&format).any(|item| matches!(item, Item::Error)) {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("strftime_now: invalid format {format:?}"),
        ));
    }
    Ok(chrono::Local::now().format(&format).to_string())
}

/// HF's `tojson`: `json.dumps(x, ensure_ascii=False, indent=None,
/// separators=None, sort_keys=False)`; `ensure_ascii` and `indent` may be
/// positional, as in HF's signature.
fn tojson(
    value: &Value,
    ensure_ascii: Option<Value>,
    indent: Option<Value>,
    kwargs: Kwargs,
) -> Result<Value, Error> {
    let arg = |positional: Option<Value>, name: &str| -> Result<Value, Error> {
        match positional {
            Some(v) => Ok(v),
            None => Ok(kwargs
                .get::<Option<Value>>(name)?
                .unwrap_or(Value::from(()))),
        }
    };
    let ensure_ascii = arg(ensure_ascii, "ensure_ascii")?.is_true();
    let indent = match arg(indent, "indent")? {
        v if v.is_none() || v.is_undefined() => None,
        v if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
        v => Some(" ".repeat(usize::try_from(v)?)),
    };
    let (item_sep, key_sep) = match arg(None, "separators")? {
        v if v.is_none() || v.is_undefined() => {
            let item_sep = if indent.is_some() { "," } else { ", " };
            (item_sep.to_string(), ": ".to_string())
        }
        v => {
            let parts: Vec<String> = v
                .try_iter()?
                .map(|p| p.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be strings",
                    )
                })?;
            match <[String; 2]>::try_from(parts) {
                Ok([item, key]) => (item, key),
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson: separators must be a pair",
                    ))
                }
            }
        }
    };
    let sort_keys = arg(None, "sort_keys")?.is_true();
    kwargs.assert_all_used()?;
    let mut out = String::new();
    let dumper = JsonDumper {
        ensure_ascii,
        indent,
        item_sep,
        key_sep,
        sort_keys,
    };
    dumper.dump(value, 0, &mut out)?;
    Ok(Value::from(out))
}

/// Python's `json.dumps` over template values.
struct JsonDumper {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

impl JsonDumper {
    fn dump(&self, value: &Value, level: usize, out: &mut String) -> Result<(), Error> {
        match value.kind() {
            ValueKind::None => out.push_str("null"),
            ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
            ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
            ValueKind::Number => out.push_str(&python_float_repr(f64::try_from(value.clone())?)),
            ValueKind::String => self.dump_str(value.as_str().unwrap_or_default(), out),
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter()?.collect();
                self.dump_container(out, level, '[', ']', &items, |item, level, out| {
                    self.dump(item, level, out)
                })?;
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter()? {
                    entries.push((self.key_string(&key)?, value.get_item(&key)?));
                }
                if self.sort_keys {
                    entries.sort_by(|a, b| a.0.cmp(&b.0));
                }
                self.dump_container(out, level, '{', '}', &entries, |(key, item), level, out| {
                    self.dump_str(key, out);
                    out.push_str(&self.key_sep);
                    self.dump(item, level, out)
                })?;
            }
            kind => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: a value of type {kind} is not JSON serializable"),
                ))
            }
        }
        Ok(())
    }

    fn dump_container<T>(
        &self,
        out: &mut String,
        level: usize,
        open: char,
        close: char,
        items: &[T],
        dump_item: impl Fn(&T, usize, &mut String) -> Result<(), Error>,
    ) -> Result<(), Error> {
        out.push(open);
        if items.is_empty() {
            out.push(close);
            return Ok(());
        }
        let newline = |out: &mut String, level: usize| {
            if let Some(indent) = &self.indent {
                out.push('\n');
                out.push_str(&indent.repeat(level));
            }
        };
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push_str(&self.item_sep);
            }
            newline(out, level + 1);
            dump_item(item, level + 1, out)?;
        }
        newline(out, level);
        out.push(close);
        Ok(())
    }

    /// Python turns str, int, float, bool and None keys into strings.
    fn key_string(&self, key: &Value) -> Result<String, Error> {
        Ok(match key.kind() {
            ValueKind::String => key.as_str().unwrap_or_default().to_string(),
            ValueKind::None => "null".to_string(),
            ValueKind::Bool => if key.is_true() { "true" } else { "false" }.to_string(),
            ValueKind::Number if key.is_integer() => key.to_string(),
            ValueKind::Number => python_float_repr(f64::try_from(key.clone())?),
            kind => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: keys must be str, int, float, bool or None, not {kind}"),
                ))
            }
        })
    }

    fn dump_str(&self, s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{08}' => out.push_str("\\b"),
                '\u{0C}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (self.ensure_ascii && !(' '..='~').contains(&c)) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation
/// outside 1e-4 <= |x| < 1e16, always a `.0` or exponent.
fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let sign = if x.is_sign_negative() { "-" } else { "" };
    if (-4..16).contains(&exp) {
        if exp >= 0 {
            let int_len = exp as usize + 1;
            let int_part = format!("{:0<int_len$}", &digits[..digits.len().min(int_len)]);
            let frac = digits
                .get(int_len..)
                .filter(|f| !f.is_empty())
                .unwrap_or("0");
            format!("{sign}{int_part}.{frac}")
        } else {
            format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize))
        }
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(
        source: &str,
        messages: serde_json::Value,
        add_generation_prompt: bool,
    ) -> Result<String, TokenizerError> {
        let t = ChatTemplate::new(source, Some("<s>".into()), Some("</s>".into()))?;
        t.render(messages.as_array().unwrap(), add_generation_prompt, None)
    }

    #[test]
    fn chatml_with_trim_and_lstrip_blocks() {
        let source = "{% for m in messages %}\n  {{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}\n{% endfor %}\n{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let out = render(source, json!([{"role": "user", "content": "Hi"}]), true).unwrap();
        // As Jinja2 (HF): the newline after `}}` is text, output every iteration.
        assert_eq!(
            out,
            "<|im_start|>user\nHi<|im_end|>\n\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn special_tokens_python_methods_and_loop_controls() {
        let source = "{{ bos_token }}{% for m in messages %}{% if m.role == 'skip' %}{% continue %}{% endif %}{{ m.content.strip().upper() }}{% if m.content.startswith(' a') %}!{% endif %}{% endfor %}{{ eos_token }}";
        let out = render(
            source,
            json!([{"role": "user", "content": " abc "}, {"role": "skip", "content": "x"}, {"role": "user", "content": "d"}]),
            false,
        )
        .unwrap();
        assert_eq!(out, "<s>ABC!D</s>");
    }

    #[test]
    fn raise_exception_becomes_an_error() {
        let source = "{% if messages[0].role != 'user' %}{{ raise_exception('Conversation must start with user') }}{% endif %}ok";
        let err = render(
            source,
            json!([{"role": "assistant", "content": "x"}]),
            false,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("Conversation must start with user"),
            "{err}"
        );
        assert_eq!(
            render(source, json!([{"role": "user", "content": "x"}]), false).unwrap(),
            "ok"
        );
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let t = ChatTemplate::new(
            "{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}|{{ {'b': 1, 'a': [1.5, 1e20]} | tojson(sort_keys=true) }}",
            None,
            None,
        )
        .unwrap();
        let extra = json!({"tools": [{"name": "f<x>", "n": 1.0, "ok": true, "none": null, "s": "é\n\"q\""}]});
        let out = t.render(&[], false, Some(&extra)).unwrap();
        let expected = concat!(
            r#"[{"name": "f<x>", "n": 1.0, "ok": true, "none": null, "s": "é\n\"q\""}]|"#,
            "{\n  \"name\": \"f<x>\",\n  \"n\": 1.0,\n  \"ok\": true,\n  \"none\": null,\n  \"s\": \"é\\n\\\"q\\\"\"\n}|",
            r#"{"a": [1.5, 1e+20], "b": 1}"#
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn tools_default_to_none_and_extra_vars_pass_through() {
        let t = ChatTemplate::new("{{ tools is none }} {{ enable_thinking }}", None, None).unwrap();
        assert_eq!(
            t.render(&[], false, Some(&json!({"enable_thinking": false})))
                .unwrap(),
            "True False"
        );
        assert!(t.render(&[], false, Some(&json!([1]))).is_err());
        assert!(t
            .render(&[], false, Some(&json!({"messages": []})))
            .is_err());
    }

    #[test]
    fn generation_tags_render_their_body() {
        let source = "{% for m in messages %}{%- generation -%} [{{ m.content }}] {%- endgeneration %}{% endfor %}";
        assert_eq!(
            render(
                source,
                json!([{"role": "assistant", "content": "a"}]),
                false
            )
            .unwrap(),
            "[a]"
        );
    }

    #[test]
    fn reasoning_fields_are_aliased() {
        let source = "{{ messages[0].reasoning_content }}/{{ messages[0].thinking }}";
        let out = render(
            source,
            json!([{"role": "assistant", "content": "", "reasoning": "hmm"}]),
            false,
        )
        .unwrap();
        assert_eq!(out, "hmm/hmm");
    }

    #[test]
    fn strftime_now_formats_and_rejects_bad_formats() {
        let year = render("{{ strftime_now('%Y') }}", json!([]), false).unwrap();
        assert_eq!(year.len(), 4);
        assert!(year.chars().all(|c| c.is_ascii_digit()));
        assert!(render("{{ strftime_now('%Q') }}", json!([]), false).is_err());
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", None, None).is_err());
        assert!(render("{{ messages }}", json!(["not an object"]), false).is_err());
    }

    #[test]
    fn python_float_repr_cases() {
        for (x, want) in [
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (0.1, "0.1"),
            (1.5e-5, "1.5e-05"),
            (0.0001, "0.0001"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (123.456, "123.456"),
            (f64::INFINITY, "Infinity"),
        ] {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
    }
}
