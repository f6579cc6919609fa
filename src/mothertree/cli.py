"""The ``mothertree`` command: ``recover``, ``index``, ``add``, ``query``, ``compare``, ``evaluate``,
``report``, ``demo``.

Data (trees, JSON, DOT, scores; a report, figure or export unless ``--output`` names a file) goes to
stdout; logs, warnings, errors and hints go to stderr. A ``MotherTreeError`` becomes ``error: ...`` plus
``hint: ...`` and exit code 1; set ``MOTHERTREE_DEBUG=1`` for the traceback.

Only click, the errors and the names of the options (``_choices``) are imported up front: each command
imports what it runs, so that ``mothertree --help`` does not wait for numpy, scipy and the readers.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import click

from ._choices import (
    BINARY_FORMATS,
    DEFAULT_LAM,
    DIRECTIONS,
    DISTANCES,
    RELATIONS,
    TEXT_FORMATS,
    UNRELATED_ABOVE,
    Direction,
    Distance,
)
from .errors import InvalidParameterError, MissingDependencyError, MotherTreeError

if TYPE_CHECKING:
    from .evaluation.metrics import Score
    from .evaluation.truth import EdgeSet
    from .io.types import BrokenModel
    from .result import RecoveryResult

LOG = logging.getLogger("mothertree")
F = TypeVar("F", bound=Callable[..., Any])


def _report_errors(command: F) -> F:
    """Turn a MotherTreeError into `error:` / `hint:` on stderr and exit code 1 (no traceback)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MotherTreeError as exc:
            if os.environ.get("MOTHERTREE_DEBUG"):
                raise
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"\nhint: {exc.hint}", err=True)
            sys.exit(1)

    return cast(F, wrapper)


def _start_work(quiet: bool, *, recovers: bool = False) -> None:
    """What every command that does work sets up first: its logs and progress bars on stderr (none with
    ``quiet``). One that ``recovers`` (reads weights, and trains nothing) also keeps the memory it frees
    (``_allocator``) and loads BLAS on one thread (``features.blas``): its process is the command's
    alone, and these are the feature loop's."""
    from . import _progress

    if recovers:
        from . import _allocator
        from .features import blas

        _allocator.keep_freed_memory()
        blas.load_on_one_thread()

    _progress.set_quiet(quiet)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(logging.WARNING if quiet else logging.INFO)
    LOG.propagate = False


def _report_skipped(broken: Sequence[BrokenModel]) -> None:
    if not broken:
        return
    click.echo(f"warning: skipped {len(broken)} model{'s' if len(broken) != 1 else ''}:", err=True)
    for model in broken:
        click.echo(f"  {model.error}", err=True)
        hint = getattr(model.error, "hint", None)
        if hint:
            click.echo(f"    hint: {hint}", err=True)


class TreeCount(click.ParamType):
    """`auto` or a positive integer."""

    name = "auto|K"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> int | Literal["auto"]:
        if value == "auto" or isinstance(value, int):
            return value
        try:
            count = int(value)
        except ValueError:
            self.fail(f"`{value}` is neither `auto` nor a number of trees", param, ctx)
        if count < 1:
            self.fail(f"`{value}`: the number of trees must be at least 1", param, ctx)
        return count


quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or log lines.")
answer_format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
follow_links_option = click.option(
    "--follow-links", is_flag=True, help="Follow symbolic links wherever they lead."
)
FORMATS = [*TEXT_FORMATS, *BINARY_FORMATS]
# What `report -o FILE` writes when no --format is given.
SUFFIX_FORMATS = {
    ".html": "html",
    ".htm": "html",
    ".svg": "svg",
    ".png": "png",
    ".graphml": "graphml",
    ".nwk": "newick",
    ".newick": "newick",
    ".dot": "dot",
    ".gv": "dot",
    ".json": "json",
    ".txt": "text",
}
output_option = click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)


