import json
import os

import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install -r requirements-dev.txt)")

from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig  # noqa: E402

import export  # noqa: E402
import sample  # noqa: E402
from bpe import PRESENTATION_FORMS, TRANSLATION_TABLES, Tokenizer, normalize  # noqa: E402
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


def random_model(vocab_size, shape, variant, seed=0, **settings):
    """A GPT with random weights spread wider than at initialisation, so its logits are far from
    uniform and greedy choices decisive, with random LayerNorm gains and biases where it has them."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, **SHAPES[shape], **{**VARIANTS[variant], **settings})).eval()
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
    assert set(prompt) == {"input_ids", "attention_mask"}  # no token_type_ids, which generate(**prompt) would take
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
            generation.max_new_tokens, generation.max_length) == (True, 0.8, 200, 0.95, None, 96)  # the context
    assert generation.eos_token_id == tokenizer.eot_id
    card = (export_dir / "README.md").read_text(encoding="utf-8")
    for expected in ("| test | 3 | 300 | 1,200 |", "`fa.jsonl`", "| steps | 40 |", "| best val loss | 3.5000 |",
                     "| `test.bin` (test split) | 300 | 4.2500 | 70.1054 |", "| learning_rate | 0.0030 |",
                     "It does not normalize text", "does not restart the context"):
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


def test_a_failed_replacement_keeps_the_old_export(tokenizer, tmp_path, monkeypatch):
    """All or nothing: if the new directory cannot take export_dir's place, the old one goes back."""
    out_dir, export_dir = tmp_path / "out", tmp_path / "export"
    save_checkpoint(out_dir, random_model(tokenizer.vocab_size, "tiny", "rope"), tokenizer, {})
    export_dir.mkdir()
    (export_dir / "mine.txt").write_text("keep me")
    rename = os.rename

    def failing_rename(source, target):
        if os.path.basename(source) == "new":
            raise OSError("no space left on device")
        rename(source, target)
    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="no space left"):
        export.main([f"--out_dir={out_dir}", f"--export_dir={export_dir}", "--overwrite=True"])
    assert os.listdir(export_dir) == ["mine.txt"] and sorted(os.listdir(tmp_path)) == ["export", "out"]


@pytest.mark.parametrize("setting, message", [
    (dict(norm="rmsnorm"), "norm='rmsnorm' cannot be exported"),
    (dict(qk_norm=True), "qk_norm=True cannot be exported"),
    (dict(logit_softcap=15.0), "logit_softcap=15.0 cannot be exported"),
    (dict(value_embeddings=True), "value_embeddings=True cannot be exported"),
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


# -----------------------------------------------------------------------------
# normalization: the exported tokenizer normalizes as ours does

NORMALIZATIONS = [dict(normalize_text=True, remove_diacritics=True), dict(normalize_text=True, remove_diacritics=False),
                  dict(normalize_text=False, remove_diacritics=False)]
CHANGED = sorted(set(TRANSLATION_TABLES[True]) | set(PRESENTATION_FORMS))  # every character the table may change
TO_NORMALIZE = [
    "كتاب", "کتاب", "يك كتاب خوب ى ە ھ ہ",  # Arabic letters and their Persian forms
    "سال ١٤٠٢ و ۱۴۰۲ و 1402",  # Arabic-Indic, Persian and Latin digits
    "کِتابِ مُهِمّ و خانهٔ ما، دَرسً",  # diacritics; the hamza above of خانهٔ stays
    f"می{ZWNJ}{ZWNJ}{ZWNJ}خواهم کتاب{ZWNJ}{ZWNJ}ها",  # runs of ZWNJ
    f"{ZWNJ}کتاب{ZWNJ} {ZWNJ} و{ZWNJ}. {ZWNJ}۱۲ a{ZWNJ}b",  # ZWNJs outside words
    "کتـــــاب و ـ تنها", "\u200d\u200e\u200f\ufeffسلام",  # tatweel, zero-width and direction marks
    "  یک   دو\t\tسه  \n\n\n\n  چهار \u00a0 پنج\u2003شش\u3000هفت \r\n\r\n\r\nهشت\u2028نه  ",  # spaces
    "ﻛﺘﺎﺏ ﺑﺰﺭﮒ ﷲ ﻻ ﷺ ﰀ",  # presentation forms and ligatures
    " ".join(f"ب{chr(code)}ب" for code in CHANGED),
    "Hello,  World!\n\n\n\nIt's   GPT-2.", "", "  \n\n ",
]


@pytest.fixture(scope="module", params=range(len(NORMALIZATIONS)), ids=lambda i: "-".join(
    name for name, on in NORMALIZATIONS[i].items() if on) or "whitespace-only")
def normalizing_tokenizer(request, tmp_path_factory):
    """(ours with a normalization, exported) trained on normalized text."""
    normalization = NORMALIZATIONS[request.param]
    tokenizer = Tokenizer.train([normalize(text, **normalization) for text in TEXTS * 3], vocab_size=600,
                                normalization=normalization)
    directory = tmp_path_factory.mktemp("normalizing") / str(request.param)
    export.export(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=tokenizer.vocab_size)),
                  tokenizer, str(directory))
    return tokenizer, AutoTokenizer.from_pretrained(directory)


