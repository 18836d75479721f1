"""The report as a document: a title and a list of blocks, one function per section.

Blocks are plain data (headings, paragraphs, tables, charts…) holding plain text;
the renderers in :mod:`ftspec.runtime.report.render` turn the same document into Markdown
and into HTML, each escaping the text for its own format.
"""

from __future__ import annotations

from typing import Any, Iterable

from ftspec.runtime.report.blocks import (  # noqa: F401 (the blocks are also read from here)
    Alert,
    Block,
    Chart,
    Document,
    Fields,
    Heading,
    Paragraph,
    Table,
    clip,
    count,
    fmt,
    pct,
    rows_text,
    signed,
)
from ftspec.runtime.report.results import (
    EXAMPLES,
    LOWER_IS_BETTER,
    Results,
    confusion,
    dig,
    example_metric,
    movers,
    num,
    series,
    step_text,
    weakest,
)
from ftspec.runtime.report.sources import data_blocks as source_data_blocks
from ftspec.runtime.report.sources import section as sources_section
from ftspec.runtime.report.sources import warning_blocks as source_warnings
from ftspec.runtime.report.verdict import interval_text, metric_label, verdict

SPLIT_ORDER = ("train", "validation", "test")


# --------------------------------------------------------------------------- the document


def build_document(r: Results, charts: Iterable[str] = (), stages: dict | None = None) -> Document:
    """The whole report; ``charts``: the chart files that were drawn; ``stages``: the
    comparison of every stage's models (compare_stages' comparison.json), for a plan with stages."""
    charts = set(charts)
    doc = Document(title(r))
    for section in (summary_section(r), metrics_section(r, charts), sources_section(r), stages_section(stages, charts),
                    gates_section(r),
                    training_section(r, charts), rewards_section(r, charts), data_section(r),
                    classification_section(r, charts), examples_section(r)):
        doc.blocks.extend(section)
    return doc


def title(r: Results) -> str:
    return f"ftspec report: {r.summary['name'] or 'run'}"


def summary_section(r: Results) -> list[Block]:
    s = r.summary
    split, n = s["split"], s["rows"]
    plan_id = f"plan {str(s['plan_id'])[:12]} · " if s["plan_id"] else ""
    blocks: list[Block] = [
        Heading(1, title(r)),
        Paragraph(f"{plan_id}model {_describe_model(r.plan.model)} · method {_describe_method(r.plan.method)}"
                  f" · evaluated on {split}" + (f" ({n} rows)" if n is not None else "")),
        Paragraph(verdict(r.names, s), strong=True),
    ]
    gates = s["gates"]
    if gates:
        failed = [g["gate"] for g in gates if not g["passed"]]
        blocks.append(Paragraph(f"gates: all {len(gates)} passed" if not failed
                                else f"gates: {len(failed)} of {len(gates)} failed ({', '.join(failed)})"))
    if s["overfitting"]:
        blocks.append(Alert(s["overfitting"]))
    blocks.extend(source_warnings(s))  # a mixture that hurt one of its sources
    return blocks


def _describe_model(m: Any) -> str:
    if not isinstance(m, dict):
        return "?"
    if m.get("kind") == "tiny":
        return f"tiny {m.get('architecture', '?')} ({m.get('num_layers', '?')} layers × {m.get('hidden_size', '?')})"
    name = m.get("name_or_path") or m.get("name") or m.get("kind") or "?"
    return f"{name} @ {m['revision']}" if m.get("revision") else str(name)


def _describe_method(m: Any) -> str:
    if not isinstance(m, dict):
        return "?"
    adapter = dig(m, "adapter", "kind") or "?"
    return f"{m.get('objective', '?')} + {'full fine-tuning' if adapter == 'full' else adapter}"


