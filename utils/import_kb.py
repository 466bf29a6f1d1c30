"""``python -m utils.import_kb`` = ``python -m omgm.data.kb_import``: stream a KB JSON into the SQLite store."""
from omgm.data.kb_import import main

if __name__ == "__main__":
    raise SystemExit(main())
