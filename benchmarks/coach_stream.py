"""The coaching stream in real time: `videogemma serve --model tiny` and camera-like clients (loopback only).

    python benchmarks/coach_stream.py [--clients 1 2] [--seconds 20] [--fps 10] [--out results.json]

The server runs as users run it (a subprocess on a free 127.0.0.1 port, `--threads 2`). Each client does what
the page's camera mode does: the real exercise clip, looped, scaled to 320×240 and sent as JPEG frames at
`--fps` frames per second of wall time with their wall times, for `--seconds`, then `end`. Per level (1, then
2 clients at once: the default `--max-coach-sessions`), printed: windows run and skipped (skipped = the model
was busy when they fell due), the feedback latency (a window's answer time minus its end: `latency_s`) p50 /
p95 / max, frames sent, and whether every client got its summary and a normal close.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import struct
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
from PIL import Image
from websockets.sync.client import connect

from videogemma.serve.coaching import COACH_PATH
from videogemma.serve.launch import serve_subprocess

REAL_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "real_clip_00000340.mp4"
STARTUP_S = 120
SIZE = (320, 240)


def clip_jpegs() -> list[bytes]:
    frames = []
    with av.open(str(REAL_CLIP)) as container:
        for frame in container.decode(video=0):
            image = Image.fromarray(frame.to_ndarray(format="rgb24", width=SIZE[0], height=SIZE[1]))
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=80)
            frames.append(buffer.getvalue())
    return frames


def client(base: str, jpegs: list[bytes], seconds: float, fps: float) -> dict:
    """One camera-like stream; its windows, feedback and how it ended."""
    step = 30.0 / fps  # the clip is 30 frames/s: play it at real speed whatever the send rate
    windows, feedback, summary = [], [], None
    with connect(base.replace("http://", "ws://") + COACH_PATH, open_timeout=30) as ws:
        ws.send(json.dumps({"type": "start"}))
        json.loads(ws.recv(timeout=60))
        started = time.monotonic()
        sent = 0
        while (now := time.monotonic() - started) < seconds:
            ws.send(struct.pack("<d", now) + jpegs[int(sent * step) % len(jpegs)])
            sent += 1
            time.sleep(max(0.0, started + sent / fps - time.monotonic()))
            _drain(ws, windows, feedback)
        ws.send(json.dumps({"type": "end"}))
        for message in _rest(ws):
            if message["type"] == "summary":
                summary = message
            _sort(message, windows, feedback)
        closed_ok = ws.close_code == 1000
    return {
        "windows": windows,
        "feedback": feedback,
        "summary": summary,
        "sent": sent,
        "closed_ok": closed_ok,
    }


def _drain(ws, windows: list, feedback: list) -> None:
    while True:
        try:
            _sort(json.loads(ws.recv(timeout=0)), windows, feedback)
        except TimeoutError:
            return


def _rest(ws):
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            yield json.loads(ws.recv(timeout=120))
    except ConnectionClosed:
        return


def _sort(message: dict, windows: list, feedback: list) -> None:
    if message["type"] == "window":
        windows.append(message)
    elif message["type"] == "feedback":
        feedback.append(message)


def level(base: str, jpegs: list[bytes], clients: int, seconds: float, fps: float) -> dict:
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: client(base, jpegs, seconds, fps), range(clients)))
    latencies = sorted(w["latency_s"] for r in results for w in r["windows"])
    ok = all(r["summary"] is not None and r["closed_ok"] for r in results)
    in_order = all(
        [w["end"] for w in r["windows"]] == sorted(w["end"] for w in r["windows"]) for r in results
    )
    return {
        "clients": clients,
        "all_summaries_and_normal_closes": ok,
        "window_ends_in_order": in_order,
        "frames_sent": [r["sent"] for r in results],
        "windows_run": [r["summary"]["windows_run"] if r["summary"] else None for r in results],
        "windows_skipped": [r["summary"]["windows_skipped"] if r["summary"] else None for r in results],
        "feedbacks": [len(r["feedback"]) for r in results],
        "latency_p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3) if latencies else None,
        "latency_max_s": round(latencies[-1], 3) if latencies else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    jpegs = clip_jpegs()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        options = ("--model", "tiny", "--threads", "2", "--max-coach-sessions", str(max(args.clients)))
        with serve_subprocess(Path(folder) / "serve.log", *options, startup_s=STARTUP_S) as base:
            for clients in args.clients:
                results.append(level(base, jpegs, clients, args.seconds, args.fps))
                print(json.dumps(results[-1]), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    return (
        0 if all(r["all_summaries_and_normal_closes"] and r["window_ends_in_order"] for r in results) else 1
    )


if __name__ == "__main__":
    sys.exit(main())
