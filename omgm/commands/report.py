"""An HTML report to look at results: ``python -m omgm report --step1 s1.json [--step2 s2.json] [--answers a.json]
--sample_file test.csv --out report.html``.

Per sample: the query image and question, the gold entity and answer, the top-k entities after step 1 and after
step 2 with their first wiki image and scores, where the gold entity moved, the chosen section and the answer
against the references. A header with recall@k (table and PNG plot) and accuracy; buttons filter hits/misses.
Images are relative links (the report opens from disk next to the data) or, with ``--embed``, thumbnails
inside the file.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import os
from pathlib import Path
from urllib.parse import quote

from omgm.config import int_list, parse_with_config, positive_int, setup_logging
from omgm.data.images import load_image
from omgm.data.results import check_answers_made_for, check_made_for, ranking, read_retrieval
from omgm.data.samples import ImageDirs, MissingImageError, read_samples
from omgm.data.wiki_images import WikiSource
from omgm.errors import OmgmError, cli_errors
from omgm.help import command_parser
from omgm.io import atomic_write, check_writable
from omgm.metrics.evaluate import evaluate, read_answers_file
from omgm.metrics.plot import recall_plot
from omgm.metrics.recall import cutoffs_within
from omgm.settings import add_flags, add_kb_flag, from_values

CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}h1{margin-bottom:.2em}
table.sum{border-collapse:collapse}table.sum td,table.sum th{border:1px solid #ccc;padding:.2em .6em;text-align:right}
.card{border:1px solid #ddd;border-radius:8px;padding:.8em;margin:.8em 0;display:flex;gap:1em}
.card.hide{display:none}.q img{width:160px;height:160px;object-fit:cover;border-radius:6px}
.col{flex:1;min-width:220px}.ent{display:flex;align-items:center;gap:.4em;margin:.15em 0;font-size:.9em}
.ent img,.ent .noimg{width:40px;height:40px;object-fit:cover;border-radius:4px;background:#eee;display:inline-block}
.gold{background:#e4f7e4;font-weight:600}.bad{color:#b00}.good{color:#070}.small{font-size:.8em;color:#666}
button{margin:.1em;padding:.3em .7em}.sec{font-size:.85em;background:#f7f7f7;padding:.4em;border-radius:4px}"""
JS = """function f(k){document.querySelectorAll('.card').forEach(c=>{c.classList.toggle('hide',k!=='all'&&c.dataset[k]!=='1')});
document.getElementById('shown').textContent=document.querySelectorAll('.card:not(.hide)').length}"""
FILTERS = [("all", "all"), ("s1hit", "step 1 top-1 hit"), ("s2hit", "step 2 top-1 hit"), ("s2miss", "step 2 top-1 miss"),
           ("improved", "improved by step 2"), ("worsened", "worsened by step 2"), ("correct", "correct answer"),
           ("wrong", "wrong answer")]


class Images:
    """``src`` for an image: a path relative to the report, or an embedded thumbnail."""

    def __init__(self, out_dir: Path, embed: bool, size: int = 160) -> None:
        self.out_dir, self.embed, self.size, self.cache = out_dir, embed, size, {}

    def src(self, path: Path | None) -> str | None:
        if path is None:
            return None
        if not self.embed:       # a relative link, URL-encoded (a '#' or '?' in a folder name would break it)
            return quote(Path(os.path.relpath(Path(path).resolve(), self.out_dir.resolve())).as_posix())
        if path not in self.cache:
            try:
                im = load_image(path)
            except OmgmError:
                return None
            im.thumbnail((self.size, self.size))
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=80)
            self.cache[path] = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        return self.cache[path]


def _img(src: str | None, cls: str = "") -> str:
    return f'<img src="{html.escape(src)}" class="{cls}" loading="lazy">' if src else '<span class="noimg"></span>'


def _rank(urls: list[str], gold: str) -> int | None:
    return urls.index(gold) + 1 if gold in urls else None


def _entities(entry: dict, gold: str, k: int, wiki, images: Images, extra: str = "") -> str:
    rows = []
    for i, (e, s) in enumerate(zip(entry["retrieved_entities"][:k], entry["retrieval_similarities"][:k])):
        thumb = images.src(wiki.first(e.get("title", ""))) if wiki else None
        s2 = entry["step2_scores"][i] if extra and "step2_scores" in entry else None
        more = f" · s2 {s2:.3f}" if s2 is not None and abs(s2 - s) > 1e-9 else ""   # at alpha 0 they are one score
        rows.append(f'<div class="ent{" gold" if e["url"] == gold else ""}">{_img(thumb)}<span>{i + 1}. '
                    f'{html.escape(e.get("title") or e["url"])} <span class="small">{s:.3f}{more}</span></span></div>')
    return "".join(rows)


