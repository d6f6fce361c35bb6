"""The report's six sections as blocks (paragraphs, tables, inlined plots), written out as one self-contained
HTML page (no external CSS, script or image: it opens offline) or as markdown (the flows' artifact)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from schemas.evaluation import MetricResult
from tasks.report import paper

SECTIONS = ("Data", "Image encoder", "Report generation", "Ablations", "CheXprompt", "Lineage")
RATE_PREFIXES = ("rule_sensitivity_", "rule_specificity_", "rule_balanced_accuracy_")
Block = tuple  # ("p", text) | ("table", headers, rows) | ("img", png bytes, alt)


def _ci(m: MetricResult | None) -> str:
    if m is None:
        return "absent"
    if m.value is None:
        return str(m.not_computed)
    return f"{m.value:.2f}" + (f" [{m.ci[0]:.2f}, {m.ci[1]:.2f}]" if m.ci else "")


def _vci(d: dict | None) -> str:
    if not d or d.get("value") is None:
        return (d or {}).get("not_computed") or "not computed"
    return f"{d['value']:.2f}" + (f" [{d['ci'][0]:.2f}, {d['ci'][1]:.2f}]" if d.get("ci") else "")


def sections(data: dict[str, Any]) -> dict[str, list[Block]]:
    return {
        "Data": _data(data),
        "Image encoder": _encoder(data),
        "Report generation": _generation(data),
        "Ablations": _ablations(data),
        "CheXprompt": _chexprompt(data),
        "Lineage": _lineage(data),
    }


def _data(data: dict) -> list[Block]:
    blocks: list[Block] = []
    for d in data["data"]:
        s = d["ingest"]
        blocks.append(("p", f"Ingest `{d['dir']}` (source {s.get('source', 'mixture')}): found {s.get('found')} = "
                            f"kept {s.get('kept')} + filtered {s.get('filtered')} + quarantined "
                            f"{s.get('quarantined')}."))
        reasons = [("filtered", k, v) for k, v in s.get("filtered_by_reason", {}).items()]
        reasons += [("quarantined", k, v) for k, v in s.get("quarantined_by_reason", {}).items()]
        if reasons:
            blocks.append(("table", ["outcome", "reason", "inputs"], [[a, b, str(c)] for a, b, c in reasons]))
        counts = d.get("paper_counts") or {}
        ours, theirs = counts.get("this_run", {}), counts.get("paper", {})
        rows = []
        for split in ("train", "validate", "test"):
            o, p = ours.get(split, {}), theirs.get(split, {})
            rows.append([split, str(s.get("splits", {}).get(split, "")),
                         *(str(o.get(k, "")) for k in ("images", "studies", "rule_based_reports", "pairs")),
                         *(f"{p[k]:,}" if k in p else "not published" for k in ("images", "studies", "pairs"))])
        blocks.append(("table", ["split", "images kept by ingest", "images sharded", "studies", "rule-based reports",
                                 "pairs", "paper: images", "paper: studies", "paper: pairs"], rows))
        blocks.append(("p", "The paper's columns are LLaVA-Rad's MIMIC-CXR data table (real data, frontal views, "
                            f"official splits; {paper.CITATION}); this run's are from its shards' summary.json."))
    return blocks or [("p", "not computed: no run of this report ingested data")]


def _encoder(data: dict) -> list[Block]:
    blocks: list[Block] = []
    for r in data["runs"]:
        enc = r.get("encoder")
        if not enc:
            continue
        if enc.get("not_computed"):
            blocks.append(("p", f"{r['name']}: {enc['not_computed']}"))
            continue
        rows = []
        for k, m in enc["metrics"].metrics.items():
            note = enc["notes"].get(k, {})
            rows.append([k, _ci(m), f"{note['chance']:.2f}" if note else "",
                         f"{note['ratio_to_chance']:.2f}x" if note else ""])
        blocks += [("p", f"Run {r['name']}: retrieval on the test split ({enc.get('samples')} samples) and "
                         "zero-shot AUROC, 95% bootstrap CIs over queries."),
                   ("table", ["metric", "value [95% CI]", "chance", "ratio to chance"], rows)]
    return blocks or [("p", "not computed: no run of this report trained an image encoder (its config has no "
                            "`encoder:` section)")]


def _generation(data: dict) -> list[Block]:
    blocks: list[Block] = []
    lrn = data.get("learning")
    if lrn:
        blocks.append(("p", "Does the model read the images? The trained model against the shuffle control "
                            "(the same training, images swapped across studies) and the image-blind baselines "
                            "(no training; the same text for every test study). Learned = its 95% CI lies above "
                            "every other CI."))
        rows = []
        for rec in (lrn, lrn.get("balanced_accuracy")):
            if not rec:
                continue
            base = rec.get("baselines", {})
            rows.append([rec["metric"], _vci(rec["trained"]), _vci(rec["shuffled"]),
                         _vci(base.get("image_blind")), _vci(base.get("majority_report")),
                         _vci(rec["difference"]), "yes" if rec.get("learned") else "not shown"])
        blocks.append(("table", ["metric", "trained", "shuffled", "image-blind constant", "majority report",
                                 "trained - shuffled (paired)", "learned"], rows))
    for r in data["runs"]:
        ev = r.get("evaluation")
        if ev is None:
            continue
        base = ev.baselines
        blocks.append(("p", f"Run {r['name']}: {ev.n_reports} test reports; {int(ev.ci_level * 100)}% bootstrap "
                            f"CIs over {ev.n_bootstrap} resamples. Model: {r.get('train', 'not described')}."))
        rows = []
        for k, m in ev.metrics.items():
            if k.startswith(RATE_PREFIXES) and k != "rule_balanced_accuracy_macro_14":
                continue
            med = f"{m.bootstrap_median:.2f}" if m.bootstrap_median is not None else ""
            rows.append([k, _ci(m), med, *(_ci(b.metrics.get(k)) if k in b.metrics else "" for b in base.values()),
                         paper.paper_figure(k) or ""])
        blocks.append(("table", ["metric", "value [95% CI]", "bootstrap median",
                                 *(f"baseline: {b}" for b in base), "paper (LLaVA-Rad 7B, real MIMIC-CXR)"], rows))
        for b_name, b in base.items():
            blocks.append(("p", f"Baseline {b_name}: {b.description}: “{b.prediction}”"))
        finding_rows = []
        for k, m in ev.metrics.items():
            if k.startswith("rule_sensitivity_") and m.value is not None:
                obs = k.removeprefix("rule_sensitivity_")
                finding_rows.append([obs, _ci(m), _ci(ev.metrics.get(f"rule_specificity_{obs}")),
                                     _ci(ev.metrics.get(f"rule_balanced_accuracy_{obs}"))])
        if finding_rows:
            blocks.append(("table", ["finding (rule-based labels)", "sensitivity", "specificity",
                                     "balanced accuracy"], finding_rows))
    blocks.append(("p", f"Paper figures: {paper.SOURCE}; {paper.CITATION}. They are the paper's, on real data with "
                        "CheXbert and RadGraph; rule-based label F1 is cxrflow's offline stand-in and has no paper "
                        "figure."))
    return blocks


def forest_png(rows: list[dict]) -> bytes | None:
    """Each compared (variant, metric): the paired difference vs the baseline with its 95% CI."""
    pts = [r for r in rows if r.get("diff") is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 0.35 * len(pts) + 1.0))
    for i, r in enumerate(reversed(pts)):
        lo, hi = r.get("diff_ci_low"), r.get("diff_ci_high")
        err = [[r["diff"] - lo], [hi - r["diff"]]] if lo is not None else None
        ax.errorbar([r["diff"]], [i], xerr=err, fmt="o", capsize=3, color="C0" if (lo or 0) * (hi or 0) <= 0 else "C3")
    ax.axvline(0, color="grey", lw=1)
    ax.set_yticks(range(len(pts)), [f"{r['variant']}: {r['metric']}" for r in reversed(pts)], fontsize=7)
    ax.set_xlabel("difference vs baseline (paired bootstrap 95% CI)", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _ablations(data: dict) -> list[Block]:
    from tasks.evaluate.resampling import p_text

    blocks: list[Block] = []
    for a in data["ablations"]:
        blocks.append(("p", f"Ablation {a['name']} (baseline {a['baseline']}): value with its 95% bootstrap CI, "
                            "and vs the baseline the paired difference with its 95% CI and two-sided p from one "
                            "paired bootstrap over the test reports. Across training seeds: mean ± sd of the "
                            "variant's value over its `train.seeds`."))
        rows = []
        for r in a["rows"]:
            base_name = r["variant"].rsplit("-seed", 1)[0]
            spread = a["seeds"].get((base_name, r["metric"]))
            value = (f"{r['value']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" if r.get("ci_low") is not None
                     else f"{r['value']:.2f}") if r.get("value") is not None else r.get("status", "")
            diff = (f"{r['diff']:+.2f} [{r['diff_ci_low']:.2f}, {r['diff_ci_high']:.2f}]"
                    if r.get("diff") is not None else ("baseline" if r.get("status") == "baseline" else
                                                       r.get("status", "")))
            rows.append([r["variant"], r["metric"], value,
                         f"{spread['mean']:.2f} ± {spread['sd']:.2f} ({spread['n']} seeds)" if spread else "",
                         diff, "" if r.get("p_value") is None else p_text(r["p_value"], r.get("p_floor")),
                         str(r.get("n", ""))])
        blocks.append(("table", ["variant", "metric", "value [95% CI]", "across training seeds", "vs baseline [95% CI]",
                                 "p", "n"], rows))
        png = forest_png(a["rows"])
        blocks.append(("img", png, f"forest plot of the paired differences of ablation {a['name']}") if png else
                      ("p", "not computed: no paired difference to plot"))
    return blocks or [("p", "not computed: no ablation output given (OUT/ablations/<name>/leaderboard.json)")]


def _chexprompt(data: dict) -> list[Block]:
    blocks: list[Block] = []
    for r in data["runs"]:
        ev, cp = r.get("evaluation"), r.get("chexprompt") or {}
        if ev is None:
            continue
        s = cp.get("summary", {})
        blocks.append(("p", f"Run {r['name']}: judge backend {s.get('backend', 'none')}, protocol "
                            f"{s.get('protocol', 'not recorded')}, prompt version "
                            f"{s.get('prompt_version', 'not recorded')}, {s.get('judged', 0)} reports judged."))
        rows = [[k, _ci(m)] for k, m in ev.metrics.items() if k.startswith("chexprompt_")]
        if rows:
            blocks.append(("table", ["metric", "value [95% CI]"], rows))
        if cp.get("counts"):
            blocks.append(("table", ["type", "error", "clinically significant", "clinically insignificant"],
                           [[c["type"], c["name"], str(c["significant"]), str(c["insignificant"])]
                            for c in cp["counts"]]))
        else:
            blocks.append(("p", "Error counts by type: not computed: no LLM judge ran for this evaluation"))
    return blocks or [("p", "not computed: no evaluation in this run")]


def _lineage(data: dict) -> list[Block]:
    rows = [[r["section"], r["number"], r["value"], r["file"], r["stage"], r["config_hash"], r["code_version"]]
            for r in data["lineage"]]
    return [("p", f"Report written by code version {data['code_version']} from `{data['run']}`. Each number: the "
                  "file it came from, the config hash of the stage that wrote it (its folder's name) and the code "
                  "version that stage ran."),
            ("table", ["section", "number", "value", "file", "stage", "config hash", "code version"], rows)]


def _anchor(title: str) -> str:
    return title.lower().replace(" ", "-")


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse;
margin:.5em 0 1.2em}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}
th{background:#f3f3f3}section{margin-bottom:2em}img{max-width:100%}"""


