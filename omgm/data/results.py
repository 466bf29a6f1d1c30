"""The JSON files the stages exchange: schemas, validation, atomic writes.

Retrieval results (step 1 and step 2) are written as::

    {
      "format": "omgm.retrieval", "version": 1, "stage": "step1" | "step2",
      "meta": {...how it was produced...},
      "results": {
        "<sample_id>": {
          "retrieved_entities": [{"url": str, "title": str}, ...],      # best first
          "retrieval_similarities": [float, ...],                       # same length; step-1 raw inner products
          "sec_sim": [[float, ...], ...]                                # step 2 only: per-section scores
        }, ...
      }
    }

``results`` is exactly the authors' file format, so :func:`read_retrieval` also accepts their bare files
(the ``results`` object at top level) and :func:`write_retrieval` can write one with ``bare=True``.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from omgm.errors import OmgmError
from omgm.io import write_json_atomic  # noqa: F401 - re-exported for the stages

RETRIEVAL_FORMAT = "omgm.retrieval"
RETRIEVAL_VERSION = 1


def ranking(results: Mapping[str, Mapping]) -> dict[str, list[str]]:
    """The one form a ranking travels in to :func:`omgm.metrics.evaluate.evaluate`: sample id -> ranked URLs, made
    from step-1/2 results (``{sample_id: {"retrieved_entities": [{"url"...}], ...}}``), in their order."""
    return {sid: [e["url"] for e in entry["retrieved_entities"]] for sid, entry in results.items()}


class ResultFileError(OmgmError, ValueError):
    """A result file that does not follow its schema; the message names the file and the sample."""


def read_json(path: str | Path) -> Any:
    """A JSON file, with one-line errors for a missing, non-UTF-8 or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ResultFileError(f"file not found: {path}")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ResultFileError(f"{path}: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ResultFileError(f"{path}: not UTF-8 text (byte {exc.start}): JSON files must be UTF-8") from None
    except RecursionError:
        raise ResultFileError(f"{path}: nested too deeply to be a result file (damaged or hostile JSON)") from None


@dataclass
class RetrievalFile:
    """A step-1/2 result file: ``results`` in the published form, the stage, and omgm's meta (empty for the
    authors' bare files)."""
    results: dict[str, dict]
    stage: str = "step1"
    meta: dict = field(default_factory=dict)
    path: Path | None = None

    def urls(self, sample_id: str) -> list[str]:
        """The ranked URLs of one sample."""
        return [e["url"] for e in self.results[sample_id]["retrieved_entities"]]

    def ranking(self) -> dict[str, list[str]]:
        """Every sample's ranked URLs (what :func:`omgm.metrics.evaluate.evaluate` takes)."""
        return ranking(self.results)


def _check_entry(path: Path | str, sid: str, entry: Any) -> None:
    where = f"{path}, sample {sid!r}"
    if not isinstance(entry, dict):
        raise ResultFileError(f"{where}: expected an object, got {type(entry).__name__}")
    ents, sims = entry.get("retrieved_entities"), entry.get("retrieval_similarities")
    if not isinstance(ents, list) or not isinstance(sims, list):
        raise ResultFileError(f"{where}: needs lists 'retrieved_entities' and 'retrieval_similarities'")
    if len(ents) != len(sims):
        raise ResultFileError(f"{where}: {len(ents)} entities but {len(sims)} similarities")
    for j, e in enumerate(ents):
        if not isinstance(e, dict) or not isinstance(e.get("url"), str):
            raise ResultFileError(f"{where}: retrieved_entities[{j}] has no 'url' string")
    for j, s in enumerate(sims):
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s):
            raise ResultFileError(f"{where}: retrieval_similarities[{j}] is not a finite number ({s!r})")
    if "sec_sim" in entry:
        sec = entry["sec_sim"]
        if not isinstance(sec, list) or len(sec) != len(ents) or not all(isinstance(x, list) for x in sec):
            raise ResultFileError(f"{where}: 'sec_sim' must be one list of section scores per entity")
        for j, scores in enumerate(sec):
            bad = [s for s in scores if not isinstance(s, (int, float)) or isinstance(s, bool) or not math.isfinite(s)]
            if bad:
                raise ResultFileError(f"{where}: sec_sim[{j}] holds {bad[0]!r}, not a finite number")


