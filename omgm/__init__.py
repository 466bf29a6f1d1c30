"""omgm: Orchestrate Multiple Granularities and Modalities for efficient multimodal retrieval (ACL 2025).

``from omgm import Pipeline`` gives the one-question API (``Pipeline.from_config(...).ask(image, question)``);
it is imported on first use, so ``import omgm`` stays light.
"""
__version__ = "0.1.0"
__all__ = ["Pipeline", "__version__"]


def __getattr__(name: str):
    if name == "Pipeline":
        from omgm.pipeline.pipeline import Pipeline

        return Pipeline
    raise AttributeError(f"module 'omgm' has no attribute {name!r}")
