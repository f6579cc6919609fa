"""The report page's data and the exports: GraphML, Newick, networkx, Graphviz figures, `mothertree report`.

What a browser makes of the page is tested in ``test_report_browser.py``. Results here are either hand-made
(``example``: only the formats matter) or recovered from the really trained ``bert_family`` (slow).
"""

from __future__ import annotations

import html
import json
import re
import shutil
from io import StringIO
from pathlib import Path

import dendropy
import networkx as nx
import pytest
from click.testing import CliRunner
from test_result import example

import mothertree
from mothertree.cli import main
from mothertree.errors import GraphvizNotFoundError
from mothertree.render import to_graphml, to_newick, to_png, to_svg
from mothertree.report import edge_status, inline_frame, missing_edges, report_data, to_html
from mothertree.result import Edge, RecoveredModel, RecoveredTree, RecoveryResult

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def awkward() -> RecoveryResult:
    """Model ids that Newick, XML and HTML must escape: blanks, quotes, underscores, brackets, `</script>`."""
    ids = ["org/base model", "it's_ft", "a(b):c", "</script><b>x", "plain-1.0"]
    return RecoveryResult(
        models=[RecoveredModel(i, f"/m/{k}", 0) for k, i in enumerate(ids)],
        edges=[
            Edge(ids[0], ids[1], 1 / 3, 0.9, direction_probability=0.95),  # needs every digit
            Edge(ids[0], ids[2], 1e-05, 0.6, direction_probability=0.7),
            Edge(ids[2], ids[3], 0.5, 1.0, known=True),
            Edge(ids[3], ids[4], 0.125, 0.99),
        ],
        trees=[RecoveredTree(ids[0], ids, "norm grows")],
        params={"direction": "auto"},
    )


def _payload(page: str) -> str:
    """The text of the page's data script, up to the first `</script>` (where the browser would end it)."""
    marker = '<script type="application/json" id="mothertree-data">'
    start = page.index(marker) + len(marker)
    return page[start : page.index("</script>", start)]


def test_truth_overlay_sorts_every_edge() -> None:
    result = example()  # edges base -> ft, base -> lora
    truth = {("ft", "base"), ("lora", "alone"), ("alone", "x")}
    assert edge_status(result.edges, truth) == {("base", "ft"): "reversed", ("base", "lora"): "misplaced"}
    # A reversed edge joins the right pair: it is not also missing.
    assert missing_edges(result.edges, truth) == [("alone", "x"), ("lora", "alone")]
    data = report_data(result, truth)
    assert [e["truth"] for e in data["edges"]] == ["reversed", "misplaced"]
    assert data["truth"]["score"]["directed_accuracy"] == 0.0
    assert data["truth"]["n_undirected_correct"] == 1
    assert data["truth"]["parent"] == {"base": "ft", "ft": None, "lora": None, "alone": "lora"}


def test_report_data_carries_the_json_contract_and_no_truth_unless_given() -> None:
    result = example()
    data = report_data(result)
    contract = result.to_json()
    assert data["truth"] is None and "truth" not in data["edges"][0]
    for key in ("models", "edges", "trees", "skipped", "params", "mothertree_version"):
        assert data[key] == contract[key]


def test_the_page_is_one_file_that_requests_nothing() -> None:
    page = to_html(awkward())
    # No URL to fetch, and a policy that forbids the browser any request, inline code excepted.
    assert not re.search(r"(src|href)=[\"'](?!data:)", page)
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page
    assert "{{" not in page  # every part of the template was filled in


def test_no_model_id_can_end_the_data_script() -> None:
    page = to_html(awkward())
    payload = _payload(page)
    assert json.loads(payload)["models"][3]["id"] == "</script><b>x"


def test_jupyter_shows_the_report_in_a_sandboxed_frame() -> None:
    result = example()
    frame = result._repr_html_()
    assert frame == inline_frame(result)
    assert frame.startswith('<iframe srcdoc="') and 'sandbox="allow-scripts"' in frame
    srcdoc = frame[len('<iframe srcdoc="') : frame.index('" sandbox=')]
    assert html.unescape(srcdoc) == to_html(result)


