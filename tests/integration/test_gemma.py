"""The real Gemma-3 path in the default suite: the real tokenizer (262k vocabulary, from the prepared
Gemma-3-270M folder) with the shipped Gemma-3 chat template, on a tiny random Gemma3ForCausalLM
(sliding-window and global layers, tied embeddings) whose folder holds weights only, so the tokenizer
comes from `model.tokenizer` as for base weights with an instruct tokenizer. The whole experiment
runs on it: data -> train -> attribute -> select -> train arms -> evaluate -> sae -> report."""

from __future__ import annotations

import datasets
import pytest
import torch
from helpers import build_tiny_gemma

from playpen_attribution.config import parse_config
from playpen_attribution.core.modeling import load_model, load_tokenizer
from playpen_attribution.core.tokenization import TokenizeConfig, stop_ids, tokenize_row, turn_end_id
from playpen_attribution.run import artifacts

END_OF_TURN, EOS = 106, 1


@pytest.fixture(scope="module")
def gemma_tokenizer(gemma_270m_dir):
    return load_tokenizer(gemma_270m_dir, "gemma3")


def test_chat_template_rows_end_with_end_of_turn_and_raw_rows_follow_the_assistant_cue(gemma_tokenizer):
    tok = gemma_tokenizer
    messages = [{"role": "user", "content": "CLUE: cold white"}, {"role": "assistant", "content": "GUESS: rain"},
                {"role": "user", "content": "CLUE: winter"}]
    row = {"example_id": "g", "prompt": "USER: CLUE: cold white\n\nASSISTANT: GUESS: rain\n\nUSER: CLUE: winter\n\nASSISTANT:",
           "completion": "GUESS: snow", "prompt_messages": messages}
    chat = tokenize_row(tok, row, TokenizeConfig(format="chat_template", max_length=96))
    assert chat["input_ids"][-1] == END_OF_TURN == turn_end_id(tok, "chat_template") and chat["labels"][-1] == END_OF_TURN
    assert chat["input_ids"].count(tok.bos_token_id) == 1 and chat["input_ids"][0] == tok.bos_token_id
    supervised = [t for t in chat["labels"] if t != -100]
    assert tok.decode(supervised) == "GUESS: snow<end_of_turn>"  # right after "<start_of_turn>model\n"
    assert tok.decode(chat["input_ids"]).endswith("<start_of_turn>model\nGUESS: snow<end_of_turn>")
    raw = tokenize_row(tok, row, TokenizeConfig(max_length=96))
    # the supervised turn is tokenized exactly like the earlier assistant turn of the same prompt
    earlier = tok("ASSISTANT: GUESS: rain", add_special_tokens=False)["input_ids"]
    ours = tok("ASSISTANT:", add_special_tokens=False)["input_ids"] + [t for t in raw["labels"] if t != -100][:-1]
    assert ours[: len(earlier) - 1] == earlier[:-1] and raw["labels"][-1] == EOS
    assert stop_ids(tok, "chat_template") == [EOS, END_OF_TURN] and stop_ids(tok, "raw") == [EOS]



