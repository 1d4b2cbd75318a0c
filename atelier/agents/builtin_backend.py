"""The `builtin` backend: offline, deterministic answers from rules over detector output.

Each request type carries its own rule (`answer_builtin`), next to its schema and prompt, so
this backend only times the call and wraps the answer like any other backend's, cleaned as any
other's (atelier.agents.records: the goal's words reach the plan's rationale).
"""

from __future__ import annotations

import time

from atelier.agents.backend import AgentRequest, AgentResult, Backend


class BuiltinBackend(Backend):
    name = "builtin"

    def ask(self, request: AgentRequest) -> AgentResult:
        started = time.perf_counter()
        answer = request.answer_builtin()
        try:
            request.check(answer)  # the rules meet the same bar as a model
        except ValueError as e:  # e.g. free-text questions no probe can answer
            return AgentResult(role=request.role, mode=request.mode, ok=False, answer=None, raw=answer.model_dump_json(),
                               error=str(e), errors=[str(e)], latency_s=time.perf_counter() - started).clean()
        return AgentResult(role=request.role, mode=request.mode, ok=True, answer=answer,
                           raw=answer.model_dump_json(), latency_s=time.perf_counter() - started).clean()
