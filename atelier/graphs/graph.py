"""The self-improvement loop as a LangGraph StateGraph. The only place that knows the order:

plan -> baseline -> write_prompts -(Send per batch)-> generate -(Send)-> judge -> [strategy's nodes]
     -> curate -> train -> evaluate -> decide -> write_prompts (next round) | report -> END

A strategy may add nodes between judge and curate (RPO: critique -> edit -> pair); it never
reorders the spine.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from atelier.graphs import nodes
from atelier.graphs.state import LoopContext, LoopState
from atelier.strategies.base import Strategy


def build_graph(strategy: Strategy | None = None) -> StateGraph:
    g = StateGraph(LoopState, context_schema=LoopContext)
    g.add_node("plan", nodes.plan)
    g.add_node("baseline", nodes.baseline)
    g.add_node("write_prompts", nodes.write_prompts)
    g.add_node("generate", nodes.generate_batch, destinations=("judge",))
    g.add_node("judge", nodes.judge)
    extra = list(strategy.extra_nodes()) if strategy is not None else []
    for name, node in extra:
        g.add_node(name, node)
    g.add_node("curate", nodes.curate)
    g.add_node("train", nodes.train)
    g.add_node("evaluate", nodes.evaluate)
    g.add_node("decide", nodes.decide)
    g.add_node("report", nodes.report)
    g.add_edge(START, "plan")
    g.add_edge("plan", "baseline")
    g.add_edge("baseline", "write_prompts")
    g.add_conditional_edges("write_prompts", nodes.fan_out_generate, ["generate"])
    chain = ["judge", *(name for name, _ in extra), "curate"]
    for before, after in zip(chain, chain[1:]):
        g.add_edge(before, after)
    g.add_edge("curate", "train")
    g.add_edge("train", "evaluate")
    g.add_edge("evaluate", "decide")
    g.add_conditional_edges("decide", nodes.after_decide, ["write_prompts", "report"])
    g.add_edge("report", END)
    return g


def compile_graph(checkpointer=None, strategy: Strategy | None = None):
    return build_graph(strategy).compile(checkpointer=checkpointer)