def metrics_section(r: Results, charts: set[str]) -> list[Block]:
    s = r.summary
    base, tuned, delta = s["base"], s["tuned"], s["delta"]
    majority, intervals = s.get("majority"), s.get("intervals") or {}
    blocks: list[Block] = [Heading(2, "Metrics")]
    if base is None and tuned is None:
        return blocks + [Paragraph("No evaluation results.")]

    def cell(side: str, value: Any, metric: str, sign: bool = False) -> str:
        interval = dig(intervals, side, metric)
        shown = signed(value) if sign else fmt(value)
        text = interval_text(interval, signed=sign)
        return f"{shown} ({text})" if text and num(value) is not None else shown

    # tuned − majority beside tuned − base: the verdict weighs the tuned model against both by an interval
    versus_majority = bool(majority) and tuned is not None
    header = (["metric"] + (["majority"] if majority else []) + ["base", "tuned", "tuned − base"]
              + (["tuned − majority"] if versus_majority else []))
    table = []
    for m in r.names:
        row = [metric_label(m, s) + (" (lower is better)" if m in LOWER_IS_BETTER else "")]
        if majority:
            row.append(cell("majority", majority.get(m), m))
        row += [cell("base", (base or {}).get(m), m), cell("tuned", (tuned or {}).get(m), m),
                cell("tuned_minus_base", delta.get(m), m, sign=True)]
        if versus_majority:
            t, b = num(tuned.get(m)), num(majority.get(m))
            row.append(cell("tuned_minus_majority", None if t is None or b is None else t - b, m, sign=True))
        table.append(row)
    blocks.append(Table.of(header, table))
    if intervals.get("method"):
        paired = [d for d, there in (("tuned − base", base is not None), ("tuned − majority", versus_majority))
                  if there and tuned is not None]
        blocks.append(Paragraph(
            f"In parentheses: 95% confidence intervals, by a {intervals['method']} "
            f"({rows_text(intervals.get('rows'))}, {count(intervals.get('resamples'))} resamples, "
            f"seed {intervals.get('seed')})"
            + (f"; {' and '.join(paired)} {'are' if len(paired) > 1 else 'is'} paired (the same resampled rows for "
               "both sides). A difference whose interval holds 0 is within noise." if paired else ".")))
    if majority:
        answers = {a for a in (s.get("majority_answers") or {}).values() if isinstance(a, str)}
        shown = ", ".join(repr(clip(a, 60)) for a in sorted(answers)) or "—"
        other = r.run.train_references.other
        unkept = (f" It was learnt from the training rows whose answer was among the first "
                  f"{len(r.run.train_references.counts)} distinct ones; {rows_text(other)} with other answers were "
                  f"counted but not kept." if other else "")
        blocks.append(Paragraph(f"majority: the most frequent answer of the training split ({shown}) predicted for "
                                f"every evaluated row, the score a model gets without reading the input.{unkept}"))
    elif tuned is not None and r.rows and not r.run.train_references.rows:
        blocks.append(Paragraph("No most-frequent-answer baseline: the training split was not found."))
    f1 = dig(s, "details", "tuned", "f1") or dig(s, "details", "base", "f1")
    if "f1" in r.names and isinstance(f1, dict):
        if f1.get("average") == "binary":
            blocks.append(Paragraph(f"f1 is the F1 of the positive label {f1.get('positive')!r} ({f1.get('why')}), "
                                    f"as scikit-learn's binary F1; f1_macro averages the F1 of every label."))
        else:
            blocks.append(Paragraph("f1 is the macro average of the F1 of every label (as f1_macro)."))
    blocks.extend(Paragraph(line) for line in extraction_lines(s))
    if base is None:
        blocks.append(Paragraph("The base model was not evaluated (no baseline)."))
    if "metrics.png" in charts:
        blocks.append(Chart("Base vs tuned per metric", "metrics.png"))
    return blocks