@pytest.mark.parametrize("text", TO_NORMALIZE, ids=range(len(TO_NORMALIZE)))
def test_exported_tokenizer_normalizes_as_ours(normalizing_tokenizer, text):
    tokenizer, hf_tokenizer = normalizing_tokenizer
    ids = tokenizer.encode(text)
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    assert hf_tokenizer(text)["input_ids"] == [tokenizer.eot_id] + ids
    assert hf_tokenizer.decode(ids) == tokenizer.decode(ids) == tokenizer.normalize(text)


def test_arabic_and_persian_spellings_give_the_same_ids(normalizing_tokenizer):
    tokenizer, hf_tokenizer = normalizing_tokenizer
    arabic, persian = (hf_tokenizer(text, add_special_tokens=False)["input_ids"] for text in ("كتاب", "کتاب"))
    assert (arabic == persian) == tokenizer.normalization["normalize_text"]


def test_diacritics_are_kept_or_removed_as_set(normalizing_tokenizer):
    tokenizer, hf_tokenizer = normalizing_tokenizer
    kept = hf_tokenizer.decode(hf_tokenizer("کِتاب", add_special_tokens=False)["input_ids"])
    assert kept == ("کتاب" if tokenizer.normalization["remove_diacritics"] else "کِتاب")


def test_model_card_says_how_the_tokenizer_normalizes(normalizing_tokenizer):
    tokenizer, _ = normalizing_tokenizer
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=tokenizer.vocab_size))
    card = export.model_card(model, tokenizer, None, "", "GPTNeoXForCausalLM")
    settings = ", ".join(f"{key}={value}" for key, value in tokenizer.normalization.items())
    assert f"It normalizes text as the training text was ({settings};" in card
    assert ("`كتاب` and `کتاب` give the same ids" in card) == tokenizer.normalization["normalize_text"]


def test_endoftext_is_found_in_the_normalized_text(normalizing_tokenizer):
    """Our encode normalizes the whole text, then finds <|endoftext|>: the spaces beside it stay."""
    tokenizer, hf_tokenizer = normalizing_tokenizer
    text = " يك  <|endoftext|>  دو\n\n\n"
    expected = tokenizer.encode(text, allowed_special="all")
    assert hf_tokenizer(text, add_special_tokens=False)["input_ids"] == expected and tokenizer.eot_id in expected


def test_a_tokenizer_that_does_not_normalize_exports_no_normalizer(any_tokenizer):
    tokenizer, hf_tokenizer = any_tokenizer
    assert tokenizer.normalization is None and hf_tokenizer.backend_tokenizer.normalizer is None
    assert export.hf_tokenizer(tokenizer)["normalizer"] is None


def test_exported_tokenizer_equals_ours_on_real_news(tmp_path):
    """Farsnews writes Arabic ي and ك, so its text needs normalizing; every record gives the same ids."""
    with open(shared_file("persian", "news.jsonl"), encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line, _ in zip(f, range(300))]
    normalization = dict(normalize_text=True, remove_diacritics=True)
    tokenizer = Tokenizer.train([normalize(text, **normalization) for text in texts], vocab_size=2000,
                                normalization=normalization)
    export.export(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=tokenizer.vocab_size)),
                  tokenizer, str(tmp_path / "hf"))
    theirs = AutoTokenizer.from_pretrained(tmp_path / "hf")(texts, add_special_tokens=False)["input_ids"]
    ours = [tokenizer.encode(text) for text in texts]
    assert [i for i in range(len(texts)) if theirs[i] != ours[i]] == []
    assert sum(text != normalize(text, **normalization) for text in texts) > len(texts) / 2  # normalizing mattered


# -----------------------------------------------------------------------------
# generation with transformers

@pytest.mark.parametrize("variant", ["rope", "learned"])
def test_generation_defaults_stop_at_the_end_of_the_context(tokenizer, tmp_path, variant):
    """transformers does not restart the context: with the exported defaults, generate fills it and
    stops there (GPT-2 has no positions past it; NeoX would run on with positions it never saw)."""
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16, block_size=16,
                          **VARIANTS[variant]))
    export.export(model, tokenizer, str(tmp_path / "hf"))
    hf_model, hf_tokenizer = load_exported(tmp_path / "hf")
    prompt = hf_tokenizer("ایران کشوری", return_tensors="pt")
    assert prompt["input_ids"].size(1) < 16
    torch.manual_seed(0)
    with torch.no_grad():  # <|endoftext|> suppressed, so generation runs to its limit
        generated = hf_model.generate(**prompt, suppress_tokens=[tokenizer.eot_id])
    assert generated.shape == (1, 16)


