"""Every stage by its command, and the config class it is built from: ``Config(...).build(...)`` loads what the
stage needs and returns an object whose ``run(...)`` does the stage's work. The command modules only parse flags
into these configs, build, run (inside :class:`omgm.harness.StageRun` where the stage writes a result) and write.

============== ======================== ===================================== ===========================
command        config                   build() returns                       run(...)
============== ======================== ===================================== ===========================
index build    ``IndexConfig``          ``IndexBuilder``                      () -> manifest
step1          ``SearchConfig``         ``EntitySearch``                      (samples) -> SearchRun
step2 train    ``RerankTrainConfig``    ``RerankTrainer``                     (samples, negatives) -> summary
step2 rerank   ``RerankConfig``         ``Reranker``                          (samples, step-1 results) -> runs
step3          ``AnswerConfig``         ``Answerer``                          (samples, results) -> records
step3 train    ``FinetuneConfig``       ``SftTrainer`` (with its generator)   (examples) -> summary
============== ======================== ===================================== ===========================
"""
from __future__ import annotations


def stage_configs() -> dict[str, type]:
    """command -> its config class (imported on call: the table costs nothing to import)."""
    from omgm.pipeline.answer import AnswerConfig
    from omgm.pipeline.finetune import FinetuneConfig
    from omgm.pipeline.rerank import RerankConfig
    from omgm.pipeline.rerank_train import RerankTrainConfig
    from omgm.pipeline.search import SearchConfig
    from omgm.retrieval.builder import IndexConfig

    return {"index build": IndexConfig, "step1": SearchConfig, "step2 train": RerankTrainConfig,
            "step2 rerank": RerankConfig, "step3": AnswerConfig, "step3 train": FinetuneConfig}