def parameters_text(model: dict) -> str:
    """A model's parameter count as the stages table shows it (a LoRA adapter's apart)."""
    n, adapter = num(model.get("parameters")), num(model.get("adapter_parameters"))
    shown = "—" if n is None else f"{int(n):,}"
    if adapter is not None:
        return f"{shown} (adapter {int(adapter):,})" if n is not None else f"? + adapter {int(adapter):,}"
    return shown


def stages_section(c: dict | None, charts: set[str]) -> list[Block]:
    """Every model of every stage on the held-out rows: one table, one chart, and for
    distillation how close the student got to the teacher, at what size. Nothing without stages."""
    if not isinstance(c, dict):
        return []
    models = [m for m in c.get("models") or [] if isinstance(m, dict)]
    names = [n for n in c.get("metrics") or [] if isinstance(n, str)]
    blocks: list[Block] = [Heading(2, "Stages")]
    if not models:
        return blocks + [Paragraph("No model of any stage was evaluated.")]
    held_out = f"the {c.get('split')} split" + (f", {rows_text(c['rows'])}" if num(c.get("rows")) is not None else "")
    blocks.append(Paragraph(f"Every model of every stage on this stage's held-out rows ({held_out}); parameters "
                            f"counted from the saved weights (— where unknown, as for a model on the hub)."))
    apart = any(not m.get("comparable", True) for m in models)
    header = ["model", "stage", "parameters"] + names + (["not comparable"] if apart else [])
    table = []
    for m in models:
        values = m.get("metrics") if isinstance(m.get("metrics"), dict) else {}
        row = [m.get("model"), m.get("stage") or "—", parameters_text(m)] + [fmt(values.get(n)) for n in names]
        if apart:
            row.append(m.get("not_comparable") or "")
        table.append(row)
    numeric = range(2, 3 + len(names))
    blocks.append(Table.of(header, table, numeric=numeric))
    if apart:
        blocks.append(Paragraph("A model evaluated on other rows than this stage's is listed but not comparable "
                                "with the others (and left out of the chart)."))
    blocks.extend(Paragraph(d["text"], strong=True) for d in c.get("distillation") or []
                  if isinstance(d, dict) and isinstance(d.get("text"), str))
    if "stages.png" in charts:
        blocks.append(Chart("Every model per metric", "stages.png"))
    return blocks


def extraction_lines(s: dict, nonzero_only: bool = False) -> list[str]:
    """One line per answer extraction: in how many predictions (of each model) and
    references it found no answer. Metrics with the same counts share a line."""
    sides = [side for side in ("tuned", "base") if isinstance(dig(s, "details", side, "extraction"), dict)]
    names: list[str] = []
    for side in sides:
        names += [n for n in s["details"][side]["extraction"] if n not in names]
    rows = s.get("rows")
    of = f" of {count(rows)}" if num(rows) is not None else ""
    grouped: dict[tuple, list[str]] = {}
    for name in names:
        per_side = tuple((side, num(dig(s, "details", side, "extraction", name, "predictions_without_answer")))
                         for side in sides)
        refs = next((num(dig(s, "details", side, "extraction", name, "references_without_answer")) for side in sides
                     if num(dig(s, "details", side, "extraction", name, "references_without_answer")) is not None),
                    None)
        grouped.setdefault((per_side, refs), []).append(name)
    lines = []
    for (per_side, refs), metrics in grouped.items():
        if nonzero_only and not any(v for _, v in per_side) and not refs:
            continue
        preds = ", ".join(f"{count(v)}{of} {side} predictions" for side, v in per_side if v is not None)
        lines.append(f"extraction ({', '.join(metrics)}) found no answer in {preds or '—'} / "
                     f"{count(refs)}{of} references")
    return lines


