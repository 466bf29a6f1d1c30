"""Step-3 fine-tuning as a stage: :class:`FinetuneConfig` names the generator to fine-tune and the fine-tuning
settings; ``build()`` loads the generator (a fine-tunable family's, in fp32 master weights for full tuning) and
returns the :class:`~omgm.finetune.train.SftTrainer` whose ``run(examples)`` trains."""
from __future__ import annotations

from dataclasses import dataclass, replace

from omgm.errors import OmgmError
from omgm.finetune.train import SftConfig, SftTrainer
from omgm.generate.generators import FAMILIES, Generator, GeneratorSpec, build_generator
from omgm.settings import nested


@dataclass
class FinetuneConfig:
    """Every setting of ``omgm step3 train`` (its flags are made from these fields)."""

    generator: GeneratorSpec = nested(GeneratorSpec)
    sft: SftConfig = nested(SftConfig)

    def load_generator(self) -> Generator:
        """The generator to fine-tune; its family must allow fine-tuning (its ``FAMILIES`` row says)."""
        from omgm.parallel import device_for, env_place

        spec = self.generator
        dtype = spec.dtype or ("fp32" if self.sft.tuning == "full" else None)   # fp32 master weights for full tuning
        generator = build_generator(replace(spec, device=device_for(env_place(), spec.device), dtype=dtype))
        if not FAMILIES[generator.family].finetune:
            raise OmgmError(f"fine-tuning takes the families {', '.join(k for k, f in FAMILIES.items() if f.finetune)}"
                            f"; {generator.name} is {generator.family}")
        return generator

    def build(self, generator: Generator | None = None) -> SftTrainer:
        """The trainer of ``generator`` (default: :meth:`load_generator`) with these settings."""
        return SftTrainer(generator if generator is not None else self.load_generator(),
                          replace(self.sft, cpu=self.sft.cpu or self.generator.device == "cpu"))
