import hashlib
import json
import math

import numpy as np
import pytest
import torch

import eval as evaluate
from bpe import Tokenizer
from common import UsageError
from conftest import PERSIAN
from model import GPT, GPTConfig

def tiny_model(vocab_size, pos_emb="rope", block_size=16, seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(block_size=block_size, vocab_size=vocab_size, n_layer=2, n_head=2, n_embd=32,
                         pos_emb=pos_emb)).eval()


def save_checkpoint(out_dir, model, tokenizer):
    tokenizer_json = tokenizer.to_json()
    torch.save({"model_args": vars(model.config), "model": model.state_dict(), "iter_num": 7,
                "tokenizer": tokenizer_json,
                "tokenizer_sha256": hashlib.sha256(tokenizer_json.encode()).hexdigest()},
               out_dir / "ckpt.pt")


# -----------------------------------------------------------------------------
# ROUGE and diversity

@pytest.mark.parametrize("text", PERSIAN + ["کِتابِ خوبی", "۱۲۳ و 456 apples"])
def test_rouge_of_identical_persian_text_is_one(text):
    assert evaluate.rouge([text], [text]) == {"rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0}


@pytest.mark.parametrize("reference, prediction", [
    ("ایران کشوری در آسیا", "می‌خواهم کتاب‌ها بخوانم"),
    ("می‌خواهم", "می خواهم"),  # ZWNJ is part of the word: the half-spaced word is a different word
    ("۱۴۰۲", "1402"),
])
def test_rouge_of_disjoint_text_is_zero(reference, prediction):
    assert evaluate.rouge([reference], [prediction]) == {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}


def test_rouge_counts_partial_overlap():
    scores = evaluate.rouge(["تهران پایتخت ایران است"], ["تهران شهر بزرگ ایران است"])
    assert scores["rouge1"] == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert scores["rouge2"] == pytest.approx(2 * (1 / 4) * (1 / 3) / (1 / 4 + 1 / 3))


def test_words_keep_persian_letters_marks_digits_and_zwnj():
    assert evaluate.words("«می‌خواهم» کِتاب‌ها را، در ۱۴۰۲ Read!") == [
        "می‌خواهم", "کِتاب‌ها", "را", "در", "۱۴۰۲", "read"]


@pytest.mark.parametrize("reference, prediction", [
    *((text, text) for text in PERSIAN),
    ("۱۲۳ و 456 apples و ١٢٣ و کِتابِ خوبی", "۱۲۳ و 456 apples و ١٢٣ و کِتابِ خوبی"),
    ("«شاهنامه» را خوانده‌ای؟ آری، خوانده‌ام.", "« شاهنامه » را خوانده‌ای ؟ آری ، خوانده‌ام ."),  # spaced punctuation
])
def test_bleu_and_chrf_of_the_same_words_are_100(reference, prediction):
    scores, signatures = evaluate.bleu_chrf([reference], [prediction])
    assert scores == pytest.approx({"bleu": 100, "chrf": 100})  # chrF ignores spaces
    assert "tok:intl" in signatures["bleu"] and "nrefs:1" in signatures["chrf"]


@pytest.mark.parametrize("text, tokens", [
    ("می‌خواهم کتاب‌ها را بخوانم.", ["می‌خواهم", "کتاب‌ها", "را", "بخوانم", "."]),
    ("«شاهنامه» را خوانده‌ای؟", ["«", "شاهنامه", "»", "را", "خوانده‌ای", "؟"]),
    ("تهران، پایتخت؛ کِتابِ خانهٔ ما", ["تهران", "،", "پایتخت", "؛", "کِتابِ", "خانهٔ", "ما"]),
])
def test_bleu_tokenizer_keeps_persian_words_whole(text, tokens):
    from sacrebleu.metrics import BLEU
    assert BLEU(tokenize=evaluate.BLEU_TOKENIZE).tokenizer(text).split() == tokens


@pytest.mark.parametrize("prediction", [
    "ایران کشوری در شرق آسیا است و پایتخت آن تهران است.",  # one word changed
    "ایران کشوری در غرب آسیا است و پایتخت آن شیراز است.",
])
@pytest.mark.parametrize("reference", ["ایران کشوری در غرب آسیا است و پایتخت آن تهران است."])
def test_a_changed_word_lowers_bleu_and_chrf(reference, prediction):
    scores, _ = evaluate.bleu_chrf([reference], [prediction])
    assert 0 < scores["bleu"] < 90 and 0 < scores["chrf"] < 95


def test_a_zwnj_word_is_not_its_two_halves():
    reference = "می‌خواهم کتاب‌ها را امروز بخوانم"
    spaced, _ = evaluate.bleu_chrf([reference], ["می خواهم کتاب ها را امروز بخوانم"])
    assert spaced["bleu"] < 40  # only را امروز بخوانم match


def test_distinct_and_repeated_ngrams():
    loop = "الف ب پ الف ب پ"  # bigrams: الف-ب, ب-پ, پ-الف, الف-ب, ب-پ
    assert evaluate.distinct([loop], 1) == pytest.approx(3 / 6)
    assert evaluate.distinct([loop], 2) == pytest.approx(3 / 5)
    assert evaluate.repeated_share([loop], 2) == pytest.approx(2 / 5)
    assert evaluate.repeated_share([loop, "ت ث ج"], 2) == pytest.approx(2 / 7)
    assert evaluate.repeated_share(["ت ث ج"], 2) == 0.0


@pytest.mark.parametrize("repeat_n, share", [(2, 2 / 5), (3, 1 / 4), (4, 0.0)])
def test_diversity_counts_repeats_of_repeat_n_words(repeat_n, share):
    loop = "الف ب پ الف ب پ"  # 3-grams: الف-ب-پ, ب-پ-الف, پ-الف-ب, الف-ب-پ; its 4-grams are all new
    assert evaluate.diversity([loop], repeat_n) == pytest.approx(
        {"distinct_1": 3 / 6, "distinct_2": 3 / 5, f"repeated_{repeat_n}gram_share": share})


def test_continuation_owns_the_character_the_prompt_left_unfinished():
    tokenizer = Tokenizer([])  # one token per byte
    ids = tokenizer.encode("سلام دنیا")
    assert evaluate.continuation_text(tokenizer, ids[:3], ids[3:]) == "لام دنیا"  # 3 bytes: س and half of ل


# -----------------------------------------------------------------------------
# exact likelihood

@pytest.mark.parametrize("num_tokens, context, stride", [
    (2, 8, 4), (9, 8, 4), (10, 8, 4), (50, 8, 1), (50, 8, 3), (50, 8, 8), (7, 8, 8), (33, 8, 5)])
def test_windows_score_every_token_once_with_enough_context(num_tokens, context, stride):
    scored = []
    for begin, first_scored, end in evaluate.sliding_windows(num_tokens, context, stride):
        assert end - begin == min(context, num_tokens - 1)  # every window is full
        assert first_scored - begin >= min(first_scored, context - stride + 1)  # tokens of context
        scored += range(first_scored, end + 1)
    assert scored == list(range(1, num_tokens))


def test_bits_per_byte_by_hand():
    assert evaluate.bits_per_byte(8 * math.log(2), 4) == pytest.approx(2.0)


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
@pytest.mark.parametrize("stride", [1, 5, 16])
def test_sliding_nll_equals_one_full_pass_when_text_fits(pos_emb, stride):
    model = tiny_model(50, pos_emb, block_size=16)
    tokens = np.random.default_rng(0).integers(0, 50, size=17)
    nll = evaluate.token_nll(model, tokens, stride)
    x, y = torch.from_numpy(tokens[None, :-1]), torch.from_numpy(tokens[None, 1:])
    with torch.no_grad():
        _, mean_loss = model(x, y)
    assert nll.shape == (16,) and nll.sum() == pytest.approx(16 * mean_loss.item(), rel=1e-5)


@pytest.mark.parametrize("pos_emb", ["rope", "learned"])
def test_each_token_is_scored_as_its_window_reads_it(pos_emb):
    model = tiny_model(50, pos_emb, block_size=8)
    tokens = np.random.default_rng(1).integers(0, 50, size=30)

    @torch.no_grad()
    def nll(i, begin):  # token i's, read after tokens[begin:i] alone
        return -torch.log_softmax(model(torch.from_numpy(tokens[None, begin:i]))[0][0, -1], -1)[tokens[i]].item()
    expected = [nll(i, max(0, i - 8)) for i in range(1, 30)]
    assert evaluate.token_nll(model, tokens, stride=1, batch_size=5) == pytest.approx(expected, rel=1e-5)
    for stride in (3, 8):  # each token as its window reads it, from the window's start, whatever the batch size
        expected = [nll(i, begin) for begin, first_scored, end in evaluate.sliding_windows(30, 8, stride)
                    for i in range(first_scored, end + 1)]
        assert evaluate.token_nll(model, tokens, stride, batch_size=2) == pytest.approx(expected, rel=1e-5)


# -----------------------------------------------------------------------------
# the command line

def test_uniform_model_bits_per_byte_by_hand(tmp_path):
    """A model whose logits are all 0 spends log2(257) bits on every token of a byte tokenizer."""
    tokenizer = Tokenizer([])  # 256 bytes + <|endoftext|>
    model = tiny_model(tokenizer.vocab_size)
    with torch.no_grad():
        model.wte.weight.zero_()  # tied with the output head: every logit is 0
    save_checkpoint(tmp_path, model, tokenizer)
    data = tmp_path / "two.jsonl"  # Arabic yeh/kaf and a double space: normalised away before scoring
    data.write_text('{"text": "سلام  دنيا"}\n{"text": "كتاب"}\n', encoding="utf-8")
    evaluate.main([f"--out_dir={tmp_path}", f"--jsonl={data}", "--rouge_docs=0"])
    results = json.loads((tmp_path / "eval_two.json").read_text(encoding="utf-8"))["results"]
    # "سلام دنیا" is 8 letters of 2 bytes + a space, "کتاب" 4 letters: 25 bytes, 3 words,
    # 25 byte tokens + 2 <|endoftext|> scored (the first document reads an extra one as context)
    assert (results["bytes"], results["words"], results["tokens"]) == (25, 3, 27)
    assert results["bits_per_byte"] == pytest.approx(27 * math.log2(257) / 25)
    assert results["word_perplexity"] == pytest.approx(257 ** 9, rel=1e-6)
    assert results["perplexity"] == pytest.approx(257, rel=1e-6)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A checkpoint and a prepare.py-style data folder made with the same tokenizer."""
    root = tmp_path_factory.mktemp("eval")
    tokenizer = Tokenizer.train(PERSIAN * 3, vocab_size=300)
    save_checkpoint(root, tiny_model(tokenizer.vocab_size, "learned", block_size=32), tokenizer)
    tokenizer.save(root / "tokenizer.json")
    stream = []
    for text in PERSIAN * 2:
        stream += tokenizer.encode(text) + [tokenizer.eot_id]
    np.array(stream, dtype=np.uint16).tofile(root / "val.bin")
    return root, tokenizer, len(stream)


def test_report_from_token_file(prepared):
    root, tokenizer, num_tokens = prepared
    evaluate.main([f"--out_dir={root}", f"--data={root / 'val.bin'}", "--rouge_docs=3", "--prompt_tokens=4",
                   "--reference_tokens=6", "--stride=8", f"--report={root / 'r.json'}"])
    report = json.loads((root / "r.json").read_text(encoding="utf-8"))
    results = report["results"]
    assert results["tokens"] == num_tokens  # every token, the first read after an extra <|endoftext|>
    assert results["bytes"] == sum(len(text.encode()) for text in PERSIAN * 2)
    assert results["words"] == sum(len(text.split()) for text in PERSIAN * 2)
    assert results["perplexity"] == pytest.approx(math.exp(results["cross_entropy"]))
    assert results["bits_per_byte"] == pytest.approx(
        results["cross_entropy"] * num_tokens / math.log(2) / results["bytes"])
    assert 0 <= results["rouge1"] <= 1 and 0 < results["distinct_1"] <= 1
    examples = report["generation"]["examples"]  # all three continuations
    references, generated = [e["reference"] for e in examples], [e["generated"] for e in examples]
    scores, signatures = evaluate.bleu_chrf(references, generated)
    assert (results["bleu"], results["chrf"]) == (scores["bleu"], scores["chrf"])
    assert {key: results[key] for key in ("rouge1", "rouge2", "rougeL")} == evaluate.rouge(references, generated)
    assert report["generation"]["sacrebleu_signatures"] == signatures
    assert report["generation"]["documents"] == 3 and report["generation"]["prompt_tokens"] == 4
    assert report["stride"] == 8 and report["iter_num"] == 7


@pytest.mark.parametrize("normalization, expected", [
    (None, "\u06cc\u06a9 \u06f1\u06f2"),  # none recorded: prepare.py's default, Persian ی ک and digits
    ({"normalize_text": True, "remove_diacritics": True}, "\u06cc\u06a9 \u06f1\u06f2"),
    ({"normalize_text": False, "remove_diacritics": True}, "\u064a\u0643 \u0661\u0662"),
])
def test_text_is_normalized_as_the_training_text_was(prepared, tmp_path, normalization, expected):
    _, trained, _ = prepared
    tokenizer = Tokenizer.from_json(trained.to_json())
    tokenizer.normalization = normalization  # the settings the training text was prepared with
    path = tmp_path / "arabic.jsonl"
    path.write_text(json.dumps({"text": "\u064a\u0643   \u0661\u0662"}) + "\n", encoding="utf-8")
    stream = evaluate.encode_text_file(str(path), tokenizer, 0)
    assert stream.tolist() == tokenizer.encode(expected) + [tokenizer.eot_id]


def test_repeat_n_chooses_the_repeated_ngrams_reported(prepared, tmp_path):
    root, tokenizer, _ = prepared
    (tmp_path / "tokenizer.json").write_bytes((root / "tokenizer.json").read_bytes())
    loop = " ".join(["الف ب پ"] * 12)  # documents that repeat themselves: their 2-grams recur, their 4-grams too
    ids = [i for _ in range(3) for i in tokenizer.encode(loop) + [tokenizer.eot_id]]
    np.array(ids, dtype=np.uint16).tofile(tmp_path / "loop.bin")
    evaluate.main([f"--out_dir={root}", f"--data={tmp_path / 'loop.bin'}", "--rouge_docs=3", "--prompt_tokens=4",
                   "--reference_tokens=20", "--repeat_n=2", f"--report={tmp_path / 'r.json'}"])
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    results, examples = report["results"], report["generation"]["examples"]
    references = [example["reference"] for example in examples]
    generated = [example["generated"] for example in examples]
    assert len(examples) == 3 and "repeated_4gram_share" not in results
    assert results["reference_repeated_2gram_share"] == pytest.approx(evaluate.repeated_share(references, 2))
    assert results["reference_repeated_2gram_share"] > evaluate.repeated_share(references, 4) > 0
    assert results["repeated_2gram_share"] == pytest.approx(evaluate.repeated_share(generated, 2))


def test_max_tokens_bounds_the_evaluation(prepared, tmp_path):
    root, _, _ = prepared
    evaluate.main([f"--out_dir={root}", f"--data={root / 'val.bin'}", "--max_tokens=20", "--rouge_docs=0",
                   f"--report={tmp_path / 'r.json'}"])
    assert json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["results"]["tokens"] == 20


def test_data_from_another_tokenizer_is_refused(prepared, tmp_path):
    root, _, _ = prepared
    Tokenizer.train(["a different corpus altogether"] * 3, vocab_size=270).save(tmp_path / "tokenizer.json")
    (tmp_path / "val.bin").write_bytes((root / "val.bin").read_bytes())
    with pytest.raises(UsageError, match="not the checkpoint's tokenizer"):
        evaluate.main([f"--out_dir={root}", f"--data={tmp_path / 'val.bin'}"])
    assert not list(root.glob("eval_*.json"))


def test_token_ids_beyond_the_vocabulary_are_refused(prepared, tmp_path):
    root, tokenizer, _ = prepared
    (tmp_path / "tokenizer.json").write_bytes((root / "tokenizer.json").read_bytes())
    np.array([1, 2, tokenizer.vocab_size + 5], dtype=np.uint16).tofile(tmp_path / "val.bin")
    with pytest.raises(UsageError, match="beyond the checkpoint's vocabulary"):
        evaluate.main([f"--out_dir={root}", f"--data={tmp_path / 'val.bin'}"])


@pytest.mark.parametrize("args, message", [
    ([], "records no data_dir: give one of"),
    (["--data=a.bin", "--text=b.txt"], "give one of"),
    (["--data_dir=nowhere"], "no test.bin or val.bin in nowhere"),
    (["--text=missing.txt"], "no such file"),
    (["--stride=1000"], "stride 1000 is longer than the context"),
    *[([f"--{key}=-1"], "stride, max_tokens and rouge_docs must be >= 0")
      for key in ("stride", "max_tokens", "rouge_docs")],
    *[([f"--{key}=0"], "reference_tokens and repeat_n >= 1") for key in ("batch_size", "repeat_n")],
])
def test_bad_inputs_are_usage_errors(prepared, args, message):
    root, _, _ = prepared
    with pytest.raises(UsageError, match=message):
        evaluate.main([f"--out_dir={root}", *args])


@pytest.mark.parametrize("split_files, args, scored", [
    (("test", "val"), [], "test"),  # the checkpoint's data_dir, its test split first
    (("val",), [], "val"),  # prepared without a test split
    (("test", "val"), ["--data_dir={data_dir}"], "test"),
    (("test", "val"), ["--data={data_dir}/val.bin"], "val"),
])
def test_test_split_is_scored_by_default(prepared, tmp_path, capsys, split_files, args, scored):
    root, tokenizer, _ = prepared
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "tokenizer.json").write_bytes((root / "tokenizer.json").read_bytes())
    lengths = {}
    for split, texts in zip(split_files, (PERSIAN[:1], PERSIAN[1:])):  # test and val hold different text
        ids = [i for text in texts for i in tokenizer.encode(text) + [tokenizer.eot_id]]
        np.array(ids, dtype=np.uint16).tofile(data_dir / f"{split}.bin")
        lengths[split] = len(ids)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    ckpt = torch.load(root / "ckpt.pt", weights_only=True)
    torch.save({**ckpt, "config": {"data_dir": str(data_dir)}}, out_dir / "ckpt.pt")
    evaluate.main([f"--out_dir={out_dir}", "--rouge_docs=0", *(a.format(data_dir=data_dir) for a in args)])
    report = json.loads((out_dir / f"eval_{scored}.json").read_text(encoding="utf-8"))
    assert report["split"] == scored and report["input"]["data"] == str(data_dir / f"{scored}.bin")
    assert report["results"]["tokens"] == lengths[scored]
    assert f"on the {scored} split, {data_dir / scored}.bin" in capsys.readouterr().out


def test_int8_weights_score_close_to_fp32(prepared, tmp_path):
    root, _, _ = prepared
    common = [f"--out_dir={root}", f"--data={root / 'val.bin'}", "--rouge_docs=2", "--prompt_tokens=4",
              "--reference_tokens=6", "--device=cpu"]
    reports = {}
    for scheme in ("none", "int8"):
        evaluate.main(common + [f"--quantize={scheme}", f"--report={tmp_path / scheme}.json"])
        reports[scheme] = json.loads((tmp_path / f"{scheme}.json").read_text(encoding="utf-8"))
    assert reports["int8"]["quantize"] == "int8" and reports["none"]["quantize"] == "none"
    fp32, int8 = reports["none"]["results"], reports["int8"]["results"]
    assert int8["cross_entropy"] != fp32["cross_entropy"]
    assert int8["cross_entropy"] == pytest.approx(fp32["cross_entropy"], rel=1e-3)
    assert reports["int8"]["generation"]["documents"] == 2
