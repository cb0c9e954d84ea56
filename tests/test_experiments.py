"""Experiment grids: configuration parsing, resumable runner, reports, the experiment CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from rab.cli import experiment
from rab.experiments import (
    empirical_bars,
    finished_cells,
    load_cell,
    load_config,
    markdown_table,
    named_config,
    named_configs,
    parse_config,
    plot_curves,
    plot_grid,
    run_experiment,
    summary_record,
)
from rab.experiments.runner import cell_path
from rab.experiments.status import (
    MARKERS,
    Ungridded,
    render_status,
    status_rows,
    write_between_markers,
)
from rab.metrics import certified_accuracy

CONFIG = """
name = "tiny"
description = "digits 0/1, small"
radii = [0.0, 0.1, 0.3]
sigmas = [0.5, 1.0]
reference_radii = [0.0, 0.1]

[method]
name = "knn"
k = 3

[[datasets]]
source = "digits"
classes = [0, 1]
train_size = 60
test_size = 20

[attack]
target = 0
seed = 0

[[attacks]]
kind = "blending"

[[settings]]
norm = 1.0
rate = 0.1
[[settings]]
norm = 0.5
rate = 0.05

[[reference]]
dataset = "digits"
kind = "blending"
norm = 1.0
rate = 0.1
sigma = 0.5
clean_accuracy = 0.123
certified_accuracy = [0.456, 0.789]
"""


@pytest.fixture()
def config_file(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(CONFIG)
    return path


def test_grid_expansion_and_keys(config_file):
    config = load_config(config_file)
    assert len(config.cells) == 4  # 1 data set x 1 attack x 2 settings x 2 sigmas
    assert len({c.key for c in config.cells}) == 4
    sigmas = sorted({c.method.sigma for c in config.cells})
    assert sigmas == [0.5, 1.0]
    assert sum(config.reference_for(c) is not None for c in config.cells) == 1
    again = load_config(config_file)
    assert [c.key for c in again.cells] == [c.key for c in config.cells]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: "bogus = 1\n" + s, "unknown configuration keys"),
        (lambda s: s + "\nbogus = 1\n", "unknown reference keys"),
        (lambda s: s.replace('name = "knn"', 'name = "knn"\nsigma = 1.0'), "sigmas"),
        (lambda s: s.replace("sigmas = [0.5, 1.0]", "sigmas = [0.5, 0.5]"), "duplicate"),
        (lambda s: s.replace("sigmas = [0.5, 1.0]", "sigmas = [0.0]"), "sigma"),
        (lambda s: s.replace('kind = "blending"\n\n', 'kind = "laser"\n\n'), "unknown attack"),
        (lambda s: s.replace("[[datasets]]", "[[datasetz]]"), "unknown configuration keys"),
        (lambda s: s.replace("k = 3", "k = 3\nalpha = 0.1"), "unknown knn parameters"),
        (lambda s: s + "\n[[[", "not valid TOML"),
    ],
)
def test_bad_configurations(tmp_path, edit, message):
    path = tmp_path / "bad.toml"
    path.write_text(edit(CONFIG))
    with pytest.raises(ValueError, match=message):
        load_config(path)


def test_runner_resumes_and_skips_finished_cells(config_file, tmp_path):
    config = load_config(config_file)
    out = tmp_path / "out"
    first = run_experiment(config, out)
    assert len(first.computed) == 4 and first.skipped == []
    paths = [cell_path(out, c) for c in config.cells]
    mtimes = [p.stat().st_mtime_ns for p in paths]
    second = run_experiment(config, out)
    assert second.computed == [] and len(second.skipped) == 4
    assert [p.stat().st_mtime_ns for p in paths] == mtimes
    assert second.results == first.results
    # a lost cell and a cell stored with other settings are recomputed, nothing else
    paths[1].unlink()
    assert set(finished_cells(config, out)) == {c.key for i, c in enumerate(config.cells) if i != 1}
    tampered = json.loads(paths[2].read_text())
    tampered["settings"]["radii"] = [9.0]
    paths[2].write_text(json.dumps(tampered))
    third = run_experiment(config, out)
    assert third.computed == [config.cells[1].key, config.cells[2].key]
    assert [p.stat().st_mtime_ns for p in (paths[0], paths[3])] == [mtimes[0], mtimes[3]]
    assert load_cell(out, config.cells[2]) is not None
    assert not list(out.glob("cells/*.tmp"))
    assert len(run_experiment(config, out, force=True).computed) == 4


def test_report_against_stored_certificates(config_file, tmp_path):
    config = load_config(config_file)
    record = run_experiment(config, tmp_path)
    summary = summary_record(config, record.results)
    assert summary["radii"] == [0.0, 0.1]
    cell = summary["cells"][0]
    stored = record.results[cell["key"]]["result"]["certificates"]["backdoor"]
    expected = certified_accuracy(stored["prediction"], stored["label"], stored["radius"],
                                  [0.0, 0.1])
    np.testing.assert_allclose(cell["ours"]["certified_accuracy"], expected)
    assert cell["paper"]["certified_accuracy"] == [0.456, 0.789]
    table = markdown_table(config, record.results)
    assert f"{expected[0]:.3f} (0.456)" in table and f"{expected[1]:.3f} (0.789)" in table
    assert table.count("\n| digits |") == 4
    plots = plot_curves(config, record.results, tmp_path / "plots")
    # per (data set, attack): the radius curves and the plain K-NN's poison-count curves
    assert len(plots) == 4 and all(p.read_bytes()[:4] == b"\x89PNG" for p in plots)
    assert sum(p.name.endswith("__poison_count.png") for p in plots) == 2
    assert any(p.name.endswith("r_p_0.05.png") for p in plots)  # "0.05" is not a suffix


#: The grids of issue 14's "rest of the paper" (ensembles at reduced scale, and the GPU ones).
NEW_GRIDS = ("table3-fig3-mnist-reduced", "table4-mnist-dp-reduced", "table6-mnist10-reduced",
             "tableC7-mnist68-reduced", "fig4a-mnist-reduced", "table2-mnist-full-gpu",
             "table2-cifar-gpu")


def test_new_grids_state_seeds_scale_and_their_table():
    for name in NEW_GRIDS:
        config = named_config(name)
        assert config.table and config.scale, name
        assert "seed" in config.raw["method"], name
        for cell in config.cells:
            assert cell.dataset.shuffle_seed == 0, name
            if cell.dataset.train_size or cell.dataset.test_size:
                assert "subset_seed" in next(d for d in config.raw["datasets"]
                                             if d.get("name") == cell.dataset.name), name
            assert cell.method.name == "ensemble"
            if cell.attack is not None:
                assert "seed" in config.raw["attack"], name
    dp = named_config("table4-mnist-dp-reduced").cells[0].method
    assert (dp.dp_noise_multiplier, dp.dp_max_grad_norm) == (4.0, 5.0)  # type: ignore[union-attr]
    table3 = named_config("table3-fig3-mnist-reduced")
    assert sum(c.attack is None for c in table3.cells) == 2  # r_p = 0 at sigma 1 and 2
    assert table3.plots == ("curves", "empirical")


def test_no_attack_cells_and_vanilla_reference_figures(config_file, tmp_path):
    text = config_file.read_text().replace('[[attacks]]\nkind = "blending"',
                                           '[[attacks]]\nkind = "none"\n[[attacks]]\n'
                                           'kind = "blending"')
    text += ('\n[[reference]]\ndataset = "digits"\nsigma = 1.0\n'
             'vanilla_clean_accuracy = 0.5\nclean_accuracy = 0.25\n')
    text = text.replace('name = "tiny"', 'name = "tiny"\nplots = ["empirical"]')
    config = parse_config(__import__("tomllib").loads(text))
    assert len(config.cells) == 6 and [c.attack for c in config.cells[:2]] == [None, None]
    ref = config.reference_for(config.cells[1])
    assert ref is not None and ref.values["vanilla_clean_accuracy"] == 0.5
    record = run_experiment(config, tmp_path, max_cells=3)
    assert len(record.computed) == 3 and len(record.results) == 3  # a partial run
    table = markdown_table(config, record.results)
    assert "clean acc, vanilla" in table and "(0.500)" in table and "(0.250)" in table
    bars = plot_grid(config, record.results, tmp_path / "plots")
    assert [p.name for p in bars] == ["digits__empirical.png"]
    assert bars[0].read_bytes()[:4] == b"\x89PNG"
    # the same bars from a written summary (the cell files are not committed)
    rows = {c["key"]: c["ours"] for c in summary_record(config, record.results)["cells"]}
    again = empirical_bars(config, rows, tmp_path / "again")
    assert again[0].read_bytes() == bars[0].read_bytes()
    with pytest.raises(ValueError, match="no other keys"):
        parse_config(__import__("tomllib").loads(
            text.replace('kind = "none"', 'kind = "none"\nnorm = 1.0')))


def test_reproduction_status_on_a_synthetic_grid(config_file, tmp_path):
    config = load_config(config_file)
    cell = next(c for c in config.cells if config.reference_for(c) is not None)
    results = tmp_path / "results"
    results.mkdir()
    assert status_rows([config], results)[0].state == "not run"
    ours = {"clean_accuracy": 0.15, "certified_accuracy": [0.456, 0.70],
            "vanilla_success_rate": 0.9}
    summary = {"cells": [{"key": cell.key, "settings": cell.settings(), "ours": ours}]}
    (results / "reproduce_tiny.json").write_text(json.dumps(summary))
    (row,) = status_rows([config], results)
    assert row.state == "differs" and row.max_diff == pytest.approx(0.089)
    assert row.worst == "CA[1]" and row.attack == "blending" and row.sigma == 0.5
    ours["certified_accuracy"] = [0.456, 0.789]
    summary["cells"][0]["key"] = "stale"  # found by its stored settings instead
    (results / "reproduce_tiny.json").write_text(json.dumps(summary))
    (row,) = status_rows([config], results)
    assert row.state == "reproduced (earlier settings encoding)"
    assert row.max_diff == pytest.approx(0.027)
    text = render_status([row], [Ungridded("Table 9", "x", 3, "none here")])
    assert "1 published rows in grids" in text and "3 more without a grid" in text
    assert "| Table 9 | x | 3 | none here |" in text and "second grid" not in text
    twice = render_status([row, dataclasses.replace(row, grid="tiny-full")])
    assert "2 published rows in grids" in twice and "1 of them again in a second grid" in twice
    doc = tmp_path / "doc.md"
    doc.write_text(f"intro\n{MARKERS[0]}\nold\n{MARKERS[1]}\noutro\n")
    write_between_markers(doc, text)
    assert doc.read_text() == f"intro\n{MARKERS[0]}\n{text}{MARKERS[1]}\noutro\n"
    with pytest.raises(ValueError, match="no"):
        write_between_markers(config_file, text)


def test_shipped_configurations_parse_and_match_their_references():
    names = named_configs()
    for required in ("table5-spambase", "table5-mnist", "table5-cifar-subset",
                     "table2-mnist-reduced", "fig4b-curves", *NEW_GRIDS):
        assert required in names
    for name in names:
        config = named_config(name)
        for ref in config.references:
            assert any(ref.matches(c) for c in config.cells), (name, ref)
    spam = named_config("table5-spambase")
    assert len(spam.cells) == 12
    assert all(spam.reference_for(c) is not None for c in spam.cells)


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    application = typer.Typer()
    experiment.register(application)
    return application


def test_experiment_cli_run_and_rerun(app, config_file, tmp_path):
    out = tmp_path / "cli"
    runner = CliRunner()
    first = runner.invoke(app, ["experiment", "run", str(config_file), "--out", str(out)])
    assert first.exit_code == 0, first.output
    assert "4 cells computed, 0 skipped" in first.output
    summary = json.loads((out / "results.json").read_text())
    assert len(summary["cells"]) == 4
    assert (out / "report.md").read_text().startswith("### tiny")
    second = runner.invoke(app, ["experiment", "run", str(config_file), "--out", str(out)])
    assert second.exit_code == 0 and "0 cells computed, 4 skipped" in second.output


def test_experiment_cli_errors(app, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["experiment", "run", str(tmp_path / "none.toml")])
    assert missing.exit_code == 2 and "not found" in missing.output
    unknown = runner.invoke(app, ["experiment", "reproduce", "table9-nothing"])
    assert unknown.exit_code == 2 and "unknown experiment" in unknown.output
    listed = runner.invoke(app, ["experiment", "list"])
    assert listed.exit_code == 0 and "table5-spambase" in listed.output


def test_parse_config_needs_a_dataset():
    with pytest.raises(ValueError, match="datasets"):
        parse_config({"name": "x", "sigmas": [1.0], "method": {"name": "knn"}})


def test_report_labels_both_success_rates_and_the_effective_norm(config_file, tmp_path):
    config = load_config(config_file)  # digits blending, clipped to [0, 1] by default
    record = run_experiment(config, tmp_path)
    table = markdown_table(config, record.results)
    assert "success rate, vanilla (÷ backdoored inputs)" in table
    assert "success rate, vanilla (÷ all test)" in table
    result = next(iter(record.results.values()))["result"]
    vanilla = result["vanilla"]["backdoor"]
    assert vanilla["attack_success_rate_all_test"] <= vanilla["attack_success_rate"]
    effective = result["poisoning"]["effective_norm_range"][1]
    assert effective < 1.0 and f"1 (eff. ≤ {effective:.3g})" in table


def test_extends_merges_the_base_grid_under_the_childs_keys(config_file, tmp_path):
    (tmp_path / "child.toml").write_text(
        'extends = "tiny"\nname = "child"\nsigmas = [2.0]\n'
        '[method]\nnum_levels = 50\n'         # a table: merged key by key
        '[[datasets]]\nsource = "digits"\nname = "all-digits"\nshuffle_seed = 1\n')
    base, child = load_config(config_file), load_config(tmp_path / "child.toml")
    assert child.name == "child" and child.description == base.description
    assert {c.method.sigma for c in child.cells} == {2.0}
    method = child.cells[0].method.to_dict()
    assert method["num_levels"] == 50 and method["k"] == base.cells[0].method.to_dict()["k"]
    # an array of tables is replaced whole: the base's test_size does not leak into the child
    assert child.raw["datasets"] == [{"source": "digits", "name": "all-digits", "shuffle_seed": 1}]
    spec = child.cells[0].dataset
    assert (spec.classes, spec.train_size, spec.test_size) == (None, None, None)
    assert child.references == base.references and child.reference_radii == base.reference_radii
    assert "extends" not in child.raw and child.raw["attack"] == base.raw["attack"]
    (tmp_path / "grandchild.toml").write_text('extends = "child"\nname = "g"\n')
    assert [c.key for c in load_config(tmp_path / "grandchild.toml").cells] == \
        [c.key for c in child.cells]


def test_extends_rejects_an_unknown_base_and_a_cycle(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "nowhere"\nname = "a"\n')
    with pytest.raises(ValueError, match="extends unknown grid 'nowhere'"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "a.toml").write_text('extends = "b"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a"\nname = "b"\n')
    with pytest.raises(ValueError, match="'extends' cycle: a -> b -> a"):
        load_config(tmp_path / "a.toml")
    (tmp_path / "c.toml").write_text('extends = "c"\nname = "c"\n')
    with pytest.raises(ValueError, match="cycle: c -> c"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(ValueError, match="load_config"):
        parse_config({"extends": "a", "name": "x"})


def test_full_test_set_grids_are_their_subset_grids_on_every_test_image():
    for full, subset in (("table5-mnist-full", "table5-mnist"),
                         ("table5-cifar-full", "table5-cifar-subset")):
        f, s = named_config(full), named_config(subset)
        assert f.name == full and "all" in f.scale and f.table == s.table
        assert len(f.cells) == len(s.cells) and f.references == s.references
        for a, b in zip(f.cells, s.cells, strict=True):
            assert a.dataset.test_size is None and b.dataset.test_size is not None
            assert a.dataset.to_dict() == {**b.dataset.to_dict(), "test_size": None}
            assert (a.attack, a.method, a.radii, a.num_test) == \
                (b.attack, b.method, b.radii, b.num_test)


def test_table5_grids_use_the_reproduction_settings():
    for name in ("table5-spambase", "table5-spambase-authors-split", "table5-mnist",
                 "table5-cifar-subset", "table5-mnist-full", "table5-cifar-full"):
        for cell in named_config(name).cells:
            assert cell.dataset.shuffle_seed == 0, name
            assert cell.method.edge_rule == "authors", name  # type: ignore[union-attr]
            assert cell.attack is not None
            assert cell.attack.clip == (cell.attack.kind != "blending"), name


def test_experiment_cli_draws_the_trigger_patterns(app, tmp_path, shared_data, monkeypatch):
    """Figure 5: one column per authors' trigger, the pattern over the triggered image."""
    import matplotlib.image

    monkeypatch.setenv("RAB_SHARED_DATA", str(shared_data))
    out = tmp_path / "fig5.png"
    drawn = CliRunner().invoke(app, ["experiment", "triggers", "--out", str(out)])
    assert drawn.exit_code == 0, drawn.output
    height, width = matplotlib.image.imread(out).shape[:2]
    assert width > height  # three columns, two rows
    bad = CliRunner().invoke(app, ["experiment", "triggers", "--index", "-1",
                                   "--out", str(tmp_path / "x.png")])
    assert bad.exit_code == 2 and "--index must lie in" in bad.output
    assert not (tmp_path / "x.png").exists()
