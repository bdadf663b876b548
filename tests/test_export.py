import json
import os

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -r requirements-dev.txt)")

from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402

import export  # noqa: E402
import sample  # noqa: E402
from bpe import Tokenizer  # noqa: E402
from common import UsageError  # noqa: E402
from conftest import PERSIAN, shared_file  # noqa: E402
from model import GPT, GPTConfig, tokenizer_hash  # noqa: E402

ZWNJ = "\u200c"
TEXTS = [
    *PERSIAN,
    f"می{ZWNJ}خواهم کتاب{ZWNJ}ها را بخوانم؛ «شاهنامه» را خوانده{ZWNJ}ای؟",  # ZWNJ, Persian punctuation
    "کِتابِ خوبی است، مُهِمّ و خواندنی.",  # diacritics
    "سال ۱۴۰۲ و ١٢٣٤ و 2023: ۱۲۳۴۵۶۷ نفر",  # Persian, Arabic-Indic and Latin digits
    "Hello, World! It's GPT-2's tokenizer, isn't it?",  # Latin
    "سلام 😀👍🏽 دنیا 🇮🇷",  # emoji, a skin-tone modifier and a flag
    "  دو فاصله\n\nو خط\tتازه  ",  # runs of whitespace, newlines, a tab
]
SHAPES = {  # the small test model (config/tiny.py, with room for 50 new tokens) and the default GPT
    "tiny": dict(n_layer=2, n_head=2, n_embd=32, block_size=96),
    "default": dict(),
}
VARIANTS = {
    "rope": dict(),
    "learned": dict(pos_emb="learned"),
    "bias": dict(bias=True),
    "relu2-untied": dict(mlp="relu2", tie_weights=False),
}


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(TEXTS * 3, vocab_size=600)


def random_model(vocab_size, shape, variant, seed=0):
    """A GPT with random weights spread wider than at initialisation, so its logits are far from
    uniform and greedy choices decisive, with random LayerNorm gains and biases where it has them."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, **SHAPES[shape], **VARIANTS[variant])).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif name in ("wte.weight", "wpe.weight", "lm_head.weight"):
                p.normal_(0, 1.0)
            else:
                p.normal_(0, 0.3)
    return model


def load_exported(directory):
    return AutoModelForCausalLM.from_pretrained(directory).eval(), AutoTokenizer.from_pretrained(directory)


@pytest.fixture(scope="module")
def exported(tokenizer, tmp_path_factory):
    """(our model, its transformers copy, the exported tokenizer) for each shape and variant, made once."""
    cache = {}

    def get(shape, variant):
        if (shape, variant) not in cache:
            model = random_model(tokenizer.vocab_size, shape, variant)
            directory = tmp_path_factory.mktemp("hf") / f"{shape}-{variant}"
            export.export(model, tokenizer, str(directory))
            cache[shape, variant] = (model, *load_exported(directory))
        return cache[shape, variant]
    return get


CASES = [("tiny", variant) for variant in VARIANTS] + [("default", "rope"), ("default", "learned")]


@pytest.mark.parametrize("shape, variant", CASES)
def test_transformers_logits_equal_ours(exported, tokenizer, shape, variant):
    model, hf_model, _ = exported(shape, variant)
    assert type(hf_model).__name__ == ("GPT2LMHeadModel" if variant == "learned" else "GPTNeoXForCausalLM")
    ids = [tokenizer.eot_id] + tokenizer.encode(" ".join(PERSIAN))[:model.config.block_size - 1]
    x = torch.tensor([ids])
    with torch.no_grad():
        ours, _ = model(x)
        theirs = hf_model(x).logits
    assert ours.shape == theirs.shape and ours.std() > 1  # logits far from uniform
    assert (ours - theirs).abs().max().item() <= 1e-4


@pytest.mark.parametrize("shape, variant", CASES)
def test_transformers_greedy_generation_equals_ours(exported, tokenizer, shape, variant):
    """50 greedy tokens from transformers' generate (with its KV cache) and from sample.generate."""
    model, hf_model, hf_tokenizer = exported(shape, variant)
    prompt = hf_tokenizer(PERSIAN[0], return_tensors="pt")
    prompt_ids = prompt["input_ids"][0].tolist()
    assert prompt_ids == [tokenizer.eot_id] + tokenizer.encode(PERSIAN[0])
    ours = list(sample.generate(model, prompt_ids, 50, greedy=True, stop_ids=(tokenizer.eot_id,)))
    with torch.no_grad():
        theirs = hf_model.generate(**prompt, max_new_tokens=50, do_sample=False)[0, len(prompt_ids):].tolist()
    if len(ours) < 50:  # both stopped at <|endoftext|>; transformers keeps it
        ours.append(tokenizer.eot_id)
    assert theirs == ours and len(set(ours)) > 1