def test_a_result_read_back_keeps_the_version_that_wrote_it() -> None:
    data = example().to_json()
    data["mothertree_version"] = "0.0.1"
    again = RecoveryResult.from_json(data)
    assert again.mothertree_version == "0.0.1" and again.to_json() == data
    assert example().mothertree_version == mothertree.__version__


def test_networkx_graph_of_a_result() -> None:
    graph = example().to_networkx()
    assert isinstance(graph, nx.DiGraph)
    assert set(graph.nodes) == {"base", "ft", "lora", "alone"}  # a tree of one model is a node
    assert set(graph.edges) == {("base", "ft"), ("base", "lora")}
    assert graph.nodes["alone"] == {"path": "/m/alone.safetensors", "tree": 1, "root": True}  # no nulls
    assert graph.nodes["base"] == {
        "path": "/m/base",
        "tree": 0,
        "root": True,
        "dtype": "BF16",
        "parameters": 22_700_000,
        "aliases": "base-copy",
    }
    assert graph.edges["base", "ft"] == {
        "distance": 0.0012,
        "confidence": 0.5,
        "known": False,
        "direction_probability": 0.52,
        "direction": "undetermined",
        "placement_margin": 0.8,
    }
    assert "placement_margin" not in graph.edges["base", "lora"]  # not recorded: left out, not null
    assert graph.graph["params"]["direction"] == "auto"


def _same_graph(graph: nx.DiGraph, result: RecoveryResult) -> None:
    reference = result.to_networkx()
    assert set(graph.edges) == set(reference.edges)
    for node, attributes in reference.nodes(data=True):
        assert graph.nodes[node] == {"label": node, **attributes}
    for parent, child, attributes in reference.edges(data=True):
        assert graph.edges[parent, child] == attributes  # floats bit for bit


@pytest.mark.parametrize("make", [example, awkward])
def test_graphml_reads_back_in_networkx(make) -> None:
    result = make()
    _same_graph(nx.read_graphml(StringIO(to_graphml(result))), result)


# Read every node's name as its label, leaves' too (dendropy makes leaves' names taxa by default).
NEWICK_LABELS = {"suppress_internal_node_taxa": True, "suppress_leaf_node_taxa": True}


def _parents(tree: dendropy.Tree) -> dict[str, tuple[str, float]]:
    return {
        node.label: (node.parent_node.label, node.edge.length)
        for node in tree.preorder_node_iter()
        if node.parent_node is not None
    }


@pytest.mark.parametrize("make", [example, awkward])
def test_newick_reads_back_in_dendropy(make) -> None:
    result = make()
    lines = to_newick(result).splitlines()
    assert len(lines) == len(result.trees)
    for line, recovered in zip(lines, result.trees, strict=True):
        # Every model is a labelled node, internal ones included; underscores stay underscores.
        tree = dendropy.Tree.get(data=line, schema="newick", **NEWICK_LABELS, preserve_underscores=True)
        assert tree.seed_node.label == recovered.root
        assert _parents(tree) == {
            e.child: (e.parent, e.distance) for e in result.edges if e.child in recovered.models
        }


def test_newick_of_a_chain_deeper_than_pythons_stack() -> None:
    ids = [f"m{k}" for k in range(3000)]
    chain = RecoveryResult(
        models=[RecoveredModel(i, i, 0) for i in ids],
        edges=[Edge(a, b, 0.5, 0.9) for a, b in zip(ids, ids[1:], strict=False)],
        trees=[RecoveredTree(ids[0], ids)],
    )
    text = to_newick(chain)
    assert text.startswith("(" * 2999 + "m2999:0.5)m2998:0.5)") and text.endswith(")m0;\n")


@needs_dot
def test_figures_are_laid_out_by_graphviz() -> None:
    svg = to_svg(awkward())
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert svg.count('class="node"') == 5 and svg.count('class="edge"') == 4
    assert "&lt;/script&gt;&lt;b&gt;x" in svg  # escaped by Graphviz, drawn as text
    png = to_png(example())
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_without_graphviz_the_figure_error_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no `dot` anywhere
    with pytest.raises(GraphvizNotFoundError, match="Graphviz's `dot`, which is not on PATH"):
        to_png(example())
    result = tmp_path / "result.json"
    result.write_text(json.dumps(example().to_json()))
    code, out, err = run("report", str(result), "-o", str(tmp_path / "tree.svg"))
    assert code == 1 and out == ""
    assert err.startswith("error: `--format svg` is laid out by Graphviz's `dot`, which is not on PATH\n\n")
    assert "hint: install Graphviz (`apt-get install graphviz`" in err


