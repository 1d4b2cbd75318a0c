"""Wall time of judge calls through the `openai` backend at several concurrency bounds, against
the tests' scripted OpenAI-protocol server answering every request after a fixed latency.

    .venv/bin/python benchmarks/agent_concurrency.py [--calls 64] [--latency 0.2] [--concurrency 1 8 32 64]
                                                     [--server process|thread] [--batches 3]

Each call is a real yes/no judgment of a rendered shapes-world image: PNG data URL, JSON-schema
response format, HTTP round trip on 127.0.0.1, validation. Ideal = calls x latency / concurrency;
the ratio is ideal / wall (1.0 = no overhead at all). Max in flight is the most requests the
server held at once. Each bound gets a fresh server and `--batches` batches of `--calls` calls:
the first opens its connections (cold), the later ones reuse them, as a run's later batches do
(warm: the median of those).

`--server process` (the default) runs the server in a child process, as vLLM is a process of its
own; `--server thread` runs it in this process, where its handler threads share the client's GIL
(a harder case than any real deployment).
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

TESTS = str(Path(__file__).resolve().parent.parent / "tests")
sys.path.insert(0, TESTS)

from openai_server import OpenAIServer, slow  # noqa: E402  (the tests' server)

from atelier.agents.judge import QuestionsJudgeRequest  # noqa: E402
from atelier.agents.openai_backend import OpenAIBackend  # noqa: E402
from atelier.config import AgentConfig  # noqa: E402
from atelier.worlds.shapes.questions import shapes_questions  # noqa: E402
from atelier.worlds.shapes.render import render  # noqa: E402
from atelier.worlds.shapes.scene import parse  # noqa: E402

PROMPT = "a red circle to the left of two blue squares"


def _serve(latency: float, control) -> None:
    """Child process: a server; answers "url", and "most" (the most in flight since the last ask)."""
    with OpenAIServer(slow(latency)) as server:
        while (command := control.recv()) != "stop":
            if command == "url":
                control.send(server.url)
            else:
                with server._lock:
                    control.send(server.max_in_flight)
                    server.max_in_flight = server.in_flight


class ServerProcess:
    def __init__(self, latency: float):
        self._control, child = multiprocessing.Pipe()
        self._process = multiprocessing.get_context("spawn").Process(target=_serve, args=(latency, child), daemon=True)

    def __enter__(self) -> ServerProcess:
        self._process.start()
        self._control.send("url")
        self.url = self._control.recv()
        return self

    def most_in_flight(self) -> int:
        self._control.send("most")
        return self._control.recv()

    def __exit__(self, *exc) -> None:
        self._control.send("stop")
        self._process.join(timeout=10)


class ServerThread(OpenAIServer):
    def __init__(self, latency: float):
        super().__init__(slow(latency))

    def most_in_flight(self) -> int:
        with self._lock:
            most, self.max_in_flight = self.max_in_flight, self.in_flight
        return most


def run(requests, bound: int, latency: float, server_kind: str, batches: int) -> list[tuple[float, int]]:
    """(wall seconds, most in flight) of each batch, the first one cold."""
    figures = []
    with (ServerProcess if server_kind == "process" else ServerThread)(latency) as server:
        backend = OpenAIBackend(AgentConfig(backend="openai", base_url=server.url, model="bench", max_concurrency=bound,
                                            timeout_s=60), "judge")
        for _ in range(batches):
            started = time.perf_counter()
            results = backend.ask_many(requests)
            figures.append((time.perf_counter() - started, server.most_in_flight()))
            assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server waits before each answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--server", choices=["process", "thread"], default="process")
    parser.add_argument("--batches", type=int, default=5, help="batches per bound; the first one opens the connections")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        questions, probes = shapes_questions(parse(PROMPT))
        requests = []
        for i in range(args.calls):  # distinct images, as in a real batch
            path = Path(tmp) / f"{i}.png"
            render(parse(PROMPT), seed=i).save(path)
            requests.append(QuestionsJudgeRequest(image=path, prompt=PROMPT, questions=questions, probes=probes))
        print(f"{args.calls} judge calls, server latency {args.latency * 1000:.0f} ms, server in a {args.server}")
        print(f"{'concurrency':>11} {'ideal s':>8} {'cold: wall s':>12} {'ideal/wall':>10} {'warm: wall s':>12} "
              f"{'ideal/wall':>10} {'max in flight':>14}")
        for bound in args.concurrency:
            figures = run(requests, bound, args.latency, args.server, args.batches)
            ideal = args.calls * args.latency / bound
            cold, warm = figures[0][0], statistics.median(wall for wall, _ in figures[1:]) if len(figures) > 1 else float("nan")
            print(f"{bound:>11} {ideal:>8.2f} {cold:>12.2f} {ideal / cold:>9.2f}x {warm:>12.2f} {ideal / warm:>9.2f}x "
                  f"{max(m for _, m in figures):>14}")


if __name__ == "__main__":
    main()