def _emit(rendered: str | bytes, output: Path | None, fmt: str) -> None:
    """``rendered`` to ``output``, or to stdout; bytes (a PNG) never to a terminal."""
    if output is not None:
        if isinstance(rendered, bytes):
            output.write_bytes(rendered)
        else:
            output.write_text(rendered, encoding="utf-8")
        LOG.info("wrote `%s`", output)
        return
    if isinstance(rendered, bytes):
        if sys.stdout.isatty():
            raise InvalidParameterError(
                f"`--format {fmt}` is binary and stdout is a terminal",
                hint=f"give `-o FILE.{fmt}`, or redirect stdout to a file",
            )
        sys.stdout.flush()
        sys.stdout.buffer.write(rendered)
        sys.stdout.buffer.flush()
    else:
        click.echo(rendered, nl=False)


def _render(result: RecoveryResult, fmt: str) -> str | bytes:
    from .render import BINARY_RENDERERS, RENDERERS

    return BINARY_RENDERERS[fmt](result) if fmt in BINARY_RENDERERS else RENDERERS[fmt](result)


def _truth_edges(truth: Path) -> EdgeSet:
    """A truth file, or the edges that the model cards of a folder declare."""
    from .evaluation.truth import declared_edges, load_edges

    return declared_edges(truth) if truth.is_dir() else load_edges(truth)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mothertree")
def main() -> None:
    """Recover Model Trees (which model was fine-tuned from which) from model weights alone."""


store_option = click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The fingerprint store (an SQLite file; default: $MOTHERTREE_STORE, else "
    "~/.cache/mothertree/fingerprints.sqlite).",
)


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--trees",
    "n_trees",
    type=TreeCount(),
    default="auto",
    show_default=True,
    help="Number of Model Trees, or `auto`: unrelated models (relative distance > "
    f"{UNRELATED_ABOVE}) are separate trees.",
)
@click.option(
    "--lam",
    type=click.FloatRange(min=0),
    default=DEFAULT_LAM,
    show_default=True,
    help="Weight of the kurtosis penalty (`--direction falls|rises` only).",
)
@click.option(
    "--direction",
    type=click.Choice(DIRECTIONS),
    default="auto",
    show_default=True,
    help="auto: distance places edges, and each tree hangs from its most probable root over every root and "
    "every sign of the weight-norm and kurtosis cues (signs are learnt from the tree's forks, not assumed), "
    "with the angles at forks; an edge whose direction is a near coin flip is marked undetermined. norm: the "
    "same with the norm cue only, growing. falls/rises: the paper's method, with the kurtosis trend from "
    "parent to child (falls for fine-tuning, rises for continued pre-training) as a cost penalty.",
)
@click.option(
    "--distance",
    type=click.Choice(DISTANCES),
    default="auto",
    show_default=True,
    help="l2: RMS of weight differences (full fine-tunes); rank: rank of weight differences (LoRA); "
    "auto: pairs whose difference is clearly low-rank (a LoRA update) are joined first, by rank; "
    "every other pair is placed by l2.",
)
@click.option(
    "--base",
    type=click.Path(exists=True, path_type=Path),
    help="The base model of LoRA adapters whose declared base is not in the collection.",
)
@click.option("--layers", metavar="REGEX", help="Compare only the weight tensors whose name matches REGEX.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="html: a self-contained report page; svg, png: figures laid out by Graphviz; graphml: for Gephi "
    "and networkx; newick: one line per tree, for phylogenetics tools.",
)
@output_option
@click.option(
    "--save-features",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the extracted features (.npz); `recover` on that file reruns without the weights.",
)
@click.option(
    "--follow-links",
    is_flag=True,
    help="Follow symbolic links wherever they lead. By default every file read must lie inside PATHS "
    "(a Hugging Face cache entry's snapshot links into its own blobs/); a link leading out is skipped, "
    "saying why.",
)
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Recover every model of this fingerprint store, from fingerprints alone (PATHS, if given, are "
    "indexed into it first).",
)
@click.option(
    "--relations",
    default=",".join(RELATIONS),
    show_default=True,
    callback=lambda _ctx, _param, value: _relations(value),
    help="The relations to find besides fine-tuning, comma-separated, or `none`: duplicate (copies are one "
    "model with aliases), quantized and pruned (a leaf under the model it was made from), merge (an edge "
    "from each parent). "
    "Left out, such models are recovered as fine-tunes, as in the paper's method.",
)
@quiet_option
@_report_errors
def recover(
    paths: tuple[Path, ...],
    n_trees: int | Literal["auto"],
    lam: float,
    direction: Direction,
    distance: Distance,
    base: Path | None,
    layers: str | None,
    fmt: str,
    output: Path | None,
    save_features: Path | None,
    follow_links: bool,
    store: Path | None,
    relations: tuple[str, ...],
    quiet: bool,
) -> None:
    """Recover the Model Trees of the models under PATHS, or of a fingerprint --store.

    PATHS are folders of models (sub-folders, checkpoint files, PEFT LoRA adapters), single models, or
    FeatureSet files (.npz) written by --save-features.
    """
    _start_work(quiet, recovers=True)  # before numpy is imported
    from .pipeline import recover as recover_models

    if store is not None:
        if save_features is not None:
            raise InvalidParameterError(
                "`--save-features` writes what is read from weights; a store holds fingerprints already",
                hint="leave out --save-features, or --store",
            )
        result = _recover_from_store(
            store,
            paths,
            base,
            follow_links,
            n_trees=n_trees,
            lam=lam,
            direction=direction,
            distance=distance,
            layers=layers,
            relations=relations,
        )
        _emit(_render(result, fmt), output, fmt)
        _report_skipped(result.broken)
        return
    if not paths:
        raise click.UsageError("give PATHS of models, or --store")
    result = recover_models(
        paths,
        n_trees=n_trees,
        lam=lam,
        direction=direction,
        distance=distance,
        layers=layers,
        base=base,
        save_features=save_features,
        follow_links=follow_links,
        relations=relations,
    )
    _emit(_render(result, fmt), output, fmt)
    _report_skipped(result.broken)