def test_all_assistant_turns_masking_equals_the_gemma_template_boundaries(gemma_tokenizer):
    tok = gemma_tokenizer
    turns = [{"role": "system", "content": "Answer briefly."},
             {"role": "user", "content": "Name a red fruit."}, {"role": "assistant", "content": "An apple.\n"},
             {"role": "user", "content": "And a yellow one?"}, {"role": "assistant", "content": " A banana, ripe."},
             {"role": "user", "content": "A green one?"}]
    row = {"example_id": "g3", "prompt": "unused for chat_template", "completion": "A lime.", "prompt_messages": turns}
    out = tokenize_row(tok, row, TokenizeConfig(format="chat_template", max_length=256, supervise="all_assistant_turns"))
    assert out["input_ids"] == tokenize_row(tok, row, TokenizeConfig(format="chat_template", max_length=256))["input_ids"]
    full = turns + [{"role": "assistant", "content": "A lime."}]
    expected = []
    for i, msg in enumerate(full):  # the template's own boundaries, as token positions
        if msg["role"] != "assistant":
            continue
        before = tok.apply_chat_template(full[:i], add_generation_prompt=True, tokenize=False)
        through = tok.apply_chat_template(full[: i + 1], tokenize=False).rstrip()
        start = len(tok(before, add_special_tokens=False)["input_ids"])
        stop = len(tok(through, add_special_tokens=False)["input_ids"])
        expected += list(range(start, stop))
    supervised = [i for i, t in enumerate(out["labels"]) if t != -100]
    assert supervised == expected
    runs = [[supervised[0]]]
    for i in supervised[1:]:
        runs[-1].append(i) if i == runs[-1][-1] + 1 else runs.append([i])
    texts = [tok.decode([out["input_ids"][i] for i in run]) for run in runs]
    assert texts == ["An apple.<end_of_turn>", "A banana, ripe.<end_of_turn>", "A lime.<end_of_turn>"]


CONFIG = {
    "name": "tiny_gemma",
    "tokenize": {"format": "chat_template", "chat_template": "gemma3", "max_length": 128},
    "data": {"source": {"kind": "demo", "n_train": 48, "n_query": 8, "n_eval": 12, "n_targets": 10,
                        "failure_fraction": 0.2, "mislabeled_fraction": 0.1, "aborted_fraction": 0.0}},
    "train": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "learning_rate": 1e-3, "epochs": 1, "batch_size": 8,
              "grad_accum": 1, "warmup_ratio": 0.0, "scheduler": "linear", "weight_decay": 0.0},
    "arm_train": {"lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "learning_rate": 1e-3, "epochs": 1, "batch_size": 8,
                  "grad_accum": 1, "warmup_ratio": 0.0, "scheduler": "linear", "weight_decay": 0.0},
    "attribute": {"projection_dim": 4, "token_batch_size": 128},
    "select": {"k": 12, "arms": ["top_k", "matched_random_k"]},
    "sweep": {"seeds": [1]},
    "evaluate": {"max_new_tokens": 4, "batch_size": 8},
    "sae": {"release": "random", "layer": 0, "d_sae": 32, "model": "base_adapter", "batch_size": 8},
}


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
    """Weights only: the tokenizer is the prepared 270M's (`model.tokenizer`)."""
    return build_tiny_gemma(tmp_path_factory.mktemp("tiny_gemma") / "model")


@pytest.fixture(scope="module")
def gemma_run(tmp_path_factory, gemma_270m_dir, tiny_gemma):
    from playpen_attribution.pipeline import run_experiment

    root = tmp_path_factory.mktemp("gemma")
    cfg = parse_config(CONFIG | {"model": {"base": str(tiny_gemma), "tokenizer": str(gemma_270m_dir)}})
    run_experiment(cfg, root / "run")
    return cfg, root / "run", tiny_gemma


def test_the_whole_experiment_runs_on_gemma_layers(gemma_run):
    _, run_dir, _ = gemma_run
    for stage in ("data", "train_base", "attribute", "sae", "eval_base", "eval_base_adapter", "report",
                  "seed_1/select", "seed_1/train_top_k", "seed_1/eval_matched_random_k"):
        assert artifacts.is_stage_folder(run_dir / stage), stage
    scores = artifacts.load_scores(run_dir / "attribute")
    assert len(scores) == len(artifacts.load_split(run_dir / "data", "train_base"))
    features, index = artifacts.load_features(run_dir / "sae")
    assert features.residual_mean.shape[1] == 64 and index["hook_name"] == "blocks.0.hook_resid_post"
    assert "one seed, training variance not measured" in (run_dir / "report.md").read_text()