def gates_section(r: Results) -> list[Block]:
    gates = r.summary["gates"]
    blocks: list[Block] = [Heading(2, "Gates")]
    if not gates:
        return blocks + [Paragraph("No gates.")]
    table = []
    for g in gates:
        value = g["value"]
        shown_value = signed(value) if g["improvement"] else fmt(value)
        threshold = num(g["threshold"])
        cond = f"{g['op']} {threshold:g}" if threshold is not None else f"{g['op']} {g['threshold']}"
        table.append(["✓" if g["passed"] else "✗", g["gate"], shown_value, cond, signed(g["margin"]),
                      g["reason"] or ""])
    return blocks + [
        Table.of(["", "gate", "value", "threshold", "margin", "note"], table, numeric=(2, 3, 4)),
        Paragraph("value: the tuned model's metric, or tuned − base for an improvement gate; "
                  "margin: how far the value is on the passing side of the threshold."),
    ]


def training_section(r: Results, charts: set[str]) -> list[Block]:
    log, train = r.run.log, r.run.train
    blocks: list[Block] = [Heading(2, "Training")]
    train_series, eval_series = series(log, "loss"), series(log, "eval_loss")
    if not isinstance(train, dict) and not train_series and not eval_series:
        return blocks + [Paragraph("No training record.")]
    train = train if isinstance(train, dict) else {}
    steps = train.get("steps") if train.get("steps") is not None else (
        step_text(max(s for s, _ in train_series + eval_series)) if train_series or eval_series else None)
    final_eval = train.get("eval_loss") if num(train.get("eval_loss")) is not None else (
        eval_series[-1][1] if eval_series else None)
    pairs = [("steps", "—" if steps is None else str(steps))]
    # train.json's train_loss is the last logged loss too (ftspec.runtime.training.job), not an
    # average: the mean is computed here, from the logged losses, and says what it averages.
    if train_series:
        last_step, last = train_series[-1]
        pairs.append(("final train loss", f"{last:.4f} (last logged, step {step_text(last_step)})"))
        pairs.append(("mean train loss", mean_loss_text(train_series)))
    elif num(train.get("train_loss")) is not None:
        pairs.append(("final train loss", f"{train['train_loss']:.4f} (last logged; the training log is missing)"))
    else:
        pairs.append(("final train loss", "— (none logged)"))
    pairs.append(("final validation loss", fmt(final_eval, 4) if final_eval is not None else "— (no validation loss)"))
    if eval_series:
        low_step, low = min(eval_series, key=lambda p: p[1])
        pairs.append(("lowest validation loss", f"{low:.4f} at step {step_text(low_step)}"))
    if train.get("stopped_early"):
        pairs.append(("stopped early", "yes"))
    if train.get("resumed_from"):
        pairs.append(("resumed from", str(train["resumed_from"])))
    blocks.append(Fields(tuple(pairs)))
    if "loss.png" in charts:
        blocks.append(Chart("Training and validation loss", "loss.png"))
    return blocks