def _relations(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in RELATIONS]
    if unknown:
        raise click.BadParameter(f"{', '.join(unknown)}: choose among {', '.join(RELATIONS)}, or none")
    return names


def _open_store(store: Path | None, *, create: bool) -> Any:
    from .store import FingerprintStore, default_store_path

    return FingerprintStore(store if store is not None else default_store_path(), create=create)


def _recover_from_store(
    store: Path, paths: Sequence[Path], base: Path | None, follow_links: bool, **options: Any
) -> RecoveryResult:
    import dataclasses

    from .indexing import index, recover_store

    with _open_store(store, create=bool(paths)) as opened:
        broken: list[BrokenModel] = []
        if paths:
            indexed = index(paths, opened, base=base, follow_links=follow_links)
            LOG.info("%s", indexed.summary())
            broken = indexed.broken
        result = recover_store(opened, **options)
    return dataclasses.replace(result, broken=broken)


@main.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@store_option
@click.option(
    "--base",
    type=click.Path(exists=True, path_type=Path),
    help="The base model of LoRA adapters whose declared base is not in the collection.",
)
@click.option("--reread", is_flag=True, help="Read every model again, even those whose files are unchanged.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Fingerprint on a local Dask cluster of this many worker processes (this process commits).",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="Fingerprint on the Dask cluster of this scheduler (e.g. tcp://10.0.0.5:8786); its workers must "
    "see PATHS at the same paths.",
)
@follow_links_option
@quiet_option
@_report_errors
def index_command(
    paths: tuple[Path, ...],
    store: Path | None,
    base: Path | None,
    reread: bool,
    workers: int | None,
    scheduler: str | None,
    follow_links: bool,
    quiet: bool,
) -> None:
    """Fingerprint the models under PATHS into a store: each read once, those already there skipped.

    Each model is committed as soon as it is read: after an interruption, rerun the same command. Prints
    a summary on stdout.
    """
    _start_work(quiet, recovers=True)  # before numpy is imported
    from .indexing import index

    with _open_store(store, create=True) as opened:
        if workers is not None and scheduler is not None:
            raise InvalidParameterError(
                "give `--workers` (a local cluster) or `--scheduler` (a running one), not both"
            )
        report = index(
            paths,
            opened,
            base=base,
            follow_links=follow_links,
            reread=reread,
            workers=workers,
            scheduler=scheduler,
        )
        click.echo(f"{report.summary()}; the store `{opened.path}` holds {len(opened)} models")
    _report_skipped(report.broken)


