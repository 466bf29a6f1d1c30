"""One shape for every stage: flags generated from the stage configs, the same configs built by the commands and
by the pipeline, checks that are the same from flags, YAML, OMGM_* and --set, the tables behind the factories,
and the run harness."""
import json

import pytest

from omgm.commands import build_index, evaluate, step1, step2, step3, step3_train
from omgm.config import parse_with_config
from omgm.finetune.train import SftConfig
from omgm.fusion import FUSIONS, Fusion
from omgm.generate.generators import FAMILIES, NAMES, GeneratorSpec, list_generators
from omgm.generate.sections import fuse_sections
from omgm.io import OutputError
from omgm.metrics.recall import RANKING_METRICS, recall_at_k
from omgm.parallel import Context
from omgm.pipeline.answer import AnswerConfig
from omgm.pipeline.pipeline import _values, check_overrides, known_keys
from omgm.pipeline.rerank import RerankConfig, RerankerSpec
from omgm.pipeline.search import SearchConfig
from omgm.rerank.train import TrainConfig
from omgm.retrieval.builder import IndexConfig
from omgm.settings import SettingsError, default_of, from_values, leaves

STAGES = {"step1": (step1.build_parser, (SearchConfig,)),
          "step2 rerank": (step2.rerank_parser, (RerankConfig,)),
          "step2 train": (step2.train_parser, (TrainConfig, RerankerSpec)),
          "step3": (step3.build_parser, (AnswerConfig,)),
          "index build": (build_index.build_parser, (IndexConfig,)),
          "step3 train": (step3_train.build_parser, (SftConfig,))}


@pytest.mark.parametrize("command", list(STAGES))
def test_every_setting_of_a_stage_config_is_a_flag_with_its_default(command):
    make, configs = STAGES[command]
    actions = {a.dest: a for a in make()._actions}
    for cls in configs:
        for f in leaves(cls):
            if "omgm" not in f.metadata:                  # internal fields (cpu, progress...): not settings
                continue
            assert f.name in actions, f"{command}: {cls.__name__}.{f.name} has no flag"
            assert actions[f.name].default == default_of(f), f"{command}: --{f.name} default differs"
            assert actions[f.name].help, f"{command}: --{f.name} has no help"


def test_flags_yaml_and_the_pipeline_build_the_same_configs(tmp_path):
    values = {"knowledge_base_path": str(tmp_path / "kb.sqlite"), "faiss_index": str(tmp_path / "s.index"),
              "retriever_vit": "omgm-tiny-eva", "retrieval_top_k": 7, "num_workers": 0, "device": "cpu",
              "reranker_ckpt_path": str(tmp_path / "m.pth"), "step1_alpha": 0.5, "query_norm": "per_token",
              "answer_generator": "mistral", "step2_beta": 0.3, "batch_size": 3, "max_new_tokens": 5,
              "prompt_style": "omgm", "inat_dir": str(tmp_path / "inat"), "context_tokens": 100}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(values))
    piped = _values((str(cfg),), {})
    for cls, parser in ((SearchConfig, step1.build_parser()), (RerankConfig, step2.rerank_parser()),
                        (AnswerConfig, step3.build_parser())):
        from_flags = from_values(cls, parse_with_config(parser, ["--config", str(cfg)]))
        assert from_flags == from_values(cls, piped), cls.__name__
    search = from_values(SearchConfig, piped)
    assert search.knowledge_base == values["knowledge_base_path"] and search.retriever.device == "cpu"
    assert from_values(RerankConfig, piped).step1_alpha == [0.5]
    assert from_values(AnswerConfig, piped).generator == GeneratorSpec(
        "mistral", prompt_style="omgm", device="cpu", max_new_tokens=5)


def test_set_and_config_values_are_checked_like_flags():
    assert "knowledge_base" in known_keys() and "knowledge_base_path" not in known_keys()
    assert check_overrides({"device": "auto", "knowledge_base_path": "k", "step2_beta": "0.5"}) == {
        "device": None, "knowledge_base": "k", "step2_beta": 0.5}
    for bad, message in (({"no_such_key": 1}, "unknown setting.*no_such_key"),
                         ({"step2_beta": 2}, "step2_beta: 2.0 is out of range"),
                         ({"prompt_style": "fancy"}, "prompt_style: 'fancy' is not one of official, omgm"),
                         ({"retrieval_top_k": 0}, "retrieval_top_k: 0 is out of range"),
                         ({"device": "gpu9"}, "device: 'gpu9' is not a device")):
        with pytest.raises(SettingsError, match=message):
            check_overrides(bad)
    with pytest.raises(SettingsError, match="fusion: 'nope' is not one of"):
        from_values(RerankConfig, {"fusion": "nope"})


