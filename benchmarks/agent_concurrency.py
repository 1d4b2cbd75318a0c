"""Wall time of judge calls through the `openai` backend at several concurrency bounds, against
the tests' scripted OpenAI-protocol server answering every request after a fixed latency.

    .venv/bin/python benchmarks/agent_concurrency.py [--calls 64] [--latency 0.2] [--concurrency 1 8 32 64]

Each call is a real yes/no judgment of a rendered shapes-world image: PNG data URL, JSON-schema
response format, HTTP round trip on 127.0.0.1, validation. Ideal = calls x latency / concurrency;
the ratio is ideal / wall (1.0 = no overhead at all). Max in flight is the most requests the
server held at once. The server runs in this process and shares its GIL (a server in a child
process measured no better on 2 cores: BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from openai_server import OpenAIServer, slow  # noqa: E402  (the tests' server)

from atelier.agents.judge import QuestionsJudgeRequest  # noqa: E402
from atelier.agents.openai_backend import OpenAIBackend  # noqa: E402
from atelier.config import AgentConfig  # noqa: E402
from atelier.worlds.shapes.questions import shapes_questions  # noqa: E402
from atelier.worlds.shapes.render import render  # noqa: E402
from atelier.worlds.shapes.scene import parse  # noqa: E402

PROMPT = "a red circle to the left of two blue squares"


def run(requests, bound: int, latency: float) -> tuple[float, int, list]:
    with OpenAIServer(slow(latency)) as server:
        backend = OpenAIBackend(AgentConfig(backend="openai", base_url=server.url, model="bench", max_concurrency=bound,
                                            timeout_s=60), "judge")
        started = time.perf_counter()
        results = backend.ask_many(requests)
        wall = time.perf_counter() - started
    return wall, server.max_in_flight, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server waits before each answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        questions, probes = shapes_questions(parse(PROMPT))
        requests = []
        for i in range(args.calls):  # distinct images, as in a real batch
            path = Path(tmp) / f"{i}.png"
            render(parse(PROMPT), seed=i).save(path)
            requests.append(QuestionsJudgeRequest(image=path, prompt=PROMPT, questions=questions, probes=probes))
        print(f"{args.calls} judge calls, server latency {args.latency * 1000:.0f} ms")
        print(f"{'concurrency':>11} {'wall s':>8} {'ideal s':>8} {'ideal/wall':>10} {'max in flight':>14}")
        for bound in args.concurrency:
            wall, most, results = run(requests, bound, args.latency)
            assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
            ideal = args.calls * args.latency / bound
            print(f"{bound:>11} {wall:>8.2f} {ideal:>8.2f} {ideal / wall:>9.2f}x {most:>14}")


if __name__ == "__main__":
    main()
