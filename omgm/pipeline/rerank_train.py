"""Step 2a as a stage: :class:`RerankTrainConfig` ``.build()`` loads the reranker to start from, its tokenizer and the
KB; the :class:`RerankTrainer` it returns ``.run(samples, negatives)`` trains (resumably) and returns the summary."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Sequence

import torch

from omgm.data.kb import KnowledgeBase, open_kb
from omgm.data.samples import ImageDirs, Sample
from omgm.data.wiki_images import WikiSource
from omgm.errors import OmgmError
from omgm.pipeline.rerank import RerankerSpec
from omgm.rerank.model import IT2ITReranker
from omgm.rerank.train import TrainConfig
from omgm.settings import nested

log = logging.getLogger(__name__)


@dataclass
class RerankTrainConfig:
    """Every setting of step 2a (its flags are made from these fields): the reranker to start from, the training
    settings (with the KB), where the wiki images and the query images are."""

    model: RerankerSpec = nested(RerankerSpec)
    train: TrainConfig = nested(TrainConfig)
    wiki: WikiSource = nested(WikiSource)
    images: ImageDirs = nested(ImageDirs)

    def build(self, report: Callable[[str], None] | None = None) -> RerankTrainer:
        """Load the reranker (``init_ckpt`` / ``vit_ckpt``, or seeded random weights: said), its tokenizer and the
        KB; ``report(text)`` gets what was loaded from which file."""
        from omgm.rerank.inputs import load_tokenizer

        if not self.train.knowledge_base:
            raise OmgmError("step 2a needs knowledge_base")
        kb, tokenizer = open_kb(self.train.knowledge_base), load_tokenizer(self.model.tokenizer)
        torch.manual_seed(self.train.seed)       # parameters no checkpoint provides (all of them without init_ckpt)
        model, loaded = self.model.load()
        if not self.model.init_ckpt:
            log.warning("no --init_ckpt: the reranker starts from RANDOM weights (fine for tests, not for results)")
        if report is not None:
            report(loaded.summary() or "no checkpoint loaded")
        if model.config.qformer.vocab_size != len(tokenizer):
            raise OmgmError(f"tokenizer {self.model.tokenizer} has {len(tokenizer)} tokens but the Q-Former expects "
                            f"{model.config.qformer.vocab_size}")
        return RerankTrainer(self, model, tokenizer, kb)


class RerankTrainer:
    """Built by :meth:`RerankTrainConfig.build`; see the module docstring."""

    def __init__(self, cfg: RerankTrainConfig, model: IT2ITReranker, tokenizer, kb: KnowledgeBase) -> None:
        self.cfg, self.model, self.tokenizer, self.kb = cfg, model, tokenizer, kb

    def dataset(self, samples: Sequence[Sample], negatives: Mapping):
        """The training examples: each sample with its positive and hard negatives (drops counted in ``.drops``)."""
        from omgm.rerank.dataset import RerankTrainSet
        from omgm.rerank.inputs import image_transform

        c = self.cfg
        return RerankTrainSet(samples, dict(negatives), c.train.knowledge_base, c.wiki.open(self.kb), c.images,
                              image_transform(self.model.config.vision.image_size), c.train.neg_num, c.train.seed)

    def run(self, samples: Sequence[Sample], negatives: Mapping,
            report: Callable[[str], None] | None = None) -> dict:
        """Train on ``samples`` with their ``negatives`` (resuming from ``save_dir``); the summary of the run."""
        from omgm.rerank.train import train

        ds = self.dataset(samples, negatives)
        if report is not None:
            report(f"training examples: {len(ds)}; dropped: {dict(ds.drops) or 'none'}")
        if len(ds) == 0:
            raise OmgmError("no usable training example (see the drop counts above)")
        spec = self.cfg.model
        meta = {"init_ckpt": spec.init_ckpt, "vit_ckpt": spec.vit_ckpt, "tokenizer": spec.tokenizer}
        cfg = replace(self.cfg.train, cpu=self.cfg.train.cpu or spec.device == "cpu")
        return train(self.model, ds, self.tokenizer, cfg, extra_meta=meta, trainable_only=bool(spec.vit_ckpt))