def eot_biased_model(tokenizer, eot_logit_bias):
    """random_model's tiny GPT, with biases and an untied head, whose final hidden state has a channel
    that is always 1 (LayerNorm gain 0, bias 1) and that only <|endoftext|>'s row of the head reads:
    a bias on that token's logit, in both models alike."""
    model = random_model(tokenizer.vocab_size, "tiny", "bias", tie_weights=False)
    with torch.no_grad():
        model.norm_f.weight[0], model.norm_f.bias[0] = 0.0, 1.0
        model.lm_head.weight[:, 0] = 0.0
        model.lm_head.weight[tokenizer.eot_id, 0] = eot_logit_bias
    return model


@pytest.fixture(scope="module")
def eot_biased(tokenizer, tmp_path_factory):
    """(our model, its transformers copy) for a bias on <|endoftext|>'s logit, made once each."""
    cache = {}

    def get(eot_logit_bias):
        if eot_logit_bias not in cache:
            model = eot_biased_model(tokenizer, eot_logit_bias)
            directory = tmp_path_factory.mktemp("beams") / "model"
            export.export(model, tokenizer, str(directory))
            cache[eot_logit_bias] = model, load_exported(directory)[0]
        return cache[eot_logit_bias]
    return get


REACHABLE, UNREACHABLE = 3.0, -1e4  # biases on <|endoftext|>'s logit
BEAM_NEW_TOKENS = 10


def transformers_beam_search(hf_model, prompt_ids, beams, length_penalty, eot_id, early_stopping=False):
    x = torch.tensor([prompt_ids])
    with torch.no_grad():
        generated = hf_model.generate(x, attention_mask=torch.ones_like(x), num_beams=beams, do_sample=False,
                                      length_penalty=length_penalty, early_stopping=early_stopping,
                                      max_new_tokens=BEAM_NEW_TOKENS, eos_token_id=eot_id, pad_token_id=eot_id)
    return generated[0, len(prompt_ids):].tolist()


@pytest.mark.parametrize("eot_logit_bias", [REACHABLE, UNREACHABLE], ids=["eot-reachable", "eot-unreachable"])
@pytest.mark.parametrize("beams", [2, 3, 4])
@pytest.mark.parametrize("length_penalty", [0.5, 1.0, 2.0])
def test_beam_search_equals_transformers(tokenizer, eot_biased, eot_logit_bias, beams, length_penalty):
    """sample.beam_search and transformers' generate(num_beams=...) on the same weights and prompt.

    transformers takes the top 2 * beams candidates of each step; a candidate ending at <|endoftext|>
    becomes a finished hypothesis only if it ranks within the top `beams`, the others go on as the live
    beams, and it keeps the `beams` best finished hypotheses, scored by log-probability / (new tokens,
    <|endoftext|> included) ** length_penalty. With early_stopping=False it stops once every kept slot is
    filled and the best live beam, scored at its present length, cannot beat the worst kept one; with
    "never" it bounds a live beam by the best score its length could reach (at max_new_tokens when
    length_penalty > 0), which is exact. Every case here gives the same tokens both ways, so what is
    compared is the search itself. transformers ends a finished hypothesis with <|endoftext|>;
    beam_search returns none."""
    model, hf_model = eot_biased(eot_logit_bias)
    eot, prompt = tokenizer.eot_id, [tokenizer.eot_id] + tokenizer.encode(PERSIAN[0])
    theirs = transformers_beam_search(hf_model, prompt, beams, length_penalty, eot)
    assert transformers_beam_search(hf_model, prompt, beams, length_penalty, eot, early_stopping="never") == theirs
    ours = sample.beam_search(model, prompt, beams, BEAM_NEW_TOKENS, length_penalty=length_penalty, stop_ids=(eot,))
    assert ours == (theirs[:-1] if theirs[-1] == eot else theirs)
    if eot_logit_bias == UNREACHABLE:
        assert len(ours) == BEAM_NEW_TOKENS


def test_the_bias_on_endoftext_decides_whether_beams_end_there(tokenizer, eot_biased):
    """Reachable, <|endoftext|> ends the best hypothesis for some beam widths and length penalties and
    not for others (a longer one wins); unreachable, its log-probability is negligible."""
    eot, prompt = tokenizer.eot_id, [tokenizer.eot_id] + tokenizer.encode(PERSIAN[0])
    _, hf_model = eot_biased(REACHABLE)
    endings = {transformers_beam_search(hf_model, prompt, beams, length_penalty, eot)[-1] == eot
               for beams in (2, 3, 4) for length_penalty in (0.5, 1.0, 2.0)}
    assert endings == {True, False}
    model, _ = eot_biased(UNREACHABLE)
    with torch.no_grad():
        assert torch.log_softmax(model(torch.tensor([prompt]))[0][0, -1], dim=-1)[eot] < -1000
