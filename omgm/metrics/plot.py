"""The recall@k plot shared by the report and the retriever comparison."""
from __future__ import annotations

from pathlib import Path


def recall_plot(curves: dict[str, dict[int, float]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    for name, rec in curves.items():
        ax.plot(list(rec), list(rec.values()), marker="o", label=name)
    ax.set_xticks(sorted({k for rec in curves.values() for k in rec}))
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
