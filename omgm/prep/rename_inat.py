"""Lay out iNaturalist images as E-VQA expects them: ``{inat_dir}/{id}.jpg``.

    omgm data rename-inat --id2name val_id2name.json --src inaturalist_2021/ --dst inat/val [--mode symlink]

``--id2name`` (the ``train_id2name.json`` / ``val_id2name.json`` files) maps each image id to its file in the
iNaturalist release (e.g. ``val/02912_Animalia_.../0a1b.jpg``); ``--src`` is the release's root. Each file is
linked (default), hard-linked or copied to ``--dst/{id}.jpg``. Re-runs skip what exists; ids whose source file is
missing are counted and listed in ``--dst/rename_missing.txt``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from omgm.data.wiki_images import plain_name, safe_relative
from omgm.errors import OmgmError, cli_errors
from omgm.help import command_parser


def read_id2name(path: str | Path) -> dict[str, str]:
    p = Path(path)
    if not p.is_file():
        raise OmgmError(f"id2name file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(data, list):                  # [[id, name], ...] or [{"id":..., "file_name":...}, ...]
            data = {str(r[0]): r[1] for r in data} if data and isinstance(data[0], list) else \
                {str(r["id"]): r["file_name"] for r in data}
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError) as exc:
        raise OmgmError(f"{p}: not an id2name file ({type(exc).__name__}: {str(exc)[:120]}); expected an object "
                        f"mapping image id -> file name") from None
    if not isinstance(data, dict):
        raise OmgmError(f"{p}: expected an object mapping image id -> file name")
    return {str(k): str(v) for k, v in data.items()}


def place(src: Path, dst: Path, mode: str) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    tmp.unlink(missing_ok=True)
    if mode == "symlink":
        os.symlink(src.resolve(), tmp)
    elif mode == "hardlink":
        os.link(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def rename(id2name: dict[str, str], src_root: Path, dst: Path, mode: str = "symlink", *, progress: bool = True) -> dict:
    dst.mkdir(parents=True, exist_ok=True)
    counts = {"placed": 0, "already_there": 0, "missing_source": 0, "unsafe_entry": 0}
    missing = []
    for img_id, name in tqdm(id2name.items(), desc="iNat", unit=" img", disable=not progress):
        if not plain_name(img_id) or not safe_relative(name):     # would read or write outside the folders
            counts["unsafe_entry"] += 1
            missing.append(f"{img_id}\t{name}\tunsafe: an id with a path separator or '..', or a file name "
                           f"leaving --src")
            continue
        target = dst / f"{img_id}.jpg"
        if target.exists():
            counts["already_there"] += 1
            continue
        src = src_root / name
        if not src.is_file():
            counts["missing_source"] += 1
            missing.append(f"{img_id}\t{src}")
            continue
        place(src, target, mode)
        counts["placed"] += 1
    (dst / "rename_missing.txt").write_text("".join(m + "\n" for m in missing), encoding="utf-8")
    return counts


@cli_errors
def main(argv: list[str] | None = None) -> int:
    p = command_parser("data rename-inat", __doc__)
    p.add_argument("--id2name", required=True)
    p.add_argument("--src", required=True, help="root of the iNaturalist release")
    p.add_argument("--dst", required=True, help="the inat_dir E-VQA reads")
    p.add_argument("--mode", choices=["symlink", "hardlink", "copy"], default="symlink")
    p.add_argument("--no_progress", action="store_true")
    a = p.parse_args(argv)
    counts = rename(read_id2name(a.id2name), Path(a.src), Path(a.dst), a.mode, progress=not a.no_progress)
    print(json.dumps(counts))
    if counts["unsafe_entry"]:
        print(f"{counts['unsafe_entry']} entries skipped: an id or file name would leave --dst or --src "
              f"(see {Path(a.dst) / 'rename_missing.txt'})")
    if counts["missing_source"]:
        print(f"{counts['missing_source']} source files missing: see {Path(a.dst) / 'rename_missing.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