@pytest.fixture(scope="module", params=["own", "fawiki"])
def any_tokenizer(request, tokenizer, tmp_path_factory):
    """(ours, exported) for the small tokenizer above and one of 4,096 ids trained on real fawiki text."""
    if request.param == "fawiki":
        from prepare import iter_documents
        documents = iter_documents(shared_file("fawiki", "fawiki-bio-paragraphs.jsonl"), max_articles=1500)
        tokenizer = Tokenizer.train(documents, vocab_size=4096)
    directory = tmp_path_factory.mktemp("tok") / request.param
    export.export(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=tokenizer.vocab_size)),
                  tokenizer, str(directory))
    return tokenizer, AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("text", TEXTS + ["", "a", "\u200cx", "٫٬ ؟؟ «»«", "123456789 ١٢٣٤٥٦٧"])
def test_exported_tokenizer_equals_ours(any_tokenizer, text):
    tokenizer, hf_tokenizer = any_tokenizer
    ids = tokenizer.encode(text)
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    assert hf_tokenizer(text)["input_ids"] == [tokenizer.eot_id] + ids  # a document starts after <|endoftext|>
    assert hf_tokenizer.decode(ids) == text == tokenizer.decode(ids)
    assert hf_tokenizer.decode([tokenizer.eot_id] + ids, skip_special_tokens=True) == text


def test_endoftext_is_one_special_token(any_tokenizer):
    tokenizer, hf_tokenizer = any_tokenizer
    text = "یک<|endoftext|>دو"
    expected = tokenizer.encode(text, allowed_special="all")
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == expected and tokenizer.eot_id in expected
    assert hf_tokenizer.eos_token_id == hf_tokenizer.bos_token_id == tokenizer.eot_id