@pytest.fixture()
def result_file(tmp_path: Path) -> Path:
    path = tmp_path / "result.json"
    path.write_text(json.dumps(example().to_json()))
    return path


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("r.html", b"<!DOCTYPE html>"),
        ("r.graphml", b"<?xml"),
        ("r.nwk", b"(ft:0.0012,lora:0.0004)base;\nalone;\n"),
        ("r.dot", b"digraph model_trees {"),
        ("r.json", b'{\n  "format": 2'),
    ],
)
def test_report_takes_the_format_from_the_output_suffix(result_file: Path, name: str, start: bytes) -> None:
    out = result_file.parent / name
    code, stdout, err = run("report", str(result_file), "-o", str(out))
    assert code == 0 and stdout == ""
    assert out.read_bytes().startswith(start)
    assert f"wrote `{out}`" in err


def test_report_without_output_writes_html_to_stdout(result_file: Path) -> None:
    code, out, _ = run("report", str(result_file))
    assert (
        code == 0 and out.startswith("<!DOCTYPE html>") and "<title>Model Trees: result.json</title>" in out
    )


def test_report_refuses_what_it_cannot_do(result_file: Path, tmp_path: Path) -> None:
    code, _, err = run("report", str(result_file), "-o", str(tmp_path / "tree.pdf"))
    assert code == 1
    assert err.startswith(f"error: cannot tell which format to write from the suffix `.pdf` of `{tmp_path}")
    assert "hint: give --format, one of: text, json, html, dot, svg, graphml, newick, png" in err
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"edges": [{"parent": "base", "child": "ft"}]}))
    code, _, err = run("report", str(result_file), "--truth", str(truth), "--format", "newick")
    assert code == 1 and err.startswith(
        "error: `--truth` is shown by the HTML report, not by `--format newick`"
    )
    code, _, err = run("report", str(tmp_path / "nothing.json"))
    assert code == 1 and err.startswith(f"error: `{tmp_path / 'nothing.json'}` does not exist\n\nhint: ")
    truth.write_text("{not json")
    code, _, err = run("report", str(truth))
    assert code == 1 and err.startswith(f"error: `{truth}` is not valid JSON")


@pytest.mark.slow
def test_real_result_exports_round_trip(bert_family: Path, tmp_path: Path) -> None:
    code, out, _ = run("recover", str(bert_family), "--format", "json", "--quiet")
    assert code == 0
    (tmp_path / "result.json").write_text(out)
    result = RecoveryResult.from_json(json.loads(out))
    code, graphml, _ = run("recover", str(bert_family), "--format", "graphml", "--quiet")
    assert code == 0
    _same_graph(nx.read_graphml(StringIO(graphml)), result)
    code, newick, _ = run("report", str(tmp_path / "result.json"), "--format", "newick")
    [line] = newick.splitlines()
    tree = dendropy.Tree.get(data=line, schema="newick", **NEWICK_LABELS)
    assert _parents(tree) == {e.child: (e.parent, e.distance) for e in result.edges}


@pytest.mark.slow
def test_demo_ends_with_the_report_of_its_graph(tiny_demo, tmp_path: Path, monkeypatch) -> None:
    """The demo command on the tiny demo graph (really trained): its last line names the report it wrote."""
    graph = tmp_path / "graph"
    shutil.copytree(tiny_demo.path, graph)
    monkeypatch.setattr("mothertree.zoo.demo.build_demo_graph", lambda *args, **kwargs: graph)
    code, out, _ = run("demo", "-q")
    assert code == 0
    last = out.rstrip().splitlines()[-1]
    assert last == f"report (open it in a browser): {graph / 'report.html'}"
    data = json.loads(_payload((graph / "report.html").read_text()))
    assert {m["id"] for m in data["models"]} == {"mobilenetv2-imagenet", "orientation", "size", "colour"}
    assert data["truth"]["score"]["n_edges"] == 3