def test_the_trainer_and_bergson_see_the_same_ids_ending_in_end_of_turn(gemma_run):
    from playpen_attribution.stages.train import build_trainer

    cfg, run_dir, weights = gemma_run
    pool = artifacts.load_split(run_dir / "data", "train_base")
    trainer = build_trainer(pool, str(weights), cfg.train, cfg, run_dir.parent / "trainer",
                            tokenizer_dir=cfg.model.tokenizer)
    bergson = datasets.load_from_disk(str(run_dir / "attribute" / artifacts.BERGSON_DIR / "scores" / "data.hf"))
    by_id = {eid: (ids, labels)
             for eid, ids, labels in zip(bergson["example_id"], bergson["input_ids"], bergson["labels"], strict=True)}
    for row, ids, labels in zip(pool, trainer.train_dataset["input_ids"], trainer.train_dataset["labels"], strict=True):
        assert by_id[row["example_id"]] == (list(ids), list(labels))
        assert ids[-1] == labels[-1] == END_OF_TURN


def test_evaluation_stops_at_end_of_turn_and_never_projects_the_whole_vocabulary(gemma_run, monkeypatch):
    from playpen_attribution.core import generation, row_forward
    from playpen_attribution.stages import evaluate

    cfg, run_dir, weights = gemma_run
    seen_stops, widths = [], []
    real_generate = generation.generate

    def recording_generate(*args, **kwargs):
        seen_stops.append(args[6] if len(args) > 6 else kwargs.get("stop"))
        return real_generate(*args, **kwargs)

    monkeypatch.setattr(evaluate, "generate", recording_generate)
    model = load_model(weights, run_dir / "train_base" / "adapter")
    model.get_output_embeddings().register_forward_hook(lambda m, i, o: widths.append(o.numel()))
    tok = load_tokenizer(cfg.model.tokenizer, cfg.tokenize.chat_template)
    rows = artifacts.load_split(run_dir / "data", "eval")
    _, metrics = evaluate.evaluate_rows(cfg, rows, model, tok, "base_adapter")
    assert seen_stops == [[EOS, END_OF_TURN]] and metrics["total"] == len(rows)
    biggest_batch = cfg.evaluate.batch_size * 262144  # the model's own logits: the last position only
    assert max(widths) <= max(row_forward.LOGIT_BUDGET, biggest_batch)


def test_greedy_generation_stops_at_any_stop_id(tiny_gemma, gemma_tokenizer):
    from playpen_attribution.core.generation import generate

    model = load_model(tiny_gemma)
    prompt = [gemma_tokenizer("<start_of_turn>user\nhello<end_of_turn>\n<start_of_turn>model\n",
                              add_special_tokens=True)["input_ids"]]
    with torch.no_grad():
        first = int(model(input_ids=torch.tensor(prompt)).logits[0, -1].argmax())
    free = generate(model, gemma_tokenizer, prompt, 4, 1, "free", stop=[EOS])
    stopped = generate(model, gemma_tokenizer, prompt, 4, 1, "stopped", stop=[EOS, first])
    # generation ends with the stop token it produced (decoded, as it is no special token here)
    assert stopped == [gemma_tokenizer.decode([first])] and free[0].startswith(stopped[0]) and free != stopped


def test_the_base_gemma_never_learned_end_of_turn_and_the_train_stage_says_so(gemma_270m_dir, gemma_tokenizer, caplog):
    # measured on the prepared base weights: <end_of_turn> shares its input embedding direction with
    # thousands of unused tokens, EOS with none; chat-template runs on base weights must learn to emit it
    from playpen_attribution.core.modeling import embedding_twins
    from playpen_attribution.stages.train import turn_end_check

    model = load_model(gemma_270m_dir)
    assert embedding_twins(model, EOS) == 0
    with caplog.at_level("WARNING"):
        check = turn_end_check(model, gemma_tokenizer, "chat_template")
    assert check["id"] == END_OF_TURN and check["token"] == "<end_of_turn>" and check["embedding_twins"] > 1000
    assert "looks untrained" in caplog.text
