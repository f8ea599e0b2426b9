"""Structured outputs through the official `openai` client against `pagoda serve`.

Run by tests/tests/server_structured_outputs.rs:
    python3 structured_outputs_client.py BASE_URL MODEL
Exits non-zero on any failure. Sampling is random (temperature 1) where the
point is that the constraint, not the model, makes the output valid.
"""

import json
import re
import sys
from typing import List, Literal

import openai
from openai import OpenAI
from pydantic import BaseModel, Field


class Address(BaseModel):
    city: str = Field(max_length=24)
    country: Literal["France", "Germany", "Italy"]


class Person(BaseModel):
    name: str = Field(max_length=24)
    age: int = Field(ge=0, le=120)
    address: Address
    hobbies: List[str] = Field(max_length=2)


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    ask = [{"role": "user", "content": "Describe a person who lives in Paris as JSON."}]

    # parse() with a nested Pydantic model: the SDK sends the strict JSON
    # schema and validates the answer into the model.
    r = client.chat.completions.parse(
        model=model, messages=ask, response_format=Person, max_tokens=400, temperature=0,
    )
    person = r.choices[0].message.parsed
    assert isinstance(person, Person), r
    assert isinstance(person.address, Address), person
    assert r.choices[0].finish_reason == "stop", r

    # json_object: parseable JSON, an object.
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Give a JSON object with the keys name and age of a cat."}],
        response_format={"type": "json_object"}, max_tokens=200, temperature=0,
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict), r

    # A regex (vLLM's structured_outputs), on completions, n=3 random samples.
    rx = r"[0-9]{3}-[0-9]{4}"
    c = client.completions.create(
        model=model, prompt="My phone number is", max_tokens=20, temperature=1.0, n=3,
        extra_body={"structured_outputs": {"regex": rx}},
    )
    for ch in c.choices:
        assert re.fullmatch(rx, ch.text), ch
        assert ch.finish_reason == "stop", ch

    # The older guided_regex spelling.
    c = client.completions.create(
        model=model, prompt="The year was", max_tokens=10, temperature=1.0,
        extra_body={"guided_regex": r"(19|20)[0-9]{2}"},
    )
    assert re.fullmatch(r"(19|20)[0-9]{2}", c.choices[0].text), c

    # A choice, streamed.
    choices = ["positive", "negative", "neutral"]
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Sentiment of: I love it!"}],
        max_tokens=10, temperature=1.0, stream=True, extra_body={"guided_choice": choices},
    )
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text in choices, text

    # A Lark grammar.
    grammar = 'start: greeting " " name\ngreeting: "Hello" | "Hi"\nname: /[A-Z][a-z]{1,10}/\n'
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Greet someone."}], max_tokens=20,
        temperature=1.0, extra_body={"structured_outputs": {"grammar": grammar}},
    )
    assert re.fullmatch(r"(Hello|Hi) [A-Z][a-z]{1,10}", r.choices[0].message.content), r

    # Refusals: 400s that name the problem.
    def bad_request(**kwargs) -> str:
        try:
            client.chat.completions.create(model=model, messages=ask, max_tokens=5, **kwargs)
        except openai.BadRequestError as e:
            return f"{e} param={e.param}"
        raise AssertionError(f"accepted: {kwargs}")

    msg = bad_request(response_format={"type": "json_schema", "json_schema": {
        "name": "bad", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}})
    assert "json" in msg, msg
    msg = bad_request(extra_body={"guided_regex": "a(b"})
    assert "regex" in msg, msg
    msg = bad_request(response_format={"type": "nonsense"})
    assert "response_format" in msg, msg
    msg = bad_request(extra_body={"guided_regex": "a+", "guided_choice": ["a"]})
    assert "one kind" in msg, msg

    print("all checks passed")


if __name__ == "__main__":
    main()