def test_a_bad_value_in_a_config_file_is_one_line_naming_it(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("step2_beta: 7\n")
    assert step3.main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "step2_beta" in err and "out of range" in err and len(err.strip().splitlines()) == 1


def test_the_generator_tables_are_consistent():
    for name, entry in NAMES.items():
        assert all(layout in FAMILIES for layout in entry.layouts), name
        assert list_generators()[name].startswith(entry.hub_id)
    assert FAMILIES["llava-hf"].new_tokens == 200 and FAMILIES["chat-llm"].new_tokens == 128
    assert not FAMILIES["llava-original"].vllm and FAMILIES["chat-llm"].vllm


def test_the_published_fusion_is_the_weighted_rule():
    s1, secs = [0.5, 0.4, 0.3], [[0.1, 0.9], [], [0.95]]
    fused = [0.9 * a + (1 - 0.9) * (max(s) if s else 0.0) for a, s in zip(s1, secs)]
    assert [f for _, f, _ in Fusion().order(s1, secs, 0.9)] == sorted(fused, reverse=True)
    assert FUSIONS["weighted"] == Fusion()
    choice = fuse_sections([0.2, 0.8], [0.9, 0.1], 0.2)
    assert choice.s3 == [0.2 * 0.9 + 0.8 * 0.2, 0.2 * 0.1 + 0.8 * 0.8] and choice.index == 1
    assert "weighted" in [a for a in step2.rerank_parser()._actions if a.dest == "fusion"][0].choices


def test_ranking_metrics_are_a_table(tmp_path, capsys):
    gold = {"a": "x", "b": "y", "c": "z"}
    ranked = {"a": ["x", "q"], "b": ["q", "y"], "c": ["q", "r"]}
    rep = recall_at_k(ranked, gold, [1, 2], metrics=("recall", "mrr"))
    assert rep.recall == {1: 100 / 3, 2: 200 / 3}
    assert rep.others["mrr"] == {1: 100 / 3, 2: 100 * (1 + 0.5) / 3}
    assert rep.as_dict()["mrr"] == {"MRR@1": 33.33, "MRR@2": 50.0}
    assert set(RANKING_METRICS) >= {"recall", "mrr"}
    assert "mrr" not in recall_at_k(ranked, gold, [1]).as_dict()          # only what was asked for
    (tmp_path / "s.csv").write_text("question,answer,dataset_image_ids,dataset_name,wikipedia_url,question_type\n"
                                    "Q?,A,img0,inaturalist,x,automatic\n")
    (tmp_path / "r.json").write_text(json.dumps({"E-VQA_0": {"retrieved_entities": [{"url": "q"}, {"url": "x"}],
                                                       "retrieval_similarities": [0.9, 0.8]}}))
    assert evaluate.main([str(tmp_path / "r.json"), "--sample_file", str(tmp_path / "s.csv"), "--top_ks", "1,2",
                          "--metrics", "recall,mrr"]) == 0
    out = json.loads((tmp_path / "r.eval.json").read_text())
    assert out["recall"] == {"R@1": 0.0, "R@2": 100.0} and out["mrr"] == {"MRR@1": 0.0, "MRR@2": 50.0}
    with pytest.raises(SystemExit) as exc:
        evaluate.main([str(tmp_path / "r.json"), "--sample_file", str(tmp_path / "s.csv"), "--metrics", "ndcg"])
    assert exc.value.code == 2 and "unknown metric(s) ndcg: use recall, mrr" in capsys.readouterr().err


def test_the_run_harness_locks_writes_the_summary_and_drops_the_parts(tmp_path):
    from omgm.harness import StageRun

    (tmp_path / "in.csv").write_text("x")
    with pytest.raises(OutputError, match="is the input"):
        StageRun("step1", tmp_path / "in.csv", inputs=[tmp_path / "in.csv"], ctx=Context())
    with StageRun("step1", str(tmp_path / "out") + "/", inputs=[tmp_path / "in.csv"], ctx=Context()) as run:
        assert run.out == tmp_path / "out" / "result.json" and run.out.with_name("result.json.lock").is_file()
        with pytest.raises(OutputError, match="being written by another job"):
            StageRun("step1", run.out, ctx=Context()).__enter__()
        run.parts.mkdir()
        assert run.uses_parts and run.parallel(lambda: {"k": 1}).settings == {"k": 1}
        summary = run.finish({"samples": 3})
    assert not run.parts.exists() and not run.out.with_name("result.json.lock").exists()
    assert json.loads(run.summary_path.read_text()) == summary
    assert summary["stage"] == "step1" and summary["samples"] == 3 and summary["processes"] == 1
    lazy = StageRun("step1", tmp_path / "o2.json", ctx=Context())
    assert lazy.parallel(lambda: pytest.fail("a fingerprint is only made when parts are used")).settings == {}


def test_specs_take_their_settings_by_keyword():
    from omgm.retrieval.base import RetrieverSpec

    with pytest.raises(TypeError):
        GeneratorSpec("llava1_5", None, "official")                   # more than name and weights: by keyword
    with pytest.raises(TypeError):
        RetrieverSpec("eva-clip", "BAAI/EVA-CLIP-8B")
    assert RetrieverSpec("eva-clip", retriever_path="p").retriever_path == "p"


def test_a_trained_checkpoint_is_read_once(tiny_reranker, tmp_path, monkeypatch):
    import omgm.rerank.convert as convert
    from omgm.rerank.convert import save_ours

    save_ours(tiny_reranker, tmp_path / "model.pth")
    reads = []
    real = convert.read_checkpoint
    monkeypatch.setattr(convert, "read_checkpoint", lambda path, trust=False: reads.append(path) or real(path, trust))
    model, report = RerankerSpec().load(str(tmp_path / "model.pth"))
    assert reads == [str(tmp_path / "model.pth")]          # the header check and the load share one read
    assert model.config.to_dict() == tiny_reranker.config.to_dict() and report.summary()


def test_every_stage_is_built_from_its_config_alone_and_runs(step2_env, tiny_step3_models, demo_image_index,
                                                             tiny_clip_ckpt, tmp_path):
    """The stage table (omgm.stages): each config, filled by keyword with nothing but settings, builds the stage's
    object, and the object has the run() the command calls; the cheap ones are run here too."""
    from omgm.data.results import read_retrieval
    from omgm.stages import stage_configs

    d, kb = step2_env.demo, str(step2_env.dir / "kb.sqlite")
    images = {"inat_dir": str(d / "images/inat"), "gld_dir": str(d / "images/gld")}
    wiki = {"wiki_img_path_prefix": str(d / "wiki_images")}
    retriever = {"retriever_vit": "omgm-tiny-eva", "retriever_pretrained": str(tiny_clip_ckpt), "device": "cpu"}
    values = {
        "index build": {"knowledge_base": kb, "faiss_index": str(tmp_path / "s.index"), **retriever},
        "step1": {"knowledge_base": str(demo_image_index.dir / "kb.sqlite"),
                  "faiss_index": str(demo_image_index.dir / "img.index"), "num_workers": 0, **retriever, **images},
        "step2 train": {"knowledge_base": kb, "reranker_model_name": str(step2_env.config),
                        "tokenizer": str(step2_env.tok_dir), "save_dir": str(tmp_path / "r"), **wiki, **images},
        "step2 rerank": {"knowledge_base": kb, "reranker_model_name": str(step2_env.config),
                         "tokenizer": str(step2_env.tok_dir), "device": "cpu", **wiki, **images},
        "step3": {"knowledge_base": kb, "answer_generator": str(tiny_step3_models.llava), "device": "cpu",
                  "section_reranker": str(tiny_step3_models.cross), "context_tokenizer": str(tiny_step3_models.llava),
                  "max_new_tokens": 2, **images},
        "step3 train": {"output_dir": str(tmp_path / "sft"), "answer_generator": str(tiny_step3_models.llava),
                        "device": "cpu"},
    }
    configs = stage_configs()
    assert set(configs) == set(STAGES) == set(values)
    built = {}
    for command, cls in configs.items():
        cfg = from_values(cls, values[command])
        built[command] = cfg.build()
        assert callable(getattr(built[command], "run", None)), command
    samples = step2_env.test[:2]
    manifest, _ = built["index build"].run()
    assert manifest.count == len(step2_env.kb)
    found = built["step1"].run(samples)
    assert set(found.results) == {s.sample_id for s in samples}
    step1 = read_retrieval(step2_env.dir / "test_step1.json").results
    (run,) = built["step2 rerank"].run(samples, step1)
    assert set(run.results) == {s.sample_id for s in samples}
    records = built["step3"].run(samples, run.results, progress=False)
    assert [r["data_id"] for r in records] == [s.sample_id for s in samples]