def _placement_command(name: str, commit: bool, summary: str) -> Any:
    @main.command(name, help=summary)
    @click.argument("model", type=click.Path(path_type=Path))
    @store_option
    @answer_format_option
    @click.option(
        "--base",
        type=click.Path(exists=True, path_type=Path),
        help="The base model of MODEL, when it is a LoRA adapter whose base is not where it says.",
    )
    @follow_links_option
    @quiet_option
    @_report_errors
    def command(
        model: Path, store: Path | None, fmt: str, base: Path | None, follow_links: bool, quiet: bool
    ) -> None:
        _start_work(quiet, recovers=True)  # before numpy is imported
        from . import indexing

        with _open_store(store, create=commit) as opened:
            place = indexing.add if commit else indexing.query
            answer = place(model, opened, base=base, follow_links=follow_links)
        if fmt == "json":
            click.echo(json.dumps(answer.to_json(), indent=2))
            return
        click.echo(f"model:    {answer.model}")
        click.echo(f"related:  {'yes' if answer.related else 'no'}")
        if answer.parent is not None:
            e = answer.parent
            click.echo(
                f"parent:   {e.parent}  (confidence {e.confidence:.3f}, direction probability "
                f"{e.direction_probability:.2f}, {e.relation})"
            )
        for e in answer.children:
            click.echo(f"child:    {e.child}  (confidence {e.confidence:.3f})")
        for r in answer.relatives[:5]:
            click.echo(f"near:     {r.id}  (relative distance {r.relative_distance:.4g})")
        click.echo(answer.why)

    return command


add_command = _placement_command(
    "add",
    commit=True,
    summary="Read MODEL alone, add its fingerprint to the store, and say where it fits: its parent, "
    "relation and probability, among its nearest relatives in the store.",
)
query_command = _placement_command(
    "query",
    commit=False,
    summary="Where MODEL (a path, or the name of a model in the store) fits among the store's models: its "
    "most likely parent, its children and nearest relatives, or `no relative in this store`. The store is "
    "not written to.",
)


@main.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.option(
    "--truth",
    type=click.Path(path_type=Path),
    help="A truth file, or the folder of models (their model cards' `base_model`): the HTML report marks "
    "each edge right, reversed or misplaced, draws the missing ones, and gives the accuracy.",
)
@output_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="Default: from the suffix of --output (.html, .svg, .png, .graphml, .nwk, .dot, .json, .txt), "
    "else html.",
)
@_report_errors
def report(result: Path, truth: Path | None, output: Path | None, fmt: str | None) -> None:
    """Show a RESULT (from `recover --format json`): an HTML report, a figure, or an export.

    The HTML report is one file that opens offline: every tree drawn top-down, each edge's evidence on
    pointing or clicking, a search box, collapsible subtrees.
    """
    from .report import to_html
    from .result import RecoveryResult

    _start_work(quiet=False)
    if fmt is None:
        suffix = output.suffix.lower() if output is not None else ".html"
        if suffix not in SUFFIX_FORMATS:
            raise InvalidParameterError(
                f"cannot tell which format to write from the suffix `{suffix}` of `{output}`",
                hint=f"give --format, one of: {', '.join(FORMATS)}",
            )
        fmt = SUFFIX_FORMATS[suffix]
    if truth is not None and fmt != "html":
        raise InvalidParameterError(
            f"`--truth` is shown by the HTML report, not by `--format {fmt}`",
            hint="leave out --format, or give `--format html`; `mothertree evaluate` scores a result",
        )
    recovered = RecoveryResult.load(result)
    if fmt == "html":
        true_edges = _truth_edges(truth) if truth is not None else None
        rendered: str | bytes = to_html(recovered, true_edges, title=f"Model Trees: {result.name}")
    else:
        rendered = _render(recovered, fmt)
    _emit(rendered, output, fmt)


