"""Load and failure test of `videogemma serve` (tiny model, loopback only, bounded in count and time).

    python benchmarks/serve_load.py [--clients 1 4 16] [--max-tokens 16 64] [--out results.json]

Two servers run side by side as users run them (`videogemma serve --model tiny` subprocesses on free
127.0.0.1 ports, 2 torch threads each): dynamic batching on (`--max-batch-size 16`) and off (`--no-batching`).
At each answer length (16 and 64 new tokens) and level, one server after the other (so that the shared
machine's load falls on both alike), 1, 4 and 16 concurrent clients send chat-completion requests about real
clips (the shared exercise clip and four clips cut from it: mirrored, first half, second half, centre crop),
half uploaded as data: URLs, half named under `--media-root`, with several questions. Each client checks that every answer
equals the single-request answer for its video and question (`inference.generate.answer` in this process, the
same settings), so a failed, mixed-up or altered answer is counted. Printed: throughput (answers/s),
p50 / p95 latency, failures and mix-ups per level, and the ratio of batched to unbatched throughput (goal: ≥ 2×
at 16 clients on 2 cores).

Then bad requests are mixed in on the batching server (16 clients, every other request bad: a corrupt video,
an oversize upload, a path outside the media root, malformed JSON): each must get its 4xx in the OpenAI error
shape and every good request its right answer; the server must still answer `/health` at the end.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from videogemma.serve.launch import serve_subprocess

REAL_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "real_clip_00000340.mp4"
QUESTIONS = ("How is my form?", "Which exercise is this?", "Are my knees over my toes? Tell me what to fix.")
REQUESTS_PER_CLIENT = {1: 6, 4: 3, 16: 2}  # answers each client asks for at that level
MAX_VIDEO_BYTES = (
    2 * 2**20
)  # the servers' upload limit here: the clips are ~0.1-0.5 MB, the oversize one 3 MB
LEVEL_TIMEOUT_S = 240  # a level still running then is reported as failed
STARTUP_S = 120
GOAL_RATIO = 2.0


# ---- clips and reference answers --------------------------------------------------------------------------


def make_clips(folder: Path) -> list[Path]:
    """The real clip and four real-footage variants of it (distinct videos: a mix-up changes the answer)."""
    import av
    import numpy as np

    with av.open(str(REAL_CLIP)) as container:
        frames = np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])
    height, width = frames.shape[1:3]
    variants = {
        "mirrored": frames[:, :, ::-1],
        "first_half": frames[: len(frames) // 2],
        "second_half": frames[len(frames) // 2 :],
        "centre_crop": frames[:, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4],
    }
    clips = [folder / "real.mp4"]
    clips[0].write_bytes(REAL_CLIP.read_bytes())
    for name, video in variants.items():
        path = folder / f"{name}.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=30)
            stream.height, stream.width = video.shape[1:3]
            stream.pix_fmt = "yuv420p"
            for image in video:
                container.mux(
                    stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))
                )
            container.mux(stream.encode())
        clips.append(path)
    return clips


@functools.cache
def tiny_model() -> tuple:
    import torch

    from videogemma import load

    torch.set_num_threads(2)
    return load("tiny")


def reference_answers(clips: list[Path], max_tokens: int) -> dict[tuple[str, str], str]:
    """The single-request answer of each (clip, question), computed in this process."""
    from videogemma.inference.generate import GenerationSettings, answer

    model, processor = tiny_model()
    settings = GenerationSettings(max_new_tokens=max_tokens)
    return {
        (clip.name, question): answer(model, processor, clip, question, settings=settings).text
        for clip in clips
        for question in QUESTIONS
    }


# ---- the server -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def server(media_root: Path, log: Path, *options: str) -> Iterator[str]:
    with serve_subprocess(
        log, "--model", "tiny", "--media-root", str(media_root), "--threads", "2", "--max-queue", "64",
        "--max-video-bytes", str(MAX_VIDEO_BYTES), *options, startup_s=STARTUP_S,
    ) as base:  # fmt: skip
        yield base


# ---- clients ----------------------------------------------------------------------------------------------------


@dataclass
class Case:
    clip: Path
    question: str
    upload: bool

    def body(self, max_tokens: int) -> dict:
        if self.upload:
            url = "data:video/mp4;base64," + base64.b64encode(self.clip.read_bytes()).decode("ascii")
        else:
            url = f"file://{self.clip.name}"
        content = [{"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": self.question}]
        return {"model": "tiny", "max_tokens": max_tokens, "messages": [{"role": "user", "content": content}]}


@dataclass
class LevelResult:
    clients: int
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    mixups: int = 0
    wall_s: float = 0.0

    def summary(self) -> dict:
        ordered = sorted(self.latencies)
        return {
            "clients": self.clients,
            "answers": len(self.latencies),
            "failed": len(self.failures),
            "mixed_up": self.mixups,
            "throughput_per_s": len(self.latencies) / self.wall_s if self.wall_s else 0.0,
            "p50_s": statistics.median(ordered) if ordered else None,
            "p95_s": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] if ordered else None,
            "wall_s": self.wall_s,
        }


def ask(client: httpx.Client, base: str, case: Case, max_tokens: int, want: str, result: LevelResult) -> None:
    start = time.perf_counter()
    try:
        response = client.post(
            f"{base}/v1/chat/completions", json=case.body(max_tokens), timeout=LEVEL_TIMEOUT_S
        )
    except httpx.HTTPError as error:
        result.failures.append(f"{type(error).__name__}: {error}")
        return
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        result.failures.append(f"{response.status_code}: {response.text[:200]}")
        return
    result.latencies.append(elapsed)
    if response.json()["choices"][0]["message"]["content"] != want:
        result.mixups += 1


def run_level(base: str, cases: list[Case], clients: int, max_tokens: int, references: dict) -> LevelResult:
    result = LevelResult(clients)
    per_client = REQUESTS_PER_CLIENT.get(clients, 2)

    def client_loop(index: int) -> None:
        with httpx.Client() as client:
            for k in range(per_client):
                case = cases[(index * per_client + k) % len(cases)]
                ask(client, base, case, max_tokens, references[case.clip.name, case.question], result)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    result.wall_s = time.perf_counter() - start
    return result


# ---- bad requests mixed in ------------------------------------------------------------------------------------------


def bad_requests(folder: Path, clip: Path) -> list[tuple[str, int, dict]]:
    """(kind, expected status, request arguments for httpx)."""
    corrupt = (
        "data:video/mp4;base64," + base64.b64encode(b"\x00\x00\x00\x18ftypmp42 not a video" * 40).decode()
    )
    oversize = "data:video/mp4;base64," + base64.b64encode(os.urandom(MAX_VIDEO_BYTES + 2**20)).decode()

    def video(url: str) -> dict:
        return {
            "json": {
                "messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}}]}]
            }
        }

    outside = folder.parent / "outside.mp4"
    outside.write_bytes(clip.read_bytes())
    return [
        ("corrupt video", 400, video(corrupt)),
        ("oversize upload", 413, video(oversize)),
        ("path outside the root", 403, video(f"file://{outside}")),
        ("path climbing out", 403, video("file://../outside.mp4")),
        ("malformed JSON", 400, {"content": b'{"messages": [{"role": "user", "content": [', "headers": {"Content-Type": "application/json"}}),
    ]  # fmt: skip


def run_mixed(
    base: str, cases: list[Case], bad: list, max_tokens: int, references: dict, clients: int = 16
) -> dict:
    good = LevelResult(clients)
    wrong_status: list[str] = []

    def client_loop(index: int) -> None:
        with httpx.Client() as client:
            for k in range(2):
                kind, status, arguments = bad[(index + k) % len(bad)]
                response = client.post(f"{base}/v1/chat/completions", timeout=LEVEL_TIMEOUT_S, **arguments)
                shape_ok = set(response.json().get("error", {})) == {"message", "type", "param", "code"}
                if response.status_code != status or not shape_ok:
                    wrong_status.append(f"{kind}: {response.status_code} {response.text[:120]}")
                case = cases[(index * 2 + k) % len(cases)]
                ask(client, base, case, max_tokens, references[case.clip.name, case.question], good)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client_loop, range(clients)))
    good.wall_s = time.perf_counter() - start
    healthy = httpx.get(f"{base}/health", timeout=10).status_code == 200
    return {
        "good": good.summary(),
        "bad_sent": clients * 2,
        "bad_wrong": wrong_status,
        "healthy_after": healthy,
    }


# ---- main ----------------------------------------------------------------------------------------------------------


SERVERS = {
    "batching": ("--max-batch-size", "16", "--batch-wait-ms", "20"),
    "no_batching": ("--no-batching",),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--max-tokens", type=int, nargs="+", default=[16, 64], help="answer lengths to measure"
    )
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary, contextlib.ExitStack() as servers:
        folder = Path(temporary) / "media"
        folder.mkdir()
        clips = make_clips(folder)
        cases = [
            Case(clip, question, upload=(i + j) % 2 == 0)
            for i, clip in enumerate(clips)
            for j, question in enumerate(QUESTIONS)
        ]
        bases = {
            name: servers.enter_context(server(folder, Path(temporary) / f"{name}.log", *options))
            for name, options in SERVERS.items()
        }
        results: dict = {"runs": []}
        for max_tokens in args.max_tokens:
            references = reference_answers(clips, max_tokens)
            for base in bases.values():
                run_level(base, cases, 1, max_tokens, references)  # warm-up: first-call costs
            levels: dict = {name: [] for name in bases}
            for clients in args.clients:  # both servers at each level in turn: the machine's load hits both
                for name, base in bases.items():
                    levels[name].append(run_level(base, cases, clients, max_tokens, references).summary())
            results["runs"].append({"max_tokens": max_tokens, "levels": levels})
        last = results["runs"][-1]["max_tokens"]
        results["batches"] = httpx.get(f"{bases['batching']}/health").json()["batching"]
        results["mixed"] = run_mixed(
            bases["batching"], cases, bad_requests(folder, clips[0]), last, reference_answers(clips, last)
        )
    report(results, args.clients)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok(results) else 1


def report(results: dict, clients: list[int]) -> None:
    header = f"{'tokens':>6} {'server':<12} {'clients':>7} {'answers':>7} {'failed':>6} {'mixed':>5}"
    print(f"{header} {'answers/s':>9} {'p50 s':>6} {'p95 s':>6}")
    for run in results["runs"]:
        for name, levels in run["levels"].items():
            for level in levels:
                print(f"{run['max_tokens']:>6} {name:<12} {level['clients']:>7} {level['answers']:>7} "
                      f"{level['failed']:>6} {level['mixed_up']:>5} {level['throughput_per_s']:>9.2f} "
                      f"{level['p50_s'] or 0:>6.2f} {level['p95_s'] or 0:>6.2f}")  # fmt: skip
    for run in results["runs"]:
        for index, n in enumerate(clients):
            on, off = run["levels"]["batching"][index], run["levels"]["no_batching"][index]
            ratio = (
                on["throughput_per_s"] / off["throughput_per_s"] if off["throughput_per_s"] else float("nan")
            )
            met = "met" if ratio >= GOAL_RATIO else "not met"
            goal = f" (goal ≥ {GOAL_RATIO}×: {met})" if n == max(clients) else ""
            print(f"{run['max_tokens']} tokens, batching / no batching at {n} client(s): {ratio:.2f}×{goal}")
    print(f"batches on the batching server: {results['batches']}")
    mixed = results["mixed"]
    good = mixed["good"]
    print(f"bad requests mixed in: {mixed['bad_sent']} bad sent, {len(mixed['bad_wrong'])} answered wrongly; "
          f"{good['answers']} good answered, {good['failed']} failed, {good['mixed_up']} mixed up; "
          f"/health after: {'ok' if mixed['healthy_after'] else 'DOWN'}")  # fmt: skip
    for line in mixed["bad_wrong"]:
        print(f"  wrong: {line}")


def ok(results: dict) -> bool:
    levels = [level for run in results["runs"] for name in run["levels"].values() for level in name]
    mixed = results["mixed"]
    clean = all(level["failed"] == 0 and level["mixed_up"] == 0 for level in levels)
    good = mixed["good"]
    return (
        clean
        and not mixed["bad_wrong"]
        and good["failed"] == 0
        and good["mixed_up"] == 0
        and mixed["healthy_after"]
    )


if __name__ == "__main__":
    sys.exit(main())