def render_html(data: dict[str, Any]) -> str:
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>cxrflow reproduction report</title>",
             f"<style>{STYLE}</style></head><body><h1>cxrflow reproduction report</h1>",
             f"<p>{html.escape(data['run'])}: {', '.join(html.escape(r['name']) for r in data['runs'])}</p><nav>",
             " · ".join(f"<a href='#{_anchor(t)}'>{t}</a>" for t in SECTIONS), "</nav>"]
    for title, blocks in sections(data).items():
        parts.append(f"<section id='{_anchor(title)}'><h2>{title}</h2>")
        for b in blocks:
            if b[0] == "p":
                parts.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in b[1])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in b[2])
                parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            else:
                parts.append(f"<img alt='{html.escape(b[2])}' src='data:image/png;base64,"
                             f"{base64.b64encode(b[1]).decode()}'>")
        parts.append("</section>")
    return "".join(parts) + "</body></html>\n"


def render_markdown(data: dict[str, Any]) -> str:
    def cell(c: str) -> str:
        return c.replace("|", "\\|").replace("\n", " ")

    lines = ["# cxrflow reproduction report", "", f"`{data['run']}`", ""]
    for title, blocks in sections(data).items():
        lines += [f"## {title}", ""]
        for b in blocks:
            if b[0] == "p":
                lines += [b[1], ""]
            elif b[0] == "table":
                lines += ["| " + " | ".join(map(cell, b[1])) + " |", "|" + "---|" * len(b[1])]
                lines += ["| " + " | ".join(map(cell, row)) + " |" for row in b[2]] + [""]
            else:
                lines += [f"![{b[2]}](data:image/png;base64,{base64.b64encode(b[1]).decode()})", ""]
    return "\n".join(lines)


def write_report(run, html_path, ablations=None) -> dict[str, Any]:
    """Collect `run` and write the HTML page to `html_path`; returns the collected data."""
    from pathlib import Path

    from cxrio import atomic_write_bytes
    from tasks.report.collect import collect

    data = collect(Path(run), [Path(a) for a in ablations] if ablations else None)
    atomic_write_bytes(Path(html_path), render_html(data).encode())
    return data


def report_markdown(run, ablations=None) -> str:
    """The markdown twin of the page for `run` (the pipeline and ablate flows' artifact). A run whose files the
    report cannot read gets a page that says why, not a failed pipeline: its stages are done."""
    from pathlib import Path

    from tasks.report.collect import collect

    try:
        return render_markdown(collect(Path(run), [Path(a) for a in ablations] if ablations else None))
    except (OSError, ValueError, KeyError) as exc:  # UserError and pydantic's ValidationError are ValueErrors
        return f"# cxrflow reproduction report\n\nnot rendered: {type(exc).__name__}: {exc}\n"