def rewards_section(r: Results, charts: set[str]) -> list[Block]:
    """A GRPO run's rewards: the reward hacking check, each reward's first and last logged values,
    the chart per step, and the completions sampled last. Nothing for any other run."""
    g = r.grpo
    if g is None:
        return []
    blocks: list[Block] = [Heading(2, "Rewards")]
    if g.check.warning:
        blocks.append(Alert(g.check.warning))
    weights = " + ".join(f"{x.weight:g} × {x.name}" for x in g.rewards)
    blocks.append(Paragraph(f"GRPO maximises the weighted sum of its rewards ({weights}); each is logged per step as "
                            "its mean over that step's completions."))
    rows = []
    for x in g.rewards + [None]:
        name, t = (x.name, g.trends.get(x.name)) if x else ("reward (weighted sum)", g.trends.get("reward"))
        what = ("the rewards, weighted" if x is None
                else f"metric {x.metric}" if x.kind == "metric" else f"python {x.source}")
        if t is None:
            rows.append([name, what, "—", "—", "— (not logged)", ""])
            continue
        rows.append([name, what, f"{fmt(t['first'])} (step {step_text(t['first_step'])})",
                     f"{fmt(t['last'])} (step {step_text(t['last_step'])})",
                     f"{fmt(t['early'])} → {fmt(t['late'])} ({signed(t['late'] - t['early'])})",
                     "yes" if t["rose"] else "no"])
    blocks.append(Table.of(["reward", "scored by", "first logged", "last logged",
                            "first → last quarter (mean)", "clearly rose"], rows, numeric=(2, 3, 4)))
    blocks.append(Paragraph(g.check.note))
    if "rewards.png" in charts:
        blocks.append(Chart("Training rewards per step", "rewards.png"))
    if not g.samples:
        return blocks + [Paragraph("No sampled completions (model/completions.jsonl is missing or empty).")]
    blocks.append(Heading(3, f"Sampled completions, step {step_text(g.sample_step)}"))
    blocks.append(Paragraph(f"{len(g.samples)} of the {g.sampled} completions sampled at step "
                            f"{step_text(g.sample_step)}: those with the highest and the lowest weighted reward."))
    for x in g.samples:
        scores = " · ".join(f"{n} {fmt(v)}" for n, v in x["rewards"].items())
        pairs = [("prompt", clip(x["prompt"], 400, keep_end=True)), ("completion", clip(x["completion"], 400))]
        if x["reference"] is not None:
            pairs.append(("reference", clip(x["reference"], 240)))
        pairs.append(("rewards", f"{scores} (weighted sum {fmt(x['total'])})"))
        blocks += [Heading(4, f"completion {x['number']} of {g.sampled}"), Fields(tuple(pairs))]
    return blocks


def mean_loss_text(logged: list[tuple[float, float]]) -> str:
    """The mean of the logged training losses (each the trainer's average over its logging
    interval), and which ones: "1.4500 (mean of the 10 logged losses, steps 10–100)"."""
    mean = sum(v for _, v in logged) / len(logged)
    if len(logged) == 1:
        return f"{mean:.4f} (the one logged loss, step {step_text(logged[0][0])})"
    return (f"{mean:.4f} (mean of the {len(logged)} logged losses, "
            f"steps {step_text(logged[0][0])}–{step_text(logged[-1][0])})")


def data_section(r: Results) -> list[Block]:
    stats = r.run.stats
    blocks: list[Block] = [Heading(2, "Data")]
    splits = dig(stats, "splits")
    if not isinstance(splits, dict) or not splits:
        blocks.append(Paragraph("No data statistics."))
    else:
        order = [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)
        table = []
        for s in order:
            st = splits[s] if isinstance(splits[s], dict) else {}
            tok = st.get("tokens") if isinstance(st.get("tokens"), dict) else {}
            table.append([s, count(st.get("rows")), count(tok.get("p50")), count(tok.get("p90")), count(tok.get("p99")),
                          count(tok.get("max")), fmt(tok.get("mean"), 1),
                          f"{pct(st.get('truncation_rate'))} ({rows_text(st.get('truncated_rows'))})",
                          pct(st.get("loss_token_fraction"))])
        blocks.append(Table.of(["split", "rows", "tokens p50", "p90", "p99", "max", "mean", "truncated",
                                "loss-token share"], table))
    blocks.extend(source_data_blocks(stats))
    skipped = num(dig(stats, "skipped_rows"))
    if skipped:
        blocks.append(Paragraph(f"Skipped rows: {int(skipped)}."))
        examples = dig(stats, "skipped_examples") or []
        if isinstance(examples, list) and examples:
            blocks.append(Fields(tuple((f"skipped {i + 1}", clip(x, 240)) for i, x in enumerate(examples[:EXAMPLES]))))
    elif isinstance(stats, dict):
        blocks.append(Paragraph("Skipped rows: 0."))
    return blocks