def _answer_ok(rec: dict) -> bool:
    from omgm.metrics import infoseek
    from omgm.metrics.evqa import EvaluationError, score_answer

    try:
        if rec.get("question_type") == "infoseek":
            return infoseek.matches_alias(rec.get("prediction"), rec["gt_answer"].split("|"))
        return score_answer(rec["question"], rec["gt_answer"], rec.get("prediction") or "", rec["question_type"])[0]
    except EvaluationError:
        return False


def card(s, s1: dict | None, s2: dict | None, ans: dict | None, *, k: int, dirs: ImageDirs, wiki, images: Images) -> str:
    try:
        qsrc = images.src(dirs.resolve(s))
    except MissingImageError:
        qsrc = None
    r1 = _rank([e["url"] for e in s1["retrieved_entities"]], s.wikipedia_url) if s1 else None
    r2 = _rank([e["url"] for e in s2["retrieved_entities"]], s.wikipedia_url) if s2 else None
    ok = _answer_ok(ans) if ans else None
    flags = {"s1hit": r1 == 1, "s2hit": r2 == 1, "s2miss": s2 is not None and r2 != 1,
             "improved": bool(r2 and (r1 is None or r2 < r1)), "worsened": bool(r1 and (r2 is None or r2 > r1)),
             "correct": ok is True, "wrong": ok is False}
    data = " ".join(f'data-{k_}="{int(v)}"' for k_, v in flags.items())
    moved = f"gold rank: step 1 {r1 or '–'} → step 2 {r2 or '–'}" if s2 else f"gold rank: step 1 {r1 or '–'}"
    cols = [f'<div class="q">{_img(qsrc)}<div><b>{html.escape(s.sample_id)}</b></div>'
            f'<div>{html.escape(s.question)}</div><div class="small">gold: {html.escape(s.wikipedia_title or s.wikipedia_url)}'
            f' — answer: {html.escape(s.answer)}</div><div class="small">{moved}</div></div>']
    if s1:
        cols.append(f'<div class="col"><b>step 1</b>{_entities(s1, s.wikipedia_url, k, wiki, images)}</div>')
    if s2:
        cols.append(f'<div class="col"><b>step 2</b>{_entities(s2, s.wikipedia_url, k, wiki, images, "s2")}</div>')
    if ans:
        verdict = '<span class="good">correct (EM)</span>' if ok else '<span class="bad">wrong (EM)</span>'
        cols.append(f'<div class="col"><b>answer</b> {verdict}<div>{html.escape(ans.get("prediction") or "∅")}</div>'
                    f'<div class="sec">section: {html.escape(str(ans.get("top1_section_title")))} of '
                    f'{html.escape(str(ans.get("top1_entity_title")))}'
                    f'{" (gold section)" if ans.get("section_hit") else ""}</div></div>')
    return f'<div class="card" {data}>{"".join(cols)}</div>'


def build_parser() -> argparse.ArgumentParser:
    p = command_parser("report", __doc__)
    for flag in ("--sample_file", "--step1", "--step2", "--answers"):
        p.add_argument(flag, default=None)
    add_kb_flag(p, help="the KB (for the wiki images of the entities shown)")
    add_flags(p, WikiSource, ImageDirs)
    p.add_argument("--out", default="report.html")
    p.add_argument("--top_k", type=positive_int, default=5, help="entities shown per step")
    p.add_argument("--top_ks", type=int_list, default=[1, 2, 3, 5, 10, 20])
    p.add_argument("--limit", type=positive_int, default=None, help="samples shown (all by default)")
    p.add_argument("--embed", action="store_true", help="embed thumbnails instead of linking the images")
    return p


def provenance(files: dict[str, tuple[str, dict]]) -> str:
    """Which files, weights, models and prompt style produced the page."""
    keys = ("retriever", "index_kind", "composed_query", "alpha", "query_norm", "reranker", "generator",
            "prompt_style", "step2_beta", "section_reranker", "context_cut")
    rows = []
    for what, (path, meta) in files.items():
        facts = " · ".join(f"{k}: {html.escape(str(meta[k]))}" for k in keys if meta.get(k) not in (None, ""))
        rows.append(f"<li><b>{what}</b>: {html.escape(path)}{' — ' + facts if facts else ''}</li>")
    return f"<ul class='small'>{''.join(rows)}</ul>"


