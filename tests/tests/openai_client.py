"""The official `openai` Python client against a running `pagoda serve`.

Run by tests/tests/server_openai_client.rs:
    python3 openai_client.py BASE_URL MODEL
It exits non-zero (an assertion or the client's own exception) on any failure.
"""

import sys

import openai
from openai import OpenAI


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)

    models = client.models.list()
    assert [m.id for m in models.data] == [model], models

    # Completions.
    c = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0
    )
    assert c.object == "text_completion" and c.id.startswith("cmpl-"), c
    assert len(c.choices) == 1 and c.choices[0].text, c
    assert c.choices[0].finish_reason in ("stop", "length"), c
    assert c.usage.completion_tokens <= 8 and c.usage.prompt_tokens > 0, c
    full_text = c.choices[0].text

    # Completions, streamed: the same greedy text.
    pieces = []
    for chunk in client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=8, temperature=0, stream=True
    ):
        pieces.extend(ch.text for ch in chunk.choices)
    assert "".join(pieces) == full_text, (pieces, full_text)

    # Chat: the capital of France.
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-"), r
    answer = r.choices[0].message.content
    assert r.choices[0].message.role == "assistant", r
    assert "Paris" in answer, answer
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r

    # Chat, streamed with usage: role first, the same answer, usage last.
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant", chunks[0]
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert content == answer, (content, answer)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens

    # Chat logprobs in OpenAI's shape.
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, temperature=0, logprobs=True, top_logprobs=2
    )
    tokens = r.choices[0].logprobs.content
    assert len(tokens) == r.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in tokens)

    # Errors arrive as the client's exception classes.
    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
        raise AssertionError("unknown model accepted")
    except openai.NotFoundError as e:
        assert e.status_code == 404
    try:
        client.completions.create(model=model, prompt="x", max_tokens=2, temperature=-1)
        raise AssertionError("temperature -1 accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "temperature" in str(e)

    print("openai client: all checks passed")


if __name__ == "__main__":
    main()
