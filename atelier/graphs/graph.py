"""The self-improvement loop as a LangGraph StateGraph. The only place that knows the order:

plan -> baseline -> write_prompts -(Send per batch)-> generate -(Send)-> judge -> curate -> train
     -> evaluate -> decide -> write_prompts (next round) | report -> END
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from atelier.graphs import nodes
from atelier.graphs.state import LoopContext, LoopState


def build_graph() -> StateGraph:
    g = StateGraph(LoopState, context_schema=LoopContext)
    g.add_node("plan", nodes.plan)
    g.add_node("baseline", nodes.baseline)
    g.add_node("write_prompts", nodes.write_prompts)
    g.add_node("generate", nodes.generate_batch, destinations=("judge",))
    g.add_node("judge", nodes.judge)
    g.add_node("curate", nodes.curate)
    g.add_node("train", nodes.train)
    g.add_node("evaluate", nodes.evaluate)
    g.add_node("decide", nodes.decide)
    g.add_node("report", nodes.report)
    g.add_edge(START, "plan")
    g.add_edge("plan", "baseline")
    g.add_edge("baseline", "write_prompts")
    g.add_conditional_edges("write_prompts", nodes.fan_out_generate, ["generate"])
    g.add_edge("judge", "curate")
    g.add_edge("curate", "train")
    g.add_edge("train", "evaluate")
    g.add_edge("evaluate", "decide")
    g.add_conditional_edges("decide", nodes.after_decide, ["write_prompts", "report"])
    g.add_edge("report", END)
    return g


def compile_graph(checkpointer=None):
    return build_graph().compile(checkpointer=checkpointer)
