"""Copier benchmark: memory must not grow with file size, and hashing + counting must cost little.

Streams synthetic CSV of two sizes through :func:`exportpipe.adapters.copier.stream_to_s3` into S3 served by
a moto server in a *separate process* (so only the copier's own allocations are traced), and writes
the figures to ``bench-output/copier.json``. Machines here are noisy, so the figures that gate are
ratios measured side by side in one run:

- peak traced memory, large file / small file (must stay near 1: memory independent of size);
- copier time / plain ``upload_fileobj`` time of the same bytes (the cost of SHA-256, record
  counting and length checks on top of boto3's managed transfer).

    make bench          # or: .venv/bin/python -m tests.bench.bench_copier
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import boto3
import requests

from exportpipe.adapters.copier import MIB, CopyTuning, stream_to_s3
from exportpipe.models.job import ResultFile

SIZES_MIB = (16, 128)
PART_MIB = 8
# 8x the bytes may cost at most 2x the memory, and never more than the transfer's own bound:
# part size x (upload threads + read-ahead parts + the part being read).
MAX_PEAK_RATIO = 2.0
MAX_OVERHEAD_RATIO = 1.5
ROW = b'201917,"The ""Widget Co"" CEO","a,b",2026-11-24 10:00:00,"multi\nline",\\@handle\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _chunks(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    # Whole rows only (``total`` is a multiple of the row): the copier refuses a CSV cut mid-record.
    block = ROW * (chunk // len(ROW))
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


class _PlainReader:
    """The baseline: the same chunks, read with no hashing or counting."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self._buffer) < size) and (piece := next(self._chunks, b"")):
            self._buffer += piece
        out, self._buffer = (self._buffer, b"") if size < 0 else (self._buffer[:size], self._buffer[size:])
        return out


def main() -> int:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        s3.create_bucket(Bucket="bench")
        tuning = CopyTuning(part_size=PART_MIB * MIB)
        results = []
        for size in SIZES_MIB:
            total = size * MIB // len(ROW) * len(ROW)
            started = time.perf_counter()
            s3.upload_fileobj(
                _PlainReader(_chunks(total)), "bench", f"plain{size}.csv", Config=tuning.transfer_config()
            )
            plain_seconds = time.perf_counter() - started

            def copy(key: str, total: int = total) -> ResultFile:
                return stream_to_s3(
                    s3,
                    _chunks(total),
                    bucket="bench",
                    key=key,
                    content_type="text/csv",
                    expected_length=total,
                    file_format="csv",
                    tuning=tuning,
                )

            started = time.perf_counter()
            landed = copy(f"f{size}.csv")
            seconds = time.perf_counter() - started
            assert landed.bytes == total
            tracemalloc.start()  # a separate run: tracing slows everything down
            copy(f"m{size}.csv")
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            results.append(
                {
                    "size_mib": size,
                    "plain_upload_seconds": round(plain_seconds, 2),
                    "copier_seconds": round(seconds, 2),
                    "copier_mib_per_second": round(size / seconds, 1),
                    "overhead_ratio": round(seconds / plain_seconds, 2),
                    "peak_traced_mib": round(peak / MIB, 1),
                    "records": landed.records,
                }
            )
    finally:
        server.terminate()
        server.wait(timeout=10)
    ratio = results[-1]["peak_traced_mib"] / results[0]["peak_traced_mib"]
    overhead = max(r["overhead_ratio"] for r in results)
    bound = PART_MIB * (tuning.max_concurrency + tuning.max_in_memory_chunks + 1)
    worst_peak = max(r["peak_traced_mib"] for r in results)
    report = {
        "benchmark": "copier",
        "part_size_mib": PART_MIB,
        "runs": results,
        "size_ratio": SIZES_MIB[-1] / SIZES_MIB[0],
        "peak_memory_ratio_large_to_small": round(ratio, 2),
        "max_peak_memory_ratio": MAX_PEAK_RATIO,
        "worst_peak_traced_mib": worst_peak,
        "memory_bound_mib": bound,
        "worst_overhead_ratio": overhead,
        "max_overhead_ratio": MAX_OVERHEAD_RATIO,
        "ok": ratio <= MAX_PEAK_RATIO and worst_peak <= bound and overhead <= MAX_OVERHEAD_RATIO,
    }
    out = Path("bench-output")
    out.mkdir(exist_ok=True)
    (out / "copier.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
