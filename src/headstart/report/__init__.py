"""The run report: one self-contained HTML page (figures and thumbnails embedded, no network),
verdict first, built from ``metrics.json`` alone so ``headstart report RUN`` can rebuild it."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import jinja2

from .._atomic import write_text
from ..errors import ModelFileError
from ..persistence import METRICS_FILE, REPORT_FILE
from ..summary import accuracy_name
from . import plots

WORST_CLASSES = 50


def render_report(metrics: dict) -> str:
    """The report's HTML for a run's metrics (``FitSummary.to_dict()`` with diagnostics)."""
    diagnostics = metrics.get("diagnostics") or {}
    errors = diagnostics.get("errors")
    weights = diagnostics.get("weights")
    suspects = diagnostics.get("suspects") or {"count": 0, "top": []}
    figures = {
        "history": plots.history_plot(diagnostics.get("history")),
        "learning_curve": plots.learning_curve_plot(diagnostics.get("learning_curve")),
        "confusion": plots.confusion_plot(errors),
        "reliability": plots.reliability_plot(errors["calibration"]) if errors else None,
        "novelty": plots.novelty_plot((metrics.get("evaluation") or {}).get("rejection")),
        "weights": plots.weight_histograms_plot(weights["histograms"]) if weights else None,
        "filters": plots.filters_plot(weights.get("first_conv")) if weights else None,
        "init_filters": plots.filters_by_scheme_plot(weights.get("init_filters") or {}) if weights else None,
    }
    rejection = (metrics.get("evaluation") or {}).get("rejection")
    rejected = [{**r, "thumbnail": plots.thumbnail(r["path"])} for r in (rejection or {}).get("rejected_images", [])]
    shown_suspects = [{**s, "thumbnail": plots.thumbnail(s.get("path"))} for s in suspects["top"]]
    per_class = errors["per_class"] if errors else []
    # Past WORST_CLASSES classes the weakest come first, and the whole table folds away behind a filter.
    worst_classes = sorted(per_class, key=lambda row: row["recall"])[:WORST_CLASSES] if len(per_class) > WORST_CLASSES else []
    probed = diagnostics.get("probed") or {}
    leakage = (metrics.get("duplicates") or {}).get("leakage", [])
    template = _environment().get_template("report.html.j2")
    return template.render(
        m=metrics,
        d=diagnostics,
        verdict=diagnostics.get("verdict"),
        figures=figures,
        errors=errors,
        per_class=per_class,
        worst_classes=worst_classes,
        sampled=probed.get("images", 0) < probed.get("of_images", 0),
        suspects=suspects,
        shown_suspects=shown_suspects,
        rejection=rejection,
        rejected=rejected,
        weights=weights,
        leakage=[{**pair, "thumbnails": [plots.thumbnail(p) for p in pair["paths"]]} for pair in leakage[:20]],
        leakage_total=len(leakage),
        accuracy_name=accuracy_name((metrics.get("evaluation") or {}).get("split")),
    )


def write_report(run_dir: str | Path) -> Path:
    """Rebuild ``RUN/report.html`` from ``RUN/metrics.json`` (atomically)."""
    run_dir = Path(run_dir).expanduser()
    path = run_dir / METRICS_FILE
    if not run_dir.exists():
        raise ModelFileError(f"{run_dir} does not exist; give the run directory written by 'headstart fit DATA -o RUN'.")
    if not path.is_file():
        raise ModelFileError(f"{run_dir} has no {METRICS_FILE}; give a run directory written by `headstart fit -o RUN`.")
    try:
        metrics = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path} is not valid JSON ({exc}); refit with `headstart fit DATA -o {run_dir}`.") from None
    target = run_dir / REPORT_FILE
    write_text(target, render_report(metrics))
    return target


def _environment() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(lambda name: resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8"))
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda v, digits=1: "n/a" if v is None else f"{v * 100:.{digits}f}%"
    env.filters["basename"] = lambda path: str(path).replace("\\", "/").rsplit("/", 1)[-1]
    env.filters["num"] = lambda v, digits=3: "n/a" if v is None else f"{v:.{digits}f}"
    return env
