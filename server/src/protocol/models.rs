//! `/v1/models`.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// Where the weights came from (vLLM's field).
    pub root: String,
    pub parent: Option<String>,
    pub max_model_len: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_openai_list() {
        let list = ModelList {
            object: "list",
            data: vec![ModelCard {
                id: "m".into(),
                object: "model",
                created: 5,
                owned_by: "pagoda",
                root: "/x".into(),
                parent: None,
                max_model_len: 8,
            }],
        };
        let v = serde_json::to_value(list).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "m");
        assert_eq!(v["data"][0]["object"], "model");
        assert!(v["data"][0]["parent"].is_null());
    }
}
