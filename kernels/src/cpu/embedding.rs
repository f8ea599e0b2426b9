//! Embedding gather: one table row per token id.

/// `out[t] = table[ids[t]]`, rows of `hidden`.
///
/// # Panics
/// On shape mismatches and for an id past the table (the engine validates
/// prompt ids against the vocabulary before they get here).
pub fn embedding(ids: &[u32], table: &[f32], hidden: usize, out: &mut [f32]) {
    assert_eq!(
        out.len(),
        ids.len() * hidden,
        "embedding: out is not [tokens, {hidden}]"
    );
    if hidden == 0 {
        return;
    }
    assert_eq!(
        table.len() % hidden,
        0,
        "embedding: table is not rows of {hidden}"
    );
    let vocab = table.len() / hidden;
    for (o, &id) in out.chunks_exact_mut(hidden).zip(ids) {
        let id = id as usize;
        assert!(
            id < vocab,
            "embedding: token id {id} >= vocabulary size {vocab}"
        );
        o.copy_from_slice(&table[id * hidden..][..hidden]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows_in_order_with_repeats() {
        let table: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut out = vec![0.0; 12];
        embedding(&[2, 0, 2, 1], &table, 3, &mut out);
        assert_eq!(
            out,
            vec![6.0, 7.0, 8.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0, 3.0, 4.0, 5.0]
        );
    }

    #[test]
    #[should_panic(expected = "vocabulary size 4")]
    fn id_past_the_vocabulary_panics() {
        embedding(&[4], &[0.0; 12], 3, &mut [0.0; 3]);
    }
}