def _recall_table(results: dict[str, dict], gold: dict, ks: list[int], out: Path) -> tuple[str, str]:
    curves, rows = {}, []
    ks, _ = cutoffs_within(ks, {(name, sid): e for name, res in results.items() for sid, e in res.items()})
    ks = ks or [1]
    for name, res in results.items():
        if res:
            rep = evaluate(gold, ranking(res), ks)
            curves[name] = rep.recall
            rows.append(f"<tr><th>{name}</th>" + "".join(f"<td>{v:.2f}</td>" for v in rep.recall.values()) + "</tr>")
    plot = recall_plot(curves, out.with_name(out.stem + "_files") / "recall.png") if curves else None
    head = ("<table class='sum'><tr><th></th>" + "".join(f"<th>R@{k}</th>" for k in ks) + "</tr>" + "".join(rows)
            + "</table>") if rows else ""
    return head, f'<p><img src="{quote(plot.relative_to(out.parent).as_posix())}"></p>' if plot else ""


def _wiki(a):
    if not (a.wiki_img_path_prefix and (a.wiki_img_csv_dir or a.knowledge_base)):
        return None
    from omgm.data.kb import open_kb

    return from_values(WikiSource, a).open(open_kb(a.knowledge_base) if a.knowledge_base else None)


@cli_errors
def main(argv: list[str] | None = None) -> int:
    setup_logging()
    a = parse_with_config(build_parser(), argv)
    if not a.sample_file or not (a.step1 or a.step2 or a.answers):
        raise OmgmError("give --sample_file and at least one of --step1, --step2, --answers")
    samples, out = read_samples(a.sample_file), Path(a.out)
    check_writable(out, out.with_name(out.stem + "_files") / "recall.png", inputs=[a.sample_file, a.step1, a.step2,
                                                                                   a.answers])
    rf1, rf2 = (read_retrieval(p) if p else None for p in (a.step1, a.step2))
    for rf in (rf1, rf2):
        if rf is not None:
            check_made_for(rf, samples, a.sample_file)
    s1, s2 = (rf.results if rf else {} for rf in (rf1, rf2))
    records, ans_meta = read_answers_file(a.answers) if a.answers else ([], {})
    if a.answers:
        check_answers_made_for(a.answers, ans_meta, records, samples, sample_file=a.sample_file)
    answers = {r["data_id"]: r for r in records}
    head, plot_html = _recall_table({"step 1": s1, "step 2": s2}, {s.sample_id: s.wikipedia_url for s in samples},
                                    a.top_ks, out)
    files = {k: (p, meta) for k, p, meta in (("step 1", a.step1, rf1.meta if rf1 else {}),
             ("step 2", a.step2, rf2.meta if rf2 else {}), ("answers", a.answers, ans_meta)) if p}
    acc = ""
    if answers:
        oks = [_answer_ok(r) for r in answers.values()]
        acc = f"<p>answer accuracy (exact match only): <b>{100.0 * sum(oks) / len(oks):.2f}</b> over {len(oks)}</p>"
    images, dirs, wiki = Images(out.parent, a.embed), from_values(ImageDirs, a), _wiki(a)
    cards = [card(s, s1.get(s.sample_id), s2.get(s.sample_id), answers.get(s.sample_id), k=a.top_k, dirs=dirs,
                  wiki=wiki, images=images)
             for s in samples[: a.limit]]
    buttons = "".join(f'<button onclick="f(\'{k}\')">{label}</button>' for k, label in FILTERS)
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>omgm report</title><style>{CSS}</style>"
           f"<script>{JS}</script></head><body><h1>omgm report</h1><p class='small'>{html.escape(a.sample_file)} · "
           f"{len(samples)} samples</p>{provenance(files)}{head}{plot_html}{acc}<p>{buttons} <span id='shown'>"
           f"{len(cards)}</span> shown</p>" + "".join(cards) + "</body></html>")
    with atomic_write(out) as tmp:
        tmp.write_text(doc, encoding="utf-8")
    print(f"wrote {out} ({len(cards)} samples)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
