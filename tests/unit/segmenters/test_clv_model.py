"""BG/NBD and Gamma-Gamma (``segmenters/clv_model.py``, ``segmentflow fit-clv``): the published
CDNOW estimates, the paper's holdout check, gradients, recovery of known parameters, and the
command's errors. The CDNOW sample is the committed fixture (``tests/fixtures/cdnow``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from scipy.optimize import approx_fprime

from segmentflow.cli.main import main
from segmentflow.segmenters.clv_model import (
    DAY_US,
    BgNbd,
    FitError,
    Summary,
    _bgnbd_terms,
    _BgNbdSums,
    _gamma_gamma_terms,
    _GammaGammaSums,
    fit_bgnbd,
    fit_gamma_gamma,
    summarize,
)

FIXTURE = Path(__file__).parents[2] / "fixtures" / "cdnow" / "CDNOW_sample.txt"
UNTIL = "1997-09-30T00:00:00Z"
UNTIL_US = int(datetime(1997, 9, 30, tzinfo=UTC).timestamp()) * 1_000_000
START_DAY = int(datetime(1997, 1, 1, tzinfo=UTC).timestamp()) * 1_000_000 // DAY_US
#: Fader, Hardie & Lee (2005), "Counting your customers the easy way", the BG/NBD estimates
PAPER = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
PAPER_LL = -9582.4
#: Fader, Hardie & Lee (2005), "RFM and CLV", the Gamma-Gamma estimates on the same data
PAPER_SPEND = {"p": 6.25, "q": 3.74, "gamma": 15.44}


def cdnow_orders() -> list[tuple[str, int, float]]:
    """``(customer, time_us, dollars)`` of the fixture, at noon plus a per-customer offset of up
    to 10 h (as ``benchmarks/population_data.py`` places CDNOW orders)."""
    orders = []
    for line in FIXTURE.read_text().splitlines():
        cid, _sample_id, date, _cds, value = line.split()
        day = datetime.strptime(date, "%Y%m%d").replace(tzinfo=UTC)
        offset = (int(cid) * 7919) % 36_000 * 1_000_000
        ts = int(day.timestamp()) * 1_000_000 + 12 * 3_600_000_000 + offset
        orders.append((f"c{int(cid):05d}", ts, float(value)))
    return orders


def write_events(path: Path, orders: list[tuple[str, int, float]]) -> Path:
    with path.open("wb") as fh:
        for n, (cid, ts, value) in enumerate(sorted(orders, key=lambda o: o[1])):
            stamp = datetime.fromtimestamp(ts / 1e6, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            event = {
                "event_id": f"o-{n}",
                "customer_id": cid,
                "type": "order_completed",
                "timestamp": stamp,
                "properties": {"order_id": f"o-{n}", "revenue": value, "currency": "USD"},
            }
            fh.write(orjson.dumps(event) + b"\n")
    return path


@pytest.fixture(scope="module")
def summary() -> Summary:
    return summarize(cdnow_orders(), UNTIL_US)


def test_cdnow_summary_is_the_papers(summary: Summary) -> None:
    assert len(summary.customers) == 2357
    assert int((summary.x > 0).sum()) == 946  # 1,411 made no repeat purchase in weeks 1-39
    assert int(summary.x.sum()) == 2457
    first = summary.customers.index("c00004")  # orders 1997-01-01, 01-18, 08-02, 12-12
    assert summary.x[first] == 2 and summary.t_x[first] == pytest.approx(30.43, abs=0.005)
    assert summary.T[first] == pytest.approx(38.86, abs=0.005)
    assert summary.monetary[first] == pytest.approx((29.73 + 14.96) / 2)


def test_cli_reproduces_the_published_estimates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = write_events(tmp_path / "cdnow.jsonl", cdnow_orders())
    assert main(["fit-clv", str(events), "--until", UNTIL, "--json"]) == 0
    out = orjson.loads(capsys.readouterr().out)
    assert out["model"] == "bgnbd" and out["time_unit"] == "week" and out["customers"] == 2357
    for name, published in PAPER.items():
        assert out[name] == pytest.approx(published, rel=0.02), name
    assert out["log_likelihood"] == pytest.approx(PAPER_LL, abs=0.5)
    for name, published in PAPER_SPEND.items():
        assert out["gamma_gamma"][name] == pytest.approx(published, rel=0.02), name


def holdout_actual(summary: Summary) -> np.typing.NDArray[np.float64]:
    """Repeat transactions (distinct days) of each customer in weeks 40-78."""
    days: dict[str, set[int]] = {}
    for cid, ts, _ in cdnow_orders():
        if ts // DAY_US > UNTIL_US // DAY_US:
            days.setdefault(cid, set()).add(ts // DAY_US)
    return np.array([len(days.get(c, ())) for c in summary.customers], dtype=np.float64)


def test_holdout_weeks_40_to_78(summary: Summary) -> None:
    """The paper's validation: conditional expectations for weeks 40-78 against what the
    customers did, overall and by calibration frequency (its Figure 4)."""
    model = fit_bgnbd(summary.x, summary.t_x, summary.T)
    predicted = model.expected_orders(39.0, summary.x, summary.t_x, summary.T)
    actual = holdout_actual(summary)
    assert actual.sum() == 1882
    assert predicted.sum() == pytest.approx(1653.4, abs=1.0)
    assert abs(predicted.sum() / actual.sum() - 1) < 0.15  # BG/NBD under-predicts CDNOW a little
    by_x_pred = [predicted[summary.x == k].mean() for k in range(7)]
    by_x_act = [actual[summary.x == k].mean() for k in range(7)]
    assert all(np.diff(by_x_pred) > 0)  # more calibration purchases, more expected
    assert np.corrcoef(by_x_pred, by_x_act)[0, 1] > 0.97
    # those predicted in the top tenth buy several times the average in the holdout
    top = predicted >= np.quantile(predicted, 0.9)
    assert actual[top].mean() > 4 * actual.mean()


def test_cumulative_tracking_to_week_78(summary: Summary) -> None:
    """The paper's Figure 2: expected cumulative repeat transactions of the cohort, each
    customer from its first purchase, against the actual, at the end of weeks 39 and 78."""
    model = fit_bgnbd(summary.x, summary.t_x, summary.T)
    until_day = UNTIL_US // DAY_US
    first = {c: until_day - round(t * 7) for c, t in zip(summary.customers, summary.T, strict=True)}
    days: dict[str, set[int]] = {}
    for cid, ts, _ in cdnow_orders():
        days.setdefault(cid, set()).add(ts // DAY_US)
    starts = np.array([first[c] for c in summary.customers], dtype=np.float64)
    for week, tolerance in ((39, 0.03), (78, 0.05)):
        end = START_DAY + 7 * week - 1
        actual = sum(sum(1 for d in ds if first[c] < d <= end) for c, ds in days.items())
        expected = model.expected_orders_new((end - starts) / 7).sum()
        assert abs(expected / actual - 1) < tolerance, (week, expected, actual)


Vector = np.typing.NDArray[np.float64]


def _check(
    terms: Callable[..., tuple[Vector, Vector]],
    sums: Callable[[Vector], tuple[float, Vector]],
    params: Vector,
    *columns: Vector,
) -> None:
    """Per-row terms: gradient = finite differences; the fast sums = the terms summed."""
    ll, grad = terms(params, *columns)
    numeric = approx_fprime(params, lambda p: float(terms(p, *columns)[0].sum()), 1e-7)
    np.testing.assert_allclose(grad.sum(axis=1), numeric, rtol=1e-4, atol=1e-4)
    total, gradient = sums(params)
    assert total == pytest.approx(float(ll.sum()), rel=1e-12)
    np.testing.assert_allclose(gradient, grad.sum(axis=1), rtol=1e-9)


def test_gradients_and_fast_sums_agree_with_the_formulas(summary: Summary) -> None:
    x, t_x, T = summary.x, summary.t_x, summary.T
    for params in ([0.3, 5.0, 0.9, 2.0], [1.2, 0.5, 3.0, 0.7]):
        _check(_bgnbd_terms, _BgNbdSums(x, t_x, T), np.array(params), x, t_x, T)
    repeat = summary.x > 0
    x, m = summary.x[repeat], summary.monetary[repeat]
    _check(_gamma_gamma_terms, _GammaGammaSums(x, m), np.array([5.0, 3.0, 12.0]), x, m)


def test_fit_recovers_the_parameters_it_sampled_from() -> None:
    truth = BgNbd(r=0.6, alpha=3.0, a=1.5, b=4.0)
    rng = np.random.default_rng(16)
    T = rng.uniform(20, 60, 40_000)
    x, t_x = truth.sample(T, rng)
    fitted = fit_bgnbd(x, t_x, T)
    assert fitted.r == pytest.approx(truth.r, rel=0.1)
    assert fitted.alpha == pytest.approx(truth.alpha, rel=0.1)
    assert fitted.a == pytest.approx(truth.a, rel=0.25)
    assert fitted.b == pytest.approx(truth.b, rel=0.25)
    # the fit is the likelihood's maximum: the truth scores lower on the same data
    assert truth.log_likelihood_terms(x, t_x, T).sum() < fitted.log_likelihood


def test_p_alive_falls_with_silence() -> None:
    model = BgNbd(PAPER["r"], PAPER["alpha"], PAPER["a"], PAPER["b"])
    x = np.full(3, 3.0)
    alive = model.p_alive(x, np.array([35.0, 20.0, 5.0]), np.full(3, 39.0))
    assert alive[0] > alive[1] > alive[2] and alive[0] < 1
    assert model.p_alive(np.zeros(1), np.zeros(1), np.ones(1))[0] == 1.0


def test_fits_refuse_data_without_repeat_buyers() -> None:
    with pytest.raises(FitError, match="repeat buyer"):
        fit_bgnbd(np.zeros(5), np.zeros(5), np.ones(5))
    with pytest.raises(FitError, match="t_x <= T"):
        fit_bgnbd(np.array([1.0, 0.0]), np.array([5.0, 0.0]), np.array([4.0, 4.0]))
    with pytest.raises(FitError, match="Gamma-Gamma"):
        fit_gamma_gamma(np.array([1.0, 0.0]), np.array([3.0, 0.0]))


def test_cli_errors_tell_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = write_events(tmp_path / "e.jsonl", cdnow_orders()[:3])
    assert main(["fit-clv", str(events), "--until", "yesterday", "--json"]) == 2
    err = capsys.readouterr().err
    assert "argument --until: " in err and "e.g. 2026-05-30T00:00:00Z" in err
    assert main(["fit-clv", str(tmp_path / "missing.jsonl"), "--until", UNTIL]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["fit-clv", str(events), "--until", "1990-01-01T00:00:00Z"]) == 2
    assert "is --until after the orders?" in capsys.readouterr().err


def test_cli_reports_invalid_lines_and_ignores_duplicates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = cdnow_orders()
    events = write_events(tmp_path / "e.jsonl", orders)
    lines = events.read_bytes().splitlines()
    with events.open("ab") as fh:
        fh.write(b"{not json\n")
        fh.write(lines[0] + b"\n")  # a repeated event_id counts once
    assert main(["fit-clv", str(events), "--until", UNTIL, "--json"]) == 0
    captured = capsys.readouterr()
    assert "1 of " in captured.err and "line " in captured.err
    assert orjson.loads(captured.out)["r"] == pytest.approx(PAPER["r"], rel=0.02)
    assert main(["fit-clv", str(events), "--until", UNTIL]) == 0
    text = capsys.readouterr().out
    assert "2357 customers (946 repeat buyers)" in text and "1 duplicate ids" in text
