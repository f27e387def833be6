"""The acceptance report: one self-contained report.html and a short console summary of the gate's results.

Both are drawn from the gate's typed results (validation/results.py), the same ones metrics.json is
written from, so the report shows exactly what was measured. The HTML has inline CSS and base64 PNG
overlays only (drawn by the gate while it had the masks, validation/overlays.py), so it can be mailed,
attached to a ticket or opened offline; the report itself never reads a mask.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from validation.report_view import (
    group_state,
    number,
    one_line,
    scope_line,
    seconds,
    size,
    verdict,
    view_model,
)
from validation.results import CaseResult, GateResults

REPORT_FILE = "report.html"
CONSOLE_LINES = 25

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>armgate acceptance: {{ verdict }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
  color:#1d2430;background:#f4f6f9}
main{max-width:1180px;margin:0 auto;padding:0 20px 40px}
h1{margin:0;font-size:30px;letter-spacing:.04em}
h2{margin:28px 0 10px;font-size:20px;border-bottom:2px solid #d5dbe4;padding-bottom:4px}
h3{margin:18px 0 6px;font-size:16px}
.banner{padding:22px 20px;margin-bottom:8px;color:#fff;background:#4a5568}
.banner .inner{max-width:1180px;margin:0 auto}.banner p{margin:4px 0 0}
.pass{color:#1e7d3b}.fail{color:#b3261e}
.banner.pass{background:#1e7d3b;color:#fff}.banner.fail{background:#b3261e;color:#fff}
.banner.partial{background:#f2c230;color:#1d2430}
table{border-collapse:collapse;background:#fff;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d5dbe4;padding:4px 9px;text-align:left;vertical-align:top}
th{background:#eaeef4;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.pass{background:#e5f4e9;color:#14532d}td.fail{background:#fbe4e2;color:#7f1d1d;font-weight:600}
td.num.pass::after{content:" ✓"}td.num.fail::after{content:" ✗"}
td.skip{background:#f1f1f1;color:#666}
.tag{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.tag.pass{background:#1e7d3b}.tag.fail{background:#b3261e}.tag.partial{background:#f2c230;color:#1d2430}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
pre{white-space:pre-wrap;word-break:break-all;background:#fff;border:1px solid #d5dbe4;
  padding:6px 8px;margin:4px 0}
.case{background:#fff;border:1px solid #d5dbe4;border-radius:6px;padding:4px 16px 12px;margin:14px 0}
.muted{color:#5c6675}.failed li{margin:3px 0}.reason{white-space:pre-line}
figure{margin:8px 0}.panels{display:flex;flex-wrap:wrap;gap:12px}
.panel{margin:0}.panel img{display:block;border:1px solid #333}
.panel figcaption{font-size:12px;color:#5c6675}
.legend span{display:inline-block;width:14px;height:4px;margin:0 4px 3px 10px;vertical-align:middle}
details{margin:8px 0}summary{cursor:pointer;font-weight:600}
</style></head>
<body>
<header class="banner {{ verdict_class }}"><div class="inner">
<h1>{{ verdict }}</h1>
<p>armgate acceptance · started {{ started }} · {{ seconds }} ·
{{ counts.total - counts.failed - counts.skipped }} of {{ counts.total }} checks passed,
{{ counts.failed }} failed, {{ counts.skipped }} not evaluated</p>
{% if scope %}<p class="scope">{{ scope }}</p>{% endif %}
</div></header>
<main>
{% if failed %}
<h2>Failed checks</h2>
<ul class="failed">
{% for check in failed %}<li><span class="fail">✗</span> <b>{{ check.group }}</b> /
<code>{{ check.name }}</code>: <span class="reason">{{ check.reason or "no reason given" }}</span></li>
{% endfor %}</ul>
{% endif %}

<h2>Image</h2>
<table>{% for title, value in image.facts %}
<tr><th>{{ title }}</th><td><code>{{ value }}</code></td></tr>{% endfor %}
</table>
{% if image.pins %}
<h3>Pinned packages</h3>
<table><tr><th>Package</th><th>Expected</th><th>Found</th><th>Result</th></tr>
{% for pin in image.pins %}<tr><td>{{ pin.name }}</td><td><code>{{ pin.expected }}</code></td>
<td><code>{{ pin.found if pin.found is not none else "missing" }}</code></td>
<td class="{{ 'pass' if pin.passed else 'fail' }}">{{ 'pass' if pin.passed else 'fail' }}</td></tr>
{% endfor %}</table>
{% endif %}
{% if image.labels %}
<details><summary>Image labels ({{ image.labels|length }})</summary>
<table>{% for key, value in image.labels %}
<tr><th>{{ key }}</th><td><code>{{ value }}</code></td></tr>{% endfor %}
</table>
</details>
{% endif %}

<h2>Cases</h2>
{% for case in cases %}
<section class="case" id="case-{{ case.name }}">
<h3>{{ case.name }}
{% if case.state %}<span class="tag {{ case.state }}">{{ case.state|upper }}</span>{% endif %}</h3>
<p class="muted">DICOM <code>{{ case.dicom_dir }}</code><br>
output mask <code>{{ case.output_mask }}</code></p>
{% if case.failed %}<ul class="failed">{% for check in case.failed %}
<li><span class="fail">✗</span> <code>{{ check.name }}</code>:
<span class="reason">{{ check.reason or "no reason given" }}</span></li>
{% endfor %}</ul>{% endif %}
{% if case.runs %}
<table><tr><th>Run</th><th>Result</th><th>Wall time</th><th>Peak memory</th></tr>
{% for run in case.runs %}<tr><td>{{ run.where }}</td><td class="{{ run.state }}">{{ run.status }}</td>
<td class="num">{{ run.seconds }}</td><td class="num">{{ run.memory }}</td></tr>{% endfor %}
</table>
{% for run in case.runs %}
<div class="muted">{{ run.where }} command:</div><pre>{{ run.command }}</pre>
{% if run.log_tail %}<div class="muted">the app's last lines ({{ run.where }}):</div>
<pre>{{ run.log_tail }}</pre>{% endif %}
{% endfor %}
{% else %}<p class="fail">No run recorded.</p>{% endif %}

{% for comparison in case.comparisons %}
<h3>vs {{ comparison.title }}
{% if comparison.state %}<span class="tag {{ comparison.state }}">{{ comparison.state|upper }}</span>
{% endif %}</h3>
<p class="muted">reference <code>{{ comparison.reference }}</code>
{% if comparison.tolerances %}<br>tolerances: {{ comparison.tolerances }}{% endif %}</p>
{% for outcome in comparison.general %}
<div class="{{ 'pass' if outcome.passed else 'fail' }}">{{ '✓' if outcome.passed else '✗' }}
{{ outcome.name }}: {{ outcome.reason }}</div>{% endfor %}
{% if comparison.rows %}
<table><tr><th>Label</th>{% for header in comparison.headers %}<th>{{ header }}</th>{% endfor %}
<th>Volume out / ref ml</th></tr>
{% for row in comparison.rows %}<tr><td>{{ row.label }} {{ row.name }}</td>
{% for cell in row.cells %}<td class="num {{ cell.state }}">{{ cell.text }}</td>{% endfor %}
<td class="num">{{ row.volumes }}</td></tr>{% endfor %}
</table>
{% else %}<p class="muted">No per-label metrics.</p>{% endif %}
{% endfor %}

{% if case.seg %}
<h3>DICOM SEG</h3>
<table><tr><th>Check</th><th>Result</th><th>Reason</th></tr>
{% for outcome in case.seg %}<tr><td><code>{{ outcome.name }}</code></td>
<td class="{{ 'pass' if outcome.passed else 'fail' }}">{{ 'pass' if outcome.passed else 'fail' }}</td>
<td>{{ outcome.reason }}</td></tr>{% endfor %}</table>
{% endif %}

{% if case.overlay %}
<figure class="overlay">
<div class="panels">{% for panel in case.overlay.panels %}
<figure class="panel">
{% if panel.src %}<img src="{{ panel.src }}" alt="{{ case.name }}: output vs {{ panel.title }}">{% endif %}
<figcaption>reference: {{ panel.title }}{% if panel.note %} ({{ panel.note }}){% endif %}
{% if panel.caption %}<br>{{ panel.caption }}{% endif %}</figcaption>
</figure>
{% endfor %}</div>
<figcaption><span class="legend">{% for name, colour in legend %}
<span style="background:{{ colour }}"></span>{{ name }}{% endfor %}</span></figcaption>
</figure>
{% else %}<p class="muted">{{ case.no_overlay }}</p>{% endif %}
</section>
{% endfor %}

<h2>All checks</h2>
<details{% if failed %} open{% endif %}><summary>{{ counts.total }} checks</summary>
<table><tr><th>Group</th><th>Check</th><th>Result</th><th>Reason</th></tr>
{% for check in checks %}<tr><td>{{ check.group }}</td><td><code>{{ check.name }}</code></td>
{% if check.skipped %}<td class="skip">not evaluated</td>{% else %}
<td class="{{ 'pass' if check.passed else 'fail' }}">{{ 'pass' if check.passed else 'fail' }}</td>
{% endif %}<td>{{ check.reason }}</td></tr>{% endfor %}
</table></details>
</main></body></html>
"""



