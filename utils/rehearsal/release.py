"""The whole E-VQA and InfoSeek release in miniature, in the layouts its sources describe, and a copy of the
registry that points every entry at :class:`utils.rehearsal.server.Server` instead of the real hosts.

Contents (the demo world of ``assets/demo``: 40 made-up entities, their images and questions):
- E-VQA: ``test.csv`` (GCS), ``encyclopedic_kb_wiki.zip`` holding the JSON at its top (GCS; its sha256 published),
  the bare FAISS summary index (Drive), ``val_id2name.json`` (Drive, Dropbox mirror), iNat's ``val.tar.gz`` with
  ``val/<class>/<uuid>.jpg`` members (S3; its md5 published), GLD's ``train.csv`` (``id,url,landmark_id``) and one
  URL per image, the fine-tuned LLaVA as a zip with a top folder (Drive).
- InfoSeek: ``infoseek_test_filtered.csv`` (Drive, Dropbox mirror), ``infoseek_100k_wiki.zip`` holding
  ``infoseek_100k_wiki/wiki_100_dict_v4.json`` (Drive, Dropbox mirror), the index (Drive), the official
  ``infoseek_val.jsonl`` / ``infoseek_val_qtype.jsonl`` (GCS), and the OVEN query images, which the user places by
  hand (a ``manual`` entry).
- Both: the wiki-image CSVs zipped with a top folder (Drive) and one URL per wiki image, the reranker ``.pth``
  (Drive), every hub model (:mod:`utils.rehearsal.models`), and the retraining entries.
The copy of the registry differs from ``omgm/fetch/registry.yaml`` only where the rehearsal is not the real world:
URLs point at the server, published checksums and sizes are the tiny files', and the reranker's tiny sizes are one
more entry and setting (``reranker_model_name``).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import torch
import yaml

from omgm.fetch.registry import DEFAULT_REGISTRY
from utils.make_tiny_models import demo_corpus
from utils.rehearsal import models
from utils.rehearsal.server import Server, tarred, zipped

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "assets" / "demo"
DATASETS = ("evqa", "infoseek")
RERANKER_SIZES = "https://rehearsal.invalid/omgm/tiny_reranker.json"


def _csv(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def _rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _split(rows: list[dict]) -> bytes:
    return _csv(list(rows[0]), [list(r.values()) for r in rows])


def _query_image(dataset_name: str, image_id: str) -> Path | None:
    """The demo's query image of ``image_id`` (``.jpg`` or ``.JPEG``), None where the demo has none."""
    folder = {"inaturalist": "inat", "landmarks": "gld", "infoseek": "infoseek"}[dataset_name]
    found = sorted((DEMO / "images" / folder).glob(f"{image_id}.*"))
    return found[0] if found else None