@main.command()
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@answer_format_option
@click.option(
    "--base",
    type=click.Path(exists=True, path_type=Path),
    help="The base model of a LoRA adapter given as A or B, when it is neither.",
)
@follow_links_option
@quiet_option
@_report_errors
def compare(a: Path, b: Path, fmt: str, base: Path | None, follow_links: bool, quiet: bool) -> None:
    """Whether model A and model B are related by fine-tuning, and which is the parent.

    Exit code 0 either way; the answer is on stdout (`related: yes` or `related: no`, or JSON).
    """
    _start_work(quiet, recovers=True)  # before numpy is imported
    from .pipeline import compare as compare_models

    answer = compare_models(a, b, base=base, follow_links=follow_links)
    if fmt == "json":
        click.echo(json.dumps(answer.to_json(), indent=2))
        return
    click.echo(f"related: {'yes' if answer.related else 'no'}")
    if answer.edge is not None:
        e = answer.edge
        click.echo(f"parent:  {e.parent}")
        click.echo(f"child:   {e.child}")
        click.echo(
            f"confidence {e.confidence:.3f}, direction probability {e.direction_probability:.2f} "
            f"({'determined' if e.direction_determined else 'undetermined'})"
        )
    click.echo(answer.why)


@main.command()
@click.argument("result", type=click.Path(path_type=Path))
@click.argument("truth", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_report_errors
def evaluate(result: Path, truth: Path, fmt: str) -> None:
    """Score a recovered RESULT (from `recover --format json`) against TRUTH.

    TRUTH is a JSON file ({"edges": [{"parent": ID, "child": ID}, ...]}), or the folder of models itself:
    then the truth is what their model cards declare (`base_model` in README.md front matter).
    """
    from .evaluation.metrics import score_edges
    from .evaluation.truth import load_edges
    from .render import score_text

    score = score_edges(load_edges(result), _truth_edges(truth))
    if fmt == "json":
        click.echo(json.dumps(score.to_dict(), indent=2))
    else:
        click.echo(score_text(score))


@main.command()
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Where to build (default: cache)."
)
@click.option("--force", is_flag=True, help="Rebuild the demo Model Graph even if cached.")
@click.option("--lam", type=click.FloatRange(min=0), default=DEFAULT_LAM, show_default=True)
@click.option("--direction", type=click.Choice(DIRECTIONS), default="auto", show_default=True)
@quiet_option
@_report_errors
def demo(out: Path | None, force: bool, lam: float, direction: Direction, quiet: bool) -> None:
    """Build a small Model Graph by really fine-tuning ImageNet MobileNetV2 (once), then recover it."""
    _start_work(quiet)
    try:
        from .zoo.demo import build_demo_graph
    except ImportError as exc:
        raise MissingDependencyError(
            f"the demo trains models and needs PyTorch: {exc}", hint="pip install 'mothertree[zoo]'"
        ) from exc
    from .evaluation.metrics import score_edges
    from .evaluation.truth import load_edges
    from .pipeline import read_features, recover_trees
    from .render import method_scores, score_text, side_by_side
    from .report import to_html

    graph_dir = build_demo_graph(out, quiet=quiet, force=force)
    feature_sets, broken = read_features([graph_dir])
    truth = load_edges(graph_dir / "truth.json")
    result = recover_trees(feature_sets, lam=lam, direction=direction, broken=broken)
    click.echo(side_by_side(result, truth))
    click.echo("")
    click.echo(score_text(score_edges({(e.parent, e.child) for e in result.edges}, truth)))
    scores: dict[str, Score] = {}
    for method in DIRECTIONS:
        other = recover_trees(feature_sets, lam=lam, direction=method)
        scores[method] = score_edges({(e.parent, e.child) for e in other.edges}, truth)
    click.echo("\n" + method_scores(scores))
    page = graph_dir / "report.html"
    page.write_text(to_html(result, truth, title="Model Trees of the demo graph"), encoding="utf-8")
    click.echo(f"\nreport (open it in a browser): {page}")
    _report_skipped(result.broken)