def classification_section(r: Results, charts: set[str]) -> list[Block]:
    details = r.summary["details"]
    per_label = {side: dig(details, side, "classification", "per_label") for side in ("base", "tuned")}
    per_label = {k: v for k, v in per_label.items() if isinstance(v, dict) and v}
    confusions = {side: confusion(details[side]) for side in ("tuned", "base")}
    if not per_label and not any(confusions.values()):
        return []
    blocks: list[Block] = [Heading(2, "Classification")]
    if per_label:
        labels: list[str] = []
        for side in ("tuned", "base"):
            for label in dig(details, side, "classification", "labels") or list(per_label.get(side, {})):
                if str(label) not in labels:
                    labels.append(str(label))
        sides = [s for s in ("base", "tuned") if s in per_label]
        header = ["label", "support"] + [f"{s} {k}" for s in sides for k in ("precision", "recall", "F1")]
        table = []
        for label in labels:
            support = next((dig(per_label, s, label, "support") for s in ("tuned", "base")
                            if dig(per_label, s, label, "support") is not None), None)
            row = [label, count(support)]
            for s in sides:
                row += [fmt(dig(per_label, s, label, k)) for k in ("precision", "recall", "f1")]
            table.append(row)
        blocks += [Heading(3, "Per label"), Table.of(header, table)]
    for side in ("tuned", "base"):
        cm = confusions[side]
        if cm is None:
            continue
        row_labels, columns, matrix = cm
        blocks += [Heading(3, f"Confusion matrix, {side} model (rows: reference, columns: predicted)"),
                   Table.of(["reference ↓ predicted →"] + columns,
                            [[label] + [count(v) for v in m] for label, m in zip(row_labels, matrix)])]
        if f"confusion-{side}.png" in charts:
            blocks.append(Chart(f"Confusion matrix of the {side} model", f"confusion-{side}.png"))
    return blocks


def examples_section(r: Results) -> list[Block]:
    rows = r.rows
    metric = example_metric(rows, r.names, r.headline)
    blocks: list[Block] = [Heading(2, "Examples")]
    if not rows:
        return blocks + [Paragraph("No predictions.")]
    if metric is None:
        return blocks + [Paragraph("No per-example scores to rank the examples by.")]
    if any(row["base"] is not None and row["tuned"] is not None for row in rows):
        improved, regressed = movers(rows, metric)
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        blocks.append(Paragraph(f"Ranked by the per-example {metric} ({better} is better), tuned − base; "
                                f"up to {EXAMPLES} of each."))
        blocks.append(Heading(3, f"Improved most ({len(improved)})"))
        if not improved:
            blocks.append(Paragraph("No example improved."))
        for d, row in improved:
            blocks += _example(d, row, metric)
        blocks.append(Heading(3, f"Regressed most ({len(regressed)})"))
        if not regressed:
            blocks.append(Paragraph("No example regressed."))
        for d, row in regressed:
            blocks += _example(d, row, metric)
        return blocks
    worst = weakest(rows, metric)
    blocks.append(Paragraph(f"No baseline to compare with; the tuned model's lowest-scoring examples by {metric}, "
                            f"up to {EXAMPLES}."))
    if not worst:
        blocks.append(Paragraph("Every example has the best score."))
    for _, row in worst:
        blocks += _example(None, row, metric)
    return blocks


def _example(delta: float | None, row: dict, metric: str) -> list[Block]:
    b = num(dig(row, "base", "scores", metric)) if row["base"] else None
    t = num(dig(row, "tuned", "scores", metric)) if row["tuned"] else None
    if delta is not None:
        head = f"example {row['index']}: {metric} {fmt(b)} → {fmt(t)} ({delta:+.3f})"
    else:
        head = f"example {row['index']}: {metric} {fmt(t)}"
    pairs = [("input", clip(row["input"], 400, keep_end=True)), ("reference", clip(row["reference"], 240))]
    if row["base"] is not None:
        pairs.append(("base", clip(row["base"]["prediction"], 240)))
    if row["tuned"] is not None:
        pairs.append(("tuned", clip(row["tuned"]["prediction"], 240)))
    return [Heading(4, head), Fields(tuple(pairs))]