def test_safetensors_we_write_read_back_with_the_library(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    tensors = {"b": torch.randn(3, 5), "a.weight": torch.arange(7, dtype=torch.bfloat16),
               "half": torch.randn(2, 2, 2).half(), "transposed": torch.randn(4, 6).T, "scalar": torch.tensor(2.5)}
    export.write_safetensors(tmp_path / "t.safetensors", tensors)
    loaded = safetensors_torch.load_file(tmp_path / "t.safetensors")
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype and torch.equal(loaded[name], tensor)


# -----------------------------------------------------------------------------
# the command line

def save_checkpoint(out_dir, model, tokenizer, config):
    tokenizer_json = tokenizer.to_json()
    os.makedirs(out_dir, exist_ok=True)
    torch.save({"model_args": vars(model.config), "model": model.state_dict(), "iter_num": 40, "best_val_loss": 3.5,
                "train_seconds": 12.0, "config": config, "tokenizer": tokenizer_json,
                "tokenizer_sha256": tokenizer_hash(tokenizer_json)}, os.path.join(out_dir, "ckpt.pt"))


def test_command_line_export_with_model_card_and_generation_defaults(tokenizer, tmp_path):
    out_dir, export_dir = tmp_path / "out", tmp_path / "hf" / "model"
    model = random_model(tokenizer.vocab_size, "tiny", "rope")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    splits = {"train": {"documents": 90, "tokens": 9000, "bytes": 40000},
              "test": {"documents": 3, "tokens": 300, "bytes": 1200}}
    (data_dir / "meta.json").write_text(json.dumps({"splits": splits, "inputs": [{"path": "/x/fa.jsonl"}]}))
    save_checkpoint(out_dir, model, tokenizer, {"data_dir": str(data_dir), "learning_rate": 3e-3})
    report = {"input": {"data": "/d/test.bin"}, "split": "test",
              "results": {"tokens": 300, "cross_entropy": 4.25, "perplexity": 70.1054, "bleu": 1.5}}
    (out_dir / "eval_test.json").write_text(json.dumps(report))
    export.main([f"--out_dir={out_dir}", f"--export_dir={export_dir}"])
    assert sorted(os.listdir(export_dir)) == ["README.md", "config.json", "generation_config.json",
                                              "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert [p for p in os.listdir(tmp_path / "hf") if p != "model"] == []  # no temporary directory left
    hf_model, _ = load_exported(export_dir)
    x = torch.tensor([[tokenizer.eot_id] + tokenizer.encode(PERSIAN[1])[:40]])
    with torch.no_grad():
        assert (model(x)[0] - hf_model(x).logits).abs().max().item() <= 1e-4
    generation = GenerationConfig.from_pretrained(export_dir)
    assert (generation.do_sample, generation.temperature, generation.top_k, generation.top_p,
            generation.max_new_tokens) == (True, 0.8, 200, 0.95, 200)
    assert generation.eos_token_id == tokenizer.eot_id
    card = (export_dir / "README.md").read_text(encoding="utf-8")
    for expected in ("| test | 3 | 300 | 1,200 |", "`fa.jsonl`", "| steps | 40 |", "| best val loss | 3.5000 |",
                     "| `test.bin` (test split) | 300 | 4.2500 | 70.1054 |", "| learning_rate | 0.0030 |"):
        assert expected in card


def test_a_non_empty_export_dir_needs_overwrite(tokenizer, tmp_path):
    out_dir, export_dir = tmp_path / "out", tmp_path / "export"
    save_checkpoint(out_dir, random_model(tokenizer.vocab_size, "tiny", "rope"), tokenizer, {})
    export_dir.mkdir()
    (export_dir / "mine.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not empty .*--overwrite=True"):
        export.main([f"--out_dir={out_dir}", f"--export_dir={export_dir}"])
    assert os.listdir(export_dir) == ["mine.txt"]
    export.main([f"--out_dir={out_dir}", f"--export_dir={export_dir}", "--overwrite=True"])
    assert "mine.txt" not in os.listdir(export_dir) and "config.json" in os.listdir(export_dir)
    assert sorted(os.listdir(tmp_path)) == ["export", "out"]


@pytest.mark.parametrize("setting, message", [
    (dict(norm="rmsnorm"), "norm='rmsnorm' cannot be exported"),
    (dict(qk_norm=True), "qk_norm=True cannot be exported"),
])
def test_a_variant_no_architecture_computes_is_refused(tokenizer, tmp_path, setting, message):
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=tokenizer.vocab_size, **setting))
    with pytest.raises(UsageError, match=message):
        export.export(model, tokenizer, str(tmp_path / "export"))
    assert os.listdir(tmp_path) == []


def test_two_tokens_of_the_same_bytes_are_refused(tmp_path):
    # "abc" reached twice: (ab, c) and (a, bc); the transformers format maps each string to one id
    tokenizer = Tokenizer([(97, 98), (256, 99), (98, 99), (97, 258)])
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=tokenizer.vocab_size))
    with pytest.raises(UsageError, match="tokens 257 and 259 are the same bytes b'abc'"):
        export.export(model, tokenizer, str(tmp_path / "export"))
    assert os.listdir(tmp_path) == []
