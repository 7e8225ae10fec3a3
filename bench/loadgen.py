"""A small HTTP/1.1 load generator: asyncio, raw keep-alive sockets, one process.

    python bench/loadgen.py --port P --requests FILE --connections 32 --duration 10

FILE holds one request a line: ``METHOD PATH TOKEN`` (TOKEN ``-`` for none). Each of the
``--connections`` keep-alive connections sends a request, waits for the answer, and sends
the next (closed loop); with ``--rate R`` the requests are instead scheduled at R per second
in total (open loop) and each latency is measured from the request's scheduled time, so a
slow server is not hidden by the client waiting (no coordinated omission). Without
``--cycle`` each line is sent once (a start-assignment pool) and the run ends early when
the pool runs out. Only 127.0.0.1 is ever contacted.

Prints one JSON line: completed requests in the measured window (after ``--warmup``),
requests per second, status counts, latency percentiles (ms), and the client's own CPU
time, so a run can show the client was not the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

HOST = "127.0.0.1"


class Pool:
    def __init__(self, requests: list[bytes], cycle: bool) -> None:
        self.requests = requests
        self.cycle = cycle
        self.next = 0
        self.exhausted = False

    def take(self) -> bytes | None:
        if self.next >= len(self.requests):
            if not self.cycle or not self.requests:
                self.exhausted = True
                return None
            self.next = 0
        request = self.requests[self.next]
        self.next += 1
        return request


def build(line: str) -> bytes:
    method, path, token = line.split()
    head = f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n"
    if token != "-":
        head += f"Authorization: Bearer {token}\r\n"
    if method in ("POST", "PUT", "PATCH"):
        head += "Content-Type: application/json\r\nContent-Length: 0\r\n"
    return (head + "\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns (status, server closes the connection)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        length = int(lower[at + 17 : end])
        if length:
            await reader.readexactly(length)
    elif b"transfer-encoding: chunked" in lower:
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.read()
        return status, True
    return status, b"connection: close" in lower


async def run(args: argparse.Namespace) -> dict[str, object]:
    with open(args.requests) as source:
        requests = [build(line) for line in source if line.strip()]
    pool = Pool(requests, args.cycle)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    window_start = t0 + args.warmup
    window_end = window_start + args.duration
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    sent = 0

    async def connection(index: int) -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection(HOST, args.port)
        slot = index
        try:
            while True:
                now = loop.time()
                if now >= window_end:
                    return
                if args.rate:
                    scheduled = t0 + slot / args.rate
                    slot += args.connections
                    if scheduled >= window_end:
                        return
                    if scheduled > now:
                        await asyncio.sleep(scheduled - now)
                    began = scheduled
                else:
                    began = now
                request = pool.take()
                if request is None:
                    return
                sent += 1
                try:
                    writer.write(request)
                    status, closing = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, args.port)
                    continue
                done = loop.time()
                if window_start <= done <= window_end:
                    latencies.append(done - began)
                    statuses[status] = statuses.get(status, 0) + 1
                if closing:
                    writer.close()
                    reader, writer = await asyncio.open_connection(HOST, args.port)
        finally:
            writer.close()

    cpu_before = time.process_time()
    await asyncio.gather(*(connection(i) for i in range(args.connections)))
    finished = loop.time()
    cpu = time.process_time() - cpu_before
    measured = max(1e-9, min(finished, window_end) - window_start)
    latencies.sort()

    def pick(q: float) -> float | None:
        if not latencies:
            return None
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    return {
        "completed": len(latencies),
        "ok": ok,
        "rps": len(latencies) / measured,
        "ok_rps": ok / measured,
        "measured_s": measured,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "sent": sent,
        "pool_size": len(requests),
        "exhausted": pool.exhausted,
        "p50_ms": pick(0.50),
        "p90_ms": pick(0.90),
        "p99_ms": pick(0.99),
        "max_ms": pick(1.0),
        "client_cpu_s": cpu,
        "client_cpu_share": cpu / max(1e-9, finished - t0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--cycle", action="store_true")
    parser.add_argument("--rate", type=float, default=0.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