class Builder:
    """Makes each artifact's bytes (by registry name) and what the server must serve beside them."""

    def __init__(self, work: Path, server: Server, questions: int | None) -> None:
        self.work, self.server = work, server
        self.release = server.release
        self.evqa_rows = _rows(DEMO / "test.csv")[:questions] if questions else _rows(DEMO / "test.csv")
        self.infoseek_rows = _rows(DEMO / "infoseek_test.csv")

    def image(self, dataset_name: str, image_id: str) -> bytes:
        return _query_image(dataset_name, image_id).read_bytes()

    def query_ids(self, dataset_name: str) -> list[str]:
        rows = self.infoseek_rows if dataset_name == "infoseek" else self.evqa_rows
        return sorted({i for r in rows if r["dataset_name"] == dataset_name
                       for i in r["dataset_image_ids"].split("|") if _query_image(dataset_name, i)})

    # ---- E-VQA
    def inat(self) -> tuple[bytes, bytes]:
        """``val_id2name.json`` and ``val.tar.gz`` (iNat 2021's layout: ``val/<class folder>/<uuid>.jpg``)."""
        id2name, members = {}, {}
        for n, i in enumerate(self.query_ids("inaturalist")):
            name = f"val/{n:05d}_Plantae_Rehearsal_{n}/{hashlib.md5(i.encode()).hexdigest()}.jpg"
            id2name[i], members[name] = name, self.image("inaturalist", i)
        members["val/09999_Animalia_Unreferenced/ffff.jpg"] = b"not referenced by the split"
        return json.dumps(id2name).encode(), tarred(members)

    def gld_metadata(self) -> bytes:
        rows = []
        for i in self.query_ids("landmarks"):
            url = f"https://upload.wikimedia.org/wikipedia/commons/rehearsal/{i}.jpg"
            self.release.files[self.server.path(url)] = self.image("landmarks", i)
            rows.append([i, self.server.url(url), 7])
        return _csv(["id", "url", "landmark_id"], rows)

    def wiki_image_csvs(self) -> bytes:
        """The 13 CSVs zipped under a top folder; each image's URL served by the server."""
        files = {}
        for p in sorted((DEMO / "wiki_image_csv").glob("*.csv")):
            rows = list(csv.reader(p.open(newline="", encoding="utf-8")))
            for r in rows[1:]:
                image = DEMO / "wiki_images" / r[2]
                if image.is_file():                  # the demo lists a few images that are gone: the server 404s
                    self.release.files[self.server.path(r[1])] = image.read_bytes()
                r[1] = self.server.url(r[1])
            files[f"wiki_image_csv/{p.name}"] = _csv(rows[0], rows[1:])
        return zipped(files)

    def index(self, kb_json: Path) -> bytes:
        """The summary index as the authors released it: a bare FAISS file, built here by ``omgm index build`` with
        the tiny EVA-CLIP loaded by its hub id from the server, exactly as step 1 loads it."""
        import faiss

        build = self.work / "index_build"
        if not (build / "summary.index").is_file():
            env = {**os.environ, **self.server.env(), "HF_HUB_CACHE": str(build / "hub_cache"), "OMGM_CONFIG": ""}
            for args in (["omgm.data.kb_import", "--kb_json", str(kb_json), "--out", str(build / "kb.sqlite")],
                         ["omgm", "index", "build", "--knowledge_base", str(build / "kb.sqlite"), "--faiss_index",
                          str(build / "summary.index"), "--summarizer", "lead", "--summary_file",
                          str(build / "summaries.jsonl"), "--retriever_vit", "eva-clip", "--retriever_path",
                          models.EVA_CLIP_8B, "--trust_remote_code", "--device", "cpu", "--precision", "fp32"]):
                proc = subprocess.run([sys.executable, "-m", *args, "--no_progress"], env=env, capture_output=True,
                                      text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"building the release's index: {' '.join(args[:3])} failed: "
                                     f"{proc.stderr.strip()[-600:]}")
        return faiss.serialize_index(faiss.read_index(str(build / "summary.index"))).tobytes()

    # ---- InfoSeek
    def infoseek_references(self) -> tuple[bytes, bytes]:
        """The official references of the split's questions, half unseen-question, half unseen-entity."""
        val, qtype = [], []
        for n, r in enumerate(self.infoseek_rows):
            split = "val_unseen_question" if n % 2 == 0 else "val_unseen_entity"
            val.append({"data_id": r["data_id"], "image_id": r["dataset_image_ids"], "question": r["question"],
                        "answer": [r["answer"]], "answer_eng": [r["answer"]], "data_split": split,
                        "answer_eval": [r["answer"]]})
            qtype.append({"data_id": r["data_id"], "question_type": "STRING"})
        return ("".join(json.dumps(v) + "\n" for v in val).encode(),
                "".join(json.dumps(q) + "\n" for q in qtype).encode())


def contents(b: Builder, hub: dict[str, Path]) -> dict[str, bytes]:
    """Every served artifact's bytes, by registry name."""
    kb = (DEMO / "kb.json").read_bytes()
    pth, sizes = models.reranker_files(b.work / "reranker", hub["bert-base-uncased"])
    id2name, val_tar = b.inat()
    val_jsonl, qtype_jsonl = b.infoseek_references()
    index = b.index(DEMO / "kb.json")
    llava = {f"llava-v1.5-7b-evqa/{f.name}": f.read_bytes() for f in models.llava_original().iterdir()}
    lavis = torch.load(pth, weights_only=True)
    buf, vit = io.BytesIO(), io.BytesIO()                   # LAVIS' own files: {"model": ...} and the bare ViT
    torch.save({"model": {k: v for k, v in lavis.items() if k != "prompt_tokens"}}, buf)
    torch.save({k: v for k, v in lavis.items() if k.startswith("visual_encoder.")}, vit)
    return {
        "evqa-test-csv": _split(b.evqa_rows), "evqa-kb": zipped({"encyclopedic_kb_wiki.json": kb}),
        "evqa-index": index, "inat-val-id2name": id2name, "inat-val-images": val_tar, "gld-metadata": b.gld_metadata(),
        "llava-ft-evqa": zipped(llava),
        "infoseek-test-csv": _split(b.infoseek_rows),
        "infoseek-kb": zipped({"infoseek_100k_wiki/wiki_100_dict_v4.json": kb}), "infoseek-index": index,
        "infoseek-val-references": val_jsonl, "infoseek-val-qtype": qtype_jsonl,
        "wiki-image-csvs": b.wiki_image_csvs(), "reranker": pth.read_bytes(), "rehearsal-reranker-sizes": sizes.read_bytes(),
        "evqa-train-csv": (DEMO / "train.csv").read_bytes(), "evqa-val-csv": (DEMO / "train.csv").read_bytes(),
        "inat-train-id2name": b"{}", "hard-negatives": zipped({"hard_negatives.json": b"{}"}),
        "infoseek-train-csv": (DEMO / "infoseek_test.csv").read_bytes(),
        "lavis-blip2": buf.getvalue(), "lavis-eva-vit-g": vit.getvalue(),
    }