def render_html(results: GateResults) -> str:
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    return environment.from_string(TEMPLATE).render(**view_model(results))


def write_report(results: GateResults, out_dir: Path) -> Path:
    """Writes out_dir/report.html (self-contained) and returns its path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT_FILE
    path.write_text(render_html(results), encoding="utf-8")
    return path


def _case_line(case: CaseResult, results: GateResults) -> str:
    state = group_state(results.checks_of(case.name)).upper() or "—"
    parts = [f"case {case.name}: {state}"]
    if case.run is not None:
        status = one_line(case.run.failure, 80) or f"{case.run.where} {case.run.status[0]}"
        parts.append(f"{status} in {seconds(case.run.seconds)}, peak {size(case.run.peak_memory_bytes)}")
    else:
        parts.append("no run")
    for key, comparison in case.comparisons.items():
        worst = comparison.worst
        if worst is not None:
            parts.append(f"{key} min Dice {number(worst.dice, '{:.4f}')} ({worst.name})")
    return "; ".join(parts)


def console_summary(results: GateResults) -> str:
    """A few lines for the terminal: verdict, image, one line per case, failed checks with reasons."""
    checks, failed, skipped = results.checks, results.failed, results.not_evaluated
    image, scope = results.image, scope_line(results)
    lines = [
        f"acceptance {verdict(results)}: {len(checks) - len(failed) - skipped} of {len(checks)} checks "
        f"passed, {len(failed)} failed, {skipped} not evaluated ({seconds(results.seconds)})",
        *([scope] if scope else []),
        f"image {image.reference or '—'} ({image.platform or '—'}, "
        f"{(image.id or '—')[:19]}, {size(image.size_bytes)})",
    ]
    lines += [_case_line(case, results) for case in results.cases]
    if failed:
        room = max(3, CONSOLE_LINES - len(lines) - 2)
        shown = failed if len(failed) <= room else failed[: room - 1]
        lines.append("failed checks:")
        lines += [f"  {c.group} / {c.name}: {one_line(c.reason) or 'no reason given'}" for c in shown]
        if len(shown) < len(failed):
            lines.append(f"  … and {len(failed) - len(shown)} more (see report.html)")
    return "\n".join(lines)