@main.group()
def zoo() -> None:
    """Build Model Graphs with a known Model Tree from real roots and real fine-tunes."""


def _zoo_module() -> Any:
    try:
        from . import zoo as zoo_package
    except ImportError as exc:
        raise MissingDependencyError(
            f"building Model Graphs trains models and needs PyTorch: {exc}",
            hint="pip install 'mothertree[zoo]'",
        ) from exc
    return zoo_package


@zoo.command("build")
@click.argument("spec")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to build into."
)
@click.option("--size", default="full", show_default=True, help="A size the spec names (e.g. `small`).")
@click.option("--force", is_flag=True, help="Rebuild every model, even those a previous build finished.")
@quiet_option
@_report_errors
def zoo_build(spec: str, out: Path, size: str, force: bool, quiet: bool) -> None:
    """Build the Model Graph SPEC (a YAML/JSON file or a built-in name) into --out.

    Resumable: rerun the same command after an interruption and only the missing models are trained.
    Prints the folder on stdout.
    """
    _start_work(quiet)
    zoo_package = _zoo_module()
    graph_spec = zoo_package.load_spec(spec).sized(size)
    LOG.info("%s: %d models in %d trees", graph_spec.name, graph_spec.n_models, graph_spec.trees)
    logging.getLogger("mothertree.zoo").setLevel(LOG.level)
    built = zoo_package.build_graph(graph_spec, out, force=force, quiet=quiet)
    LOG.info(
        "trained %d, found %d already built, in %.0f s", len(built.trained), len(built.reused), built.seconds
    )
    click.echo(str(built.path))


@zoo.command("specs")
def zoo_specs() -> None:
    """List the built-in graph specs, their sizes and model counts."""
    zoo_package = _zoo_module()
    for name, path in sorted(zoo_package.builtin_specs().items()):
        spec = zoo_package.load_spec(path)
        sizes = ", ".join(f"{size} ({spec.sized(size).n_models} models)" for size in ["full", *spec.sizes])
        click.echo(f"{name:<14} {spec.family:<7} {spec.fine_tuning:<6} {sizes}")


@zoo.command("variant")
@click.argument("graph", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("variant")
@click.option(
    "--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="New folder to write."
)
@quiet_option
@_report_errors
def zoo_variant(graph: Path, variant: str, out: Path, quiet: bool) -> None:
    """Write VARIANT of the built graph GRAPH into --out: `prune:<amount>`, `fp16` or `int8`.

    Every model is pruned (torch l1_unstructured), cast, or quantised (bitsandbytes Linear8bitLt) and
    saved as a user would; truth.json is copied with the variant recorded. GRAPH is never written to.
    """
    _start_work(quiet)
    _zoo_module()
    from .zoo.variants import build_variant

    logging.getLogger("mothertree.zoo").setLevel(LOG.level)
    click.echo(str(build_variant(graph, out, variant, quiet=quiet)))
