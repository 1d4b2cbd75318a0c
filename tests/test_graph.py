from atelier.graphs.graph import build_graph, compile_graph
from atelier.graphs.state import merge_batches


def test_graph_edges_are_as_designed():
    graph = compile_graph().get_graph()
    edges = {(e.source, e.target) for e in graph.edges}
    expected = {
        ("__start__", "plan"),
        ("plan", "baseline"),
        ("baseline", "write_prompts"),
        ("write_prompts", "generate"),
        ("generate", "judge"),
        ("judge", "curate"),
        ("curate", "train"),
        ("train", "evaluate"),
        ("evaluate", "decide"),
        ("decide", "write_prompts"),
        ("decide", "report"),
        ("report", "__end__"),
    }
    assert edges == expected


def test_all_nodes_present():
    assert set(build_graph().nodes) == {
        "plan", "baseline", "write_prompts", "generate", "judge", "curate", "train", "evaluate", "decide", "report"
    }


def test_judged_reducer_resets_each_round():
    assert merge_batches(None, ["b1"]) == ["b1"]
    assert merge_batches(["b1"], ["b0"]) == ["b0", "b1"]
    assert merge_batches(["b0", "b1"], []) == []
    assert merge_batches(["b0"], ["b0"]) == ["b0"]