def registry_copy(data: dict, served: dict[str, bytes], server: Server) -> dict:
    """``registry.yaml`` with its E-VQA and InfoSeek entries pointed at ``server`` and filled from ``served``."""
    release = server.release
    data["datasets"] = {k: v for k, v in data["datasets"].items() if k in DATASETS}
    data["artifacts"] = [a for a in data["artifacts"] if set(a["datasets"]) & set(DATASETS)]
    data["artifacts"].append({"name": "rehearsal-reranker-sizes", "datasets": list(DATASETS), "dest":
                              "models/tiny_reranker.json", "rows": ["retrieval", "llava_ft", "internvl", "vqa"],
                              "source": {"url": RERANKER_SIZES}})
    for ds in data["datasets"].values():
        ds["settings"].update({"reranker_model_name": "models/tiny_reranker.json", "num_workers": 0})
    for a in data["artifacts"]:
        body = served.get(a["name"])
        for key in ("download_size", "unpacked_size"):
            a.pop(key, None)
        if body is None:
            continue
        for source in [a["source"], *a.get("mirrors", [])]:
            if "gdrive" in source:
                release.drive[source["gdrive"]] = body
            elif "url" in source:
                target = server.path(source["url"])
                if target.startswith("/www.dropbox.com/"):
                    target = "/dl.dropboxusercontent.com/" + target.split("/", 2)[2]
                release.files[target] = body
                source["url"] = server.url(source["url"])
        a["download_size"] = len(body)
        if "md5" in a.get("published", {}):
            a["published"] = {"md5": hashlib.md5(body).hexdigest()}
        elif "sha256" in a.get("published", {}):
            with zipfile.ZipFile(io.BytesIO(body)) as zf:
                inner = zf.read(zf.namelist()[0])
            a["published"]["sha256"] = hashlib.sha256(inner).hexdigest()
    return data


def build(work: Path, server: Server, questions: int | None = None) -> Path:
    """Make the release under ``work``, load it into ``server`` and write the registry copy; returns its path."""
    work.mkdir(parents=True, exist_ok=True)
    hub = _hub_folders(work / "hub") if (work / "hub" / "bert-base-uncased").is_dir() else \
        models.hub_repositories(work / "hub", demo_corpus(DEMO))
    server.release.hub.update(hub)
    served = contents(Builder(work, server, questions), hub)
    data = registry_copy(yaml.safe_load(DEFAULT_REGISTRY.read_text(encoding="utf-8")), served, server)
    path = work / "registry.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, width=200), encoding="utf-8")
    return path


def _hub_folders(hub: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(hub)): p.parent for p in sorted(hub.rglob("config.json"))
            if not p.parent.name.startswith(".")}


def place_manual(root: Path) -> int:
    """What a user downloads by hand: InfoSeek's OVEN query images, as ``infoseek/images/{image_id}.jpg``."""
    dest = root / "infoseek" / "images"
    dest.mkdir(parents=True, exist_ok=True)
    n = 0
    for r in _rows(DEMO / "infoseek_test.csv"):
        for i in r["dataset_image_ids"].split("|"):
            found = _query_image("infoseek", i)
            if found:
                (dest / f"{i}{found.suffix}").write_bytes(found.read_bytes())
                n += 1
    return n

