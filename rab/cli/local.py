"""``rab certify`` and ``rab demo-local``: certify a data set on this machine, no server.

The pipeline is :func:`rab.evaluation.evaluate`: optional attack (poisoned training set,
backdoored test set), exact smoothed K-NN or DNN-RAB ensemble, Table-1 metrics beside the
undefended model's.  Writes ``result.json`` (metrics and per-point certificates) and
``certified_accuracy.png`` (``rab.plots``) into ``--out``.  Invalid input exits with status 2
and a message naming the problem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from contract.api import Summary
from rab.cli._common import (
    attack_label,
    console,
    count_table,
    fail,
    parse_classes,
    progress_bar,
    results_table,
)
from rab.evaluation import (
    ATTACK_KINDS,
    METHODS,
    AttackSpec,
    DatasetSpec,
    EnsembleMethod,
    EvaluationRequest,
    EvaluationResult,
    KnnMethod,
    Method,
    evaluate,
    load_dataset,
)
from rab.experiments.runner import write_json
from rab.metrics import DEFAULT_RADII
from rab.plots import certified_accuracy_curve, poison_count_curve

__all__ = ["certify", "demo_local", "register", "run_local"]

stdout = Console()  # tables and paths; progress and errors go to stderr
_DEFAULT_RADII = ",".join(f"{r:g}" for r in DEFAULT_RADII)


def _split(text: str | None, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        fail(f"{what} is empty")
    return items


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(t) for t in _split(text, what) or []]
    except ValueError:
        fail(f"{what} must be comma-separated numbers, got {text!r}")


def run_local(
    spec: DatasetSpec,
    method: Method,
    attack: AttackSpec | None,
    *,
    out: Path,
    radii: list[float],
    num_test: int | None,
    vanilla: bool,
    title: str,
) -> EvaluationResult:
    """Load, evaluate with a progress bar, print the table, write the JSON and the PNG."""
    try:
        dataset = load_dataset(spec)
        console.print(f"data set {dataset.name}: {len(dataset.y_train)} train / "
                      f"{len(dataset.y_test)} test, classes {list(dataset.class_names)}")
        with progress_bar() as report:
            result = evaluate(dataset, method, attack, radii=radii, num_test=num_test,
                              vanilla=vanilla, progress=report, workdir=out / "models")
    except (ValueError, FileNotFoundError, KeyError) as exc:
        fail(str(exc))
    summary = Summary.model_validate(result.metrics)
    stdout.print(results_table(summary, title, result.vanilla))
    count_results = count_table(summary, f"{title} | poison counts")
    if count_results is not None:
        stdout.print(count_results)
    if "attack_total_norm" in result.metrics:
        stdout.print(
            f"The poisoned training points carry patterns of total norm "
            f"{result.metrics['attack_total_norm']:.3f} (sqrt of the sum of squared norms, "
            f"eq. 14). Certified and correct beyond it: "
            + ", ".join(
                f"{t.subset} {result.metrics[t.subset]['certified_accuracy_at_attack_norm']:.3f}"
                for t in result.evaluation.tests
            ),
            highlight=False,
        )
    json_path, png_path = out / "result.json", out / "certified_accuracy.png"
    record = {"command": title, "dataset_spec": spec.to_dict(), **result.to_dict()}
    write_json(json_path, record)
    certified_accuracy_curve(result.curves(), png_path, title=title)
    if counts := result.count_curves():
        count_path = out / "certified_accuracy_poison_count.png"
        poison_count_curve(counts, count_path, title=title)
        stdout.print(f"wrote {count_path}", highlight=False)
    stdout.print(f"wrote {json_path} and {png_path}", highlight=False)
    return result


def certify(
    dataset: Annotated[str, typer.Argument(
        help="A .npz / .csv / spambase.data file, or a built-in name: digits, breast_cancer, "
             "spambase, mnist01, cifar (files from RAB_SHARED_DATA).")],
    sigma: Annotated[float | None, typer.Option(
        help="Smoothing noise sigma (> 0; knn and ensemble, not partition).")] = None,
    classes: Annotated[str | None, typer.Option(
        help="Classes to keep, comma-separated labels or names; the first becomes class 0.")
    ] = None,
    variant: Annotated[str, typer.Option(
        help="Spambase features: uci, authors, drop_total.")] = "uci",
    train_size: Annotated[int | None, typer.Option(help="Seeded random training subset.")] = None,
    test_size: Annotated[int | None, typer.Option(help="Seeded random test subset.")] = None,
    attack: Annotated[str, typer.Option(
        help=f"Backdoor trigger: none or one of {', '.join(ATTACK_KINDS)}.")] = "none",
    norm: Annotated[float, typer.Option(help="Trigger L2 norm ||delta||.")] = 0.1,
    rate: Annotated[float, typer.Option(help="Poisoning rate r_p.")] = 0.02,
    target: Annotated[int, typer.Option(help="Backdoor target class.")] = 0,
    poison_seed: Annotated[int | None, typer.Option(
        help="Seed drawing the poisoned rows (default: a fresh one, recorded).")] = None,
    method: Annotated[str, typer.Option(
        help="knn (exact smoothed K-NN), ensemble (DNN-RAB) or partition (DPA / FA).")] = "knn",
    k: Annotated[int, typer.Option(help="K-NN: number of neighbours K.")] = 5,
    num_levels: Annotated[int, typer.Option(help="K-NN: distance levels L.")] = 200,
    spread: Annotated[float, typer.Option(
        help="K-NN: edge spread (1.0 images, 0.1 Spambase).")] = 1.0,
    num_models: Annotated[int, typer.Option(help="Ensemble: number of models N.")] = 20,
    epochs: Annotated[int | None, typer.Option(help="Ensemble: epochs (default: preset).")]
    = None,
    alpha: Annotated[float, typer.Option(help="Ensemble: 1 - confidence level.")] = 0.001,
    bound: Annotated[str, typer.Option(
        help="Ensemble: clopper-pearson (hard votes) or hoeffding (soft votes).")]
    = "clopper-pearson",
    arch: Annotated[str | None, typer.Option(
        help="Ensemble: architecture (default: the authors' for the input shape).")] = None,
    train_seed: Annotated[int | None, typer.Option(
        help="Ensemble / partition: seed of the models' initialisation, noise and batch order "
             "(default: fresh, recorded).")] = None,
    partitions: Annotated[int, typer.Option(
        help="Partition: number of content-hash partitions k.")] = 50,
    aggregation: Annotated[str, typer.Option(
        help="Partition: dpa (Deep Partition Aggregation) or fa (Finite Aggregation).")] = "dpa",
    fa_d: Annotated[int, typer.Option(help="Partition, fa: buckets per classifier d.")] = 1,
    radii: Annotated[str, typer.Option(help="Radii R of the table, comma-separated.")]
    = _DEFAULT_RADII,
    num_test: Annotated[int | None, typer.Option(help="Certify only the first N test points "
                                                      "of each test set.")] = None,
    vanilla: Annotated[bool, typer.Option(help="Also score the undefended model.")] = True,
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("rab-results"),
) -> None:
    """Certify a data set locally: optional backdoor attack, K-NN or ensemble, metrics at radii."""
    if method not in METHODS:
        fail(f"unknown method {method!r}; choose from {list(METHODS)}")
    try:
        spec = DatasetSpec(dataset, classes=parse_classes(classes), variant=variant,
                           train_size=train_size, test_size=test_size)
        choices: dict[str, dict[str, Any]] = {
            "knn": {"k": k, "num_levels": num_levels, "spread": spread, "sigma": sigma},
            "ensemble": {"num_models": num_models, "epochs": epochs, "alpha": alpha,
                         "bound": bound, "arch": arch, "seed": train_seed, "sigma": sigma},
            "partition": {"k": partitions, "aggregation": aggregation, "d": fa_d,
                          "epochs": epochs, "arch": arch, "seed": train_seed},
        }
        fields = choices[method]
        if method != "partition" and sigma is None:
            fail(f"the {method} method needs --sigma")
        request = EvaluationRequest.from_dict({
            "method": {"name": method, **fields},
            "attack": None if attack == "none" else {
                "kind": attack, "norm": norm, "rate": rate, "target": target, "seed": poison_seed,
            },
            "num_test": num_test,
        })
    except ValueError as exc:
        fail(str(exc))
    label = attack_label(None if request.attack is None else request.attack.to_dict())
    run_local(spec, request.method, request.attack, out=out, radii=_floats(radii, "--radii"),
              num_test=request.num_test, vanilla=vanilla,
              title=f"{spec.label} | {label} | {method} sigma={request.method.sigma:g}")


#: The fixed demo: digits 0 vs 1, a blending backdoor (||delta|| = 1, r_p = 0.1, target 0).
DEMO_DATASET = DatasetSpec("digits", classes=(0, 1))
DEMO_ATTACK = AttackSpec("blending", norm=1.0, rate=0.1, target=0, seed=0)
DEMO_METHODS: tuple[Method, ...] = (
    KnnMethod(sigma=0.5, k=5),
    EnsembleMethod(sigma=0.5, num_models=20, epochs=10, alpha=0.01, seed=0),
)
DEMO_RADII = [0.0, 0.1, 0.2, 0.5]


def demo_local(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("rab-demo-local"),
) -> None:
    """A fixed small run: digits 0 vs 1, blending backdoor, K-NN (K=5) and 20 MLPs (10 epochs)."""
    for m in DEMO_METHODS:
        run_local(DEMO_DATASET, m, DEMO_ATTACK, out=out / m.name, radii=DEMO_RADII,
                  num_test=None, vanilla=True,
                  title=f"demo: digits 0/1 | {DEMO_ATTACK.label} | {m.name} sigma={m.sigma:g}")


def register(app: typer.Typer) -> None:
    """Add ``certify`` and ``demo-local`` to the ``rab`` application."""
    app.command("certify")(certify)
    app.command("demo-local")(demo_local)