def read_retrieval(path: str | Path) -> RetrievalFile:
    """Read a step-1/step-2 file (ours or the authors' bare form), validating every entry."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise ResultFileError(f"{path}: expected a JSON object, got {type(data).__name__}")
    if data.get("format") == RETRIEVAL_FORMAT:
        version = data.get("version", RETRIEVAL_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ResultFileError(f"{path}: 'version' must be a whole number, got {version!r}")
        if version > RETRIEVAL_VERSION:
            raise ResultFileError(f"{path}: format version {version} is newer than this omgm "
                                  f"understands ({RETRIEVAL_VERSION}); upgrade omgm")
        results, stage, meta = data.get("results"), data.get("stage", "step1"), data.get("meta", {})
        if not isinstance(results, dict):
            raise ResultFileError(f"{path}: 'results' must be an object keyed by sample id")
        if not isinstance(meta, dict) or stage not in ("step1", "step2"):
            raise ResultFileError(f"{path}: 'meta' must be an object and 'stage' step1 or step2 (got "
                                  f"{type(meta).__name__} and {str(stage)[:20]!r})")
    elif "format" in data:
        raise ResultFileError(f"{path}: format {data['format']!r} is not a retrieval result file")
    else:  # the authors' bare file
        results, meta = data, {"note": "bare file without omgm header"}
        stage = "step2" if any(isinstance(v, dict) and "sec_sim" in v for v in data.values()) else "step1"
    for sid, entry in results.items():
        _check_entry(path, sid, entry)
    return RetrievalFile(results=results, stage=stage, meta=meta, path=path)


def write_retrieval(path: str | Path, results: dict[str, dict], stage: str, meta: dict | None = None,
                    *, bare: bool = False) -> Path:
    """Validate and atomically write a retrieval file (``bare=True``: the authors' headerless form)."""
    for sid, entry in results.items():
        _check_entry(path, sid, entry)
    if bare:
        return write_json_atomic(path, results)
    return write_json_atomic(path, {"format": RETRIEVAL_FORMAT, "version": RETRIEVAL_VERSION, "stage": stage,
                                    "meta": meta or {}, "results": results})


def _check_bare(rf: RetrievalFile, samples: list, sample_file: str | Path, kb) -> None:
    ids = {s.sample_id for s in samples}
    extra, absent = set(rf.results) - ids, ids - set(rf.results)
    if extra or absent:
        raise ResultFileError(f"{rf.path} (no omgm header) was not made for {sample_file}: {len(extra)} of its "
                              f"{len(rf.results)} ids are not samples of it (e.g. {sorted(extra)[:2]}) and "
                              f"{len(absent)} of its {len(ids)} samples have no result (e.g. {sorted(absent)[:2]})")
    if kb is not None:
        unknown = {e["url"] for v in rf.results.values() for e in v["retrieved_entities"] if e["url"] not in kb}
        if unknown:
            raise ResultFileError(f"{rf.path} (no omgm header) ranks {len(unknown)} entities that are not in the "
                                  f"knowledge base {kb.path} (e.g. {sorted(unknown)[0]!r}): a file of another KB?")


def check_answers_made_for(path: str | Path, meta: dict, records: list[dict], samples: list,
                           *, sample_file: str | Path) -> None:
    """Refuse an answers file made for other samples (its fingerprint, or no id in common)."""
    from omgm.data.samples import samples_fingerprint

    made_for = meta.get("samples")
    if made_for and made_for != samples_fingerprint(samples):
        raise ResultFileError(f"{path} was made for other samples ({meta.get('test_file', '?')}) than "
                              f"{sample_file}: E-VQA ids are positions, so they would silently mismatch")
    ids = {s.sample_id for s in samples}
    if records and not any(r.get("data_id") in ids for r in records):
        raise ResultFileError(f"{path} has no answer for any sample of {sample_file}: a file of another split?")


def among(some: list, samples: list) -> list:
    """The samples of ``some`` that are also in ``samples``, by id (linear: a list's ``in`` compared every
    dataclass field of every sample, quadratic at 70k questions)."""
    ids = {s.sample_id for s in samples}
    return [s for s in some if s.sample_id in ids]


def check_made_for(rf: RetrievalFile, samples: list, sample_file: str | Path, kb=None) -> list:
    """Refuse a retrieval file made for other samples; return the samples it has no result for.

    omgm files carry a fingerprint of their samples (E-VQA ids are positions, so a train-split file has the
    same ids as the test split). Bare files (the authors') must hold exactly the sample file's ids, and, when
    ``kb`` is given, only entities of that KB.
    """
    from omgm.data.samples import samples_fingerprint

    made_for = rf.meta.get("samples_hash")
    if made_for and made_for != samples_fingerprint(samples):
        source = f" ({rf.meta['sample_file']})" if rf.meta.get("sample_file") else ""
        raise ResultFileError(f"{rf.path} was made for other samples{source} than {sample_file}: "
                              f"E-VQA ids are positions, so they would silently mismatch")
    if not made_for and str(rf.meta.get("note", "")).startswith("bare"):
        _check_bare(rf, samples, sample_file, kb)
    missing = [s for s in samples if s.sample_id not in rf.results]
    if samples and len(missing) == len(samples):
        raise ResultFileError(f"{rf.path} has no result for any sample of {sample_file} (e.g. "
                              f"{samples[0].sample_id}): a file of another split or dataset?")
    return missing
