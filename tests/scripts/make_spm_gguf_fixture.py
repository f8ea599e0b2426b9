"""A SentencePiece ("llama") GGUF vocabulary and HF transformers' reading of it.

Trains a small SentencePiece BPE model (byte fallback, split digits, a
user-defined `<think>`, as Llama 2 / Mistral vocabularies are made), writes
its vocabulary into a GGUF the way llama.cpp's converter does
(`tokenizer.ggml.{model,tokens,scores,token_type,...}`, no merges), then
loads that GGUF with `AutoTokenizer.from_pretrained(..., gguf_file=...)` and
records its token ids for a set of texts. `engine/src/tokenizer` must give
the same ids from the same file.

Run with sentencepiece, gguf and transformers installed (CI only reads the
output): python3 tests/scripts/make_spm_gguf_fixture.py
"""

import io
import json
import os
import random

import gguf
import sentencepiece as spm
import transformers
from transformers import AutoTokenizer

OUT = os.path.join(os.path.dirname(__file__), "..", "fixtures", "spm_gguf")
# The same vocabulary under three architectures: HF marks spaces
# differently for Phi-3 (a normalizer instead of Metaspace) and Gemma (no
# prefix; merges in file order; whitespace pieces stored as spaces).
ARCHITECTURES = ["llama", "phi3", "gemma2"]

TEXTS = [
    "Hello world",
    "The capital of France is Paris.",
    " leading space and  double  spaces",
    "Numbers: 12345 and 3.14159",
    "New\nlines\n\nand\ttabs",
    "Unicode: café, naïve, 東京, 🙂 and ünïcödé",
    "<think>reasoning</think> done",
    "<s>starts with bos</s>",
    "",
    " ",
    "mixedCASE words, punctuation!?; (parens) [brackets] {braces}",
    "zzqxj unseen letters: ÆØÅ ß",
]


def corpus(rng):
    words = (
        "the of and to in is was for on that with as by at from his her they we you "
        "capital france paris world hello number space line reasoning done token model "
        "vocabulary merge piece byte fallback sentence english text data train test"
    ).split()
    lines = []
    for _ in range(3000):
        n = rng.randint(3, 14)
        line = " ".join(rng.choice(words) for _ in range(n))
        if rng.random() < 0.3:
            line += f" {rng.randint(0, 99999)}"
        if rng.random() < 0.2:
            line = line.capitalize() + "."
        lines.append(line)
    lines += ["café naïve ünïcödé", "東京 大阪", "tabs\tand\nnewlines"] * 20
    return lines


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = random.Random(0)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus(rng)),
        model_writer=model,
        model_type="bpe",
        vocab_size=600,
        byte_fallback=True,
        split_digits=True,
        user_defined_symbols=["<think>", "</think>"],
        character_coverage=1.0,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        num_threads=1,
        seed_sentencepiece_size=10000,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())

    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        if sp.is_unknown(i):
            types.append(gguf.TokenType.UNKNOWN)
        elif sp.is_control(i):
            types.append(gguf.TokenType.CONTROL)
        elif sp.is_byte(i):
            types.append(gguf.TokenType.BYTE)
        elif sp.is_unused(i):
            types.append(gguf.TokenType.UNUSED)
        elif sp.id_to_piece(i) in ("<think>", "</think>"):
            types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)

    files = []
    for arch in ARCHITECTURES:
        name = f"spm-{arch}-vocab.gguf"
        # llama.cpp stores Gemma's whitespace-only pieces with real spaces.
        spelled = [t.replace("\u2581", " ") if arch.startswith("gemma") and not t.strip("\u2581") and t else t for t in tokens]
        write_gguf(os.path.join(OUT, name), arch, sp, spelled, scores, types)
        files.append({"gguf_file": name, "architecture": arch, "cases": hf_cases(name, sp)})
    fixture = {
        "generator": "tests/scripts/make_spm_gguf_fixture.py",
        "transformers_version": transformers.__version__,
        "sentencepiece_version": spm.__version__,
        "vocab_size": sp.vocab_size(),
        "files": files,
    }
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(files)} GGUF vocabularies and golden.json ({len(TEXTS)} texts each)")


def write_gguf(path, arch, sp, tokens, scores, types):
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"spm-{arch}-vocab")
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(sp.bos_id())
    w.add_eos_token_id(sp.eos_id())
    w.add_unk_token_id(sp.unk_id())
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()



def hf_cases(name, sp):
    tok = AutoTokenizer.from_pretrained(OUT, gguf_file=name)
    cases = []
    for text in TEXTS:
        with_special = tok.encode(text, add_special_tokens=True)
        cases.append(
            {
                "text": text,
                "ids": tok.encode(text, add_special_tokens=False),
                "ids_with_special": with_special,
                "decoded": tok.decode(with_special, skip_special_tokens=True),
                "sentencepiece_ids": sp.encode(text),
            }
        )
    return cases


if __name__ == "__main__":
    main()
