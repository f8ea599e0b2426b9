"""A KV-event subscriber as a router would write one, against `pagoda serve`.

Decodes with msgspec structs declared the way vLLM 0.11 declares its own in
`vllm/distributed/kv_events.py` (array_like, tagged), so a payload vLLM's
consumers cannot read fails here. Checks the live stream (topic, sequence
numbers, the prompt's blocks as one chained BlockStored) and the replay
socket (the same batches again, then the -1 end marker).

usage: kv_events_subscriber.py BASE_URL MODEL PUB_ENDPOINT REPLAY_ENDPOINT TOPIC
"""

import json
import sys
import time
import urllib.request

import msgspec
import zmq


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list
    data_parallel_rank: int | None = None


class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):
    pass


class BlockStored(KVCacheEvent):
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None
    medium: str | None
    lora_name: str | None
    extra_keys: list | None = None
    group_idx: int | None = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[int]
    medium: str | None
    group_idx: int | None = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[BlockStored | BlockRemoved | AllBlocksCleared]


def post(base, path, body):
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def main():
    base, model, pub_endpoint, replay_endpoint, topic = sys.argv[1:6]
    decoder = msgspec.msgpack.Decoder(KVEventBatch)
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.connect(pub_endpoint)
    sub.setsockopt_string(zmq.SUBSCRIBE, topic)
    time.sleep(1.0)  # PUB/SUB: a subscriber joining late misses messages

    prompt = "The quick brown fox jumps over the lazy dog. " * 6
    ids = post(base, "/tokenize", {"model": model, "prompt": prompt})["tokens"]
    assert len(ids) >= 32, f"prompt too short: {len(ids)} tokens"
    post(base, "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 4, "temperature": 0})

    live = []
    stored = []
    deadline = time.time() + 20
    while time.time() < deadline and not stored:
        if not sub.poll(200):
            continue
        frames = sub.recv_multipart()
        assert len(frames) == 3, f"{len(frames)} frames"
        assert frames[0] == topic.encode(), frames[0]
        seq = int.from_bytes(frames[1], "big")
        batch = decoder.decode(frames[2])
        assert batch.data_parallel_rank == 0
        assert batch.ts > 1.6e9, batch.ts
        live.append((seq, frames[2]))
        stored += [e for e in batch.events if isinstance(e, BlockStored)]
    assert stored, "no BlockStored within 20 s"
    seqs = [s for s, _ in live]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    first = stored[0]
    bs = first.block_size
    assert bs == 16, bs
    assert first.parent_block_hash is None
    assert first.medium == "GPU"
    assert len(first.token_ids) == bs * len(first.block_hashes)
    n = len(ids) // bs
    assert len(first.block_hashes) == n, (len(first.block_hashes), n)
    assert first.token_ids == ids[: n * bs], (first.token_ids, ids)

    # A DEALER speaking REQ's envelope (empty delimiter, then the start
    # sequence) reads the whole streamed answer.
    replay = ctx.socket(zmq.DEALER)
    replay.connect(replay_endpoint)
    replay.send_multipart([b"", (0).to_bytes(8, "big")])
    replayed = {}
    while True:
        if not replay.poll(5000):
            raise AssertionError("replay: no end marker within 5 s")
        empty, seq_bytes, payload = replay.recv_multipart()
        assert empty == b""
        seq = int.from_bytes(seq_bytes, "big", signed=True)
        if seq == -1:
            assert payload == b""
            break
        decoder.decode(payload)
        replayed[seq] = payload
    assert sorted(replayed) == list(range(len(replayed))), sorted(replayed)
    for seq, payload in live:
        assert replayed[seq] == payload, f"batch {seq} replayed differently"
    print("all checks passed")


if __name__ == "__main__":
    main()
