"""Tool calling through the official `openai` client against `pagoda serve`.

Run by tests/tests/server_tool_calling.rs:
    python3 tool_calling_client.py BASE_URL MODEL
against a server started without --enable-auto-tool-choice. Exits non-zero
on any failure. `tool_choice` "required" and a named function are
constrained by the tools' schemas, so whatever SmolLM2 writes, the
arguments must parse and validate (checked by hand: the schema is small).
"""

import json
import sys

import openai
from openai import OpenAI

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 20},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string", "maxLength": 30}},
            "required": ["timezone"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
ASK = [{"role": "user", "content": "What will the weather be in Paris for the next 3 days?"}]


def check_arguments(name: str, arguments: str) -> None:
    """The arguments follow the tool's schema (what jsonschema would check)."""
    args = json.loads(arguments)
    assert isinstance(args, dict), arguments
    if name == "get_weather":
        assert set(args) == {"city", "days", "unit"}, args
        assert isinstance(args["city"], str) and len(args["city"]) <= 20, args
        assert isinstance(args["days"], int) and not isinstance(args["days"], bool), args
        assert 1 <= args["days"] <= 7, args
        assert args["unit"] in ("celsius", "fahrenheit"), args
    elif name == "get_time":
        assert set(args) == {"timezone"}, args
        assert isinstance(args["timezone"], str) and len(args["timezone"]) <= 30, args
    else:
        raise AssertionError(f"unknown tool {name}")


def check_calls(calls, names=("get_weather", "get_time")) -> None:
    assert calls, "no tool calls"
    for call in calls:
        assert call.type == "function", call
        assert call.id.startswith("chatcmpl-tool-"), call.id
        assert call.function.name in names, call
        check_arguments(call.function.name, call.function.arguments)
    assert len({c.id for c in calls}) == len(calls), calls


def streamed(client: OpenAI, **kwargs):
    """A streamed answer put back together: content, calls, finish reason."""
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(stream=True, **kwargs):
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        content += choice.delta.content or ""
        for d in choice.delta.tool_calls or []:
            if d.index not in calls:
                # The first delta of a call carries its id, type and name.
                assert d.id and d.type == "function" and d.function.name, d
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
            else:
                assert d.id is None and d.function.name is None, d
            calls[d.index]["arguments"] += d.function.arguments or ""
        finish = choice.finish_reason or finish
    assert sorted(calls) == list(range(len(calls))), calls
    return content, [calls[i] for i in sorted(calls)], finish


def main() -> None:
    base_url, model = sys.argv[1], sys.argv[2]
    client = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    common = dict(model=model, messages=ASK, tools=TOOLS, max_tokens=200)

    # required: at least one call, each valid; one call with parallel_tool_calls off.
    for temperature in (0.0, 1.0):
        r = client.chat.completions.create(
            tool_choice="required", parallel_tool_calls=False, temperature=temperature, **common
        )
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls", r
        assert len(choice.message.tool_calls) == 1, r
        check_calls(choice.message.tool_calls)
    r = client.chat.completions.create(tool_choice="required", temperature=0, **common)
    check_calls(r.choices[0].message.tool_calls)

    # required, streamed: the deltas add up to valid calls.
    content, calls, finish = streamed(
        client, tool_choice="required", parallel_tool_calls=False, temperature=0, **common
    )
    assert finish == "tool_calls" and len(calls) == 1, (content, calls, finish)
    for c in calls:
        check_arguments(c["name"], c["arguments"])

    # A named function: its arguments, finish_reason "stop" (as OpenAI and vLLM).
    named = {"type": "function", "function": {"name": "get_time"}}
    r = client.chat.completions.create(tool_choice=named, temperature=1.0, **common)
    choice = r.choices[0]
    assert choice.finish_reason == "stop", r
    check_calls(choice.message.tool_calls, names=("get_time",))
    # Greedy, streamed and not: the same call.
    r = client.chat.completions.create(tool_choice=named, temperature=0, **common)
    content, calls, finish = streamed(client, tool_choice=named, temperature=0, **common)
    assert finish == "stop" and len(calls) == 1, (content, calls, finish)
    assert calls[0]["name"] == "get_time", calls
    assert calls[0]["arguments"] == r.choices[0].message.tool_calls[0].function.arguments, (
        calls,
        r,
    )

    # A history with the assistant's call and the tool's answer is accepted.
    history = ASK + [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "chatcmpl-tool-1",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": '{"city": "Paris", "days": 3, "unit": "celsius"}',
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "chatcmpl-tool-1", "content": "Sunny, 21 C."},
    ]
    r = client.chat.completions.create(
        model=model, messages=history, tools=TOOLS, tool_choice="none", max_tokens=20
    )
    assert isinstance(r.choices[0].message.content, str), r
    assert not r.choices[0].message.tool_calls, r

    # "auto" (also the default with tools) needs the server's flags.
    for kwargs in ({"tool_choice": "auto"}, {}):
        try:
            client.chat.completions.create(**common, **kwargs)
        except openai.BadRequestError as e:
            assert "--enable-auto-tool-choice" in str(e), e
            assert e.param == "tool_choice", e
        else:
            raise AssertionError(f"auto accepted without the flags: {kwargs}")

    print("all checks passed")


if __name__ == "__main__":
    main()
