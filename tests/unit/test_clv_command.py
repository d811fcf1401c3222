"""`segengine fit clv` on the CDNOW 1/10 sample: the literature's estimates printed, the
calibration/holdout table, a model file that loads; the same purchases as contract events
(jsonl, through the replay reader) give the same model; the usage errors exit 2 in one line.

The command is mounted here as `fit clv` on an app of its own, as engine/cli.py mounts it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lifetimes.datasets
import orjson
import pytest
import typer
from typer.testing import CliRunner

from segengine.clv import artefact
from segengine.commands.fit import fit_clv
from segengine.datasets import Purchase, purchase_event

SAMPLE = Path(lifetimes.datasets.__file__).parent / "CDNOW_sample.txt"
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def app() -> typer.Typer:
    root = typer.Typer()
    fit = typer.Typer()
    fit.command("clv")(fit_clv)
    root.add_typer(fit, name="fit")
    return root


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app(), ["fit", "clv", *args], env=WIDE)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def sample_jsonl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """CDNOW_sample.txt as contract purchase events, plus a refund that the fit leaves out."""
    path = tmp_path_factory.mktemp("history") / "sample.jsonl"
    with open(SAMPLE) as src, open(path, "wb") as out:
        for line_no, line in enumerate(src, start=1):
            cdnow_id, _, day, cds, amount = line.split()
            event = purchase_event(Purchase(line_no, cdnow_id, day, int(cds), float(amount)))
            out.write(orjson.dumps(event) + b"\n")
        refund = {"event_id": "r-1", "customer_id": "cdnow-00004", "type": "refund", "ts": "1997-02-01T10:00:00+00:00",
                  "order_id": "o-1", "amount": 5.0}  # fmt: skip
        out.write(orjson.dumps(refund) + b"\n")
    return path


def test_the_sample_gives_the_literatures_estimates_and_the_holdout_table(tmp_path: Path) -> None:
    output = tmp_path / "models" / "clv.yaml"
    code, stdout, stderr = run("--from", str(SAMPLE), "--format", "cdnow", "--until", "1997-09-30", "-o", str(output))
    assert code == 0, stderr
    assert "2,357 customers (946 with repeat purchases), 1997-01-01 .. 1998-06-30" in stdout
    assert "fitted on the purchases up to 1997-09-30; time unit: week" in stdout
    for printed in ("0.2426", "4.4136", "0.7929", "2.4259", "-9,582.43", "6.2496", "3.7442", "15.4435"):
        assert printed in stdout, printed
    assert "holdout: 39 weeks after the calibration" in stdout
    rows = {line.split()[0]: line.split()[1:] for line in stdout.splitlines() if line.strip()[:2] in {"0 ", "7+"}}
    assert rows["0"][0] == "1,411" and rows["7+"][0] == "64"
    assert "repeat purchases in the holdout: actual 1,882, predicted 1,653.4" in stdout
    model = artefact.load(output)
    assert f"model {model.version} written to {output}" in stdout
    assert model.data.calibration_end is not None and str(model.data.calibration_end) == "1997-09-30"
    assert model.data.source == "CDNOW_sample.txt" and model.data.customers == 2357
    assert round(model.models.bgnbd.r, 3) == 0.243 and model.models.gamma_gamma is not None
    assert round(model.models.gamma_gamma.gamma, 2) == 15.44


def test_the_same_purchases_as_contract_events_give_the_same_model(tmp_path: Path, sample_jsonl: Path) -> None:
    code, stdout, stderr = run("--from", str(SAMPLE), "--format", "cdnow", "-o", str(tmp_path / "a.yaml"))
    assert code == 0, stderr
    code, stdout, stderr = run("--from", str(sample_jsonl), "-o", str(tmp_path / "b.yaml"))
    assert code == 0, stderr
    assert "refunds and unusable purchases left out: 1" in stdout
    a, b = artefact.load(tmp_path / "a.yaml"), artefact.load(tmp_path / "b.yaml")
    assert a.models == b.models
    assert a.data.calibration_end is None and "holdout" not in stdout


def test_a_daily_fit_scales_alpha_only(tmp_path: Path) -> None:
    code, _, stderr = run("--from", str(SAMPLE), "--format", "cdnow", "--until", "1997-09-30", "--time-unit", "day",
                          "-o", str(tmp_path / "d.yaml"))  # fmt: skip
    assert code == 0, stderr
    bg = artefact.load(tmp_path / "d.yaml").models.bgnbd
    assert bg.alpha == pytest.approx(4.4136 * 7, rel=1e-3) and round(bg.r, 3) == 0.243


def test_plot_needs_matplotlib_and_a_holdout(tmp_path: Path) -> None:
    png = tmp_path / "holdout.png"
    code, stdout, stderr = run(
        "--from", str(SAMPLE), "--format", "cdnow", "--plot", str(png), "-o", str(tmp_path / "m.yaml")
    )
    assert code == 2 and stdout == ""  # refused before reading anything
    if importlib.util.find_spec("matplotlib") is None:
        assert stderr.strip() == "--plot needs matplotlib: pip install matplotlib"
        return
    assert stderr.strip() == "--plot draws the holdout check: give --until too"
    code, _, stderr = run("--from", str(SAMPLE), "--format", "cdnow", "--until", "1997-09-30", "--plot", str(png),
                          "-o", str(tmp_path / "m.yaml"))  # fmt: skip
    assert code == 0, stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["--from", "history.txt"],
            "cannot fit: history.txt: the format cannot be told from its name; give --format "
            "(cdnow, csv, jsonl; .jsonl, .ndjson, .csv are known)",
        ),
        (["--from", "missing.jsonl"], "missing.jsonl: no such file"),
        (["--format", "parquet"], "cannot fit: --format 'parquet': use one of cdnow, csv, jsonl"),
        (["--until", "soon"], "cannot fit: --until 'soon' is not a date (YYYY-MM-DD) or an RFC 3339 time"),
        (["--time-unit", "month"], "--time-unit 'month': use week or day"),
    ],
)
def test_usage_errors_exit_2_in_one_line(args: list[str], says: str) -> None:
    code, stdout, stderr = run(*args)
    assert (code, stderr.strip()) == (2, says)
    assert stdout == ""


def test_a_history_with_nothing_to_fit_fails_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "early.jsonl"
    path.write_bytes(orjson.dumps({"customer_id": "c-1", "type": "purchase", "ts": 0, "order_id": "o", "amount": 1}))
    code, _, stderr = run("--from", str(path), "--until", "1969-12-01")
    assert (code, stderr.strip()) == (1, "error: cannot fit: no purchases at or before the end day")


def test_an_output_that_cannot_be_written_fails_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "models"
    blocker.write_text("a file where the folder would be")
    code, _, stderr = run("--from", str(SAMPLE), "--format", "cdnow", "-o", str(blocker / "clv.yaml"))
    assert code == 1 and stderr.startswith("error: cannot write ") and stderr.count("\n") == 1


def test_a_split_after_the_last_purchase_says_there_is_no_holdout(tmp_path: Path) -> None:
    code, stdout, stderr = run(
        "--from", str(SAMPLE), "--format", "cdnow", "--until", "1999-01-01", "-o", str(tmp_path / "m.yaml")
    )
    assert code == 0, stderr
    assert "no purchases after 1999-01-01: nothing to check the predictions against" in stdout
    assert "holdout:" not in stdout
