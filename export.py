"""
Export a checkpoint as a Hugging Face transformers model directory that loads with no custom code.

    python export.py --out_dir=out-fawiki-small --export_dir=hf/fawiki-small

    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokenizer, model = AutoTokenizer.from_pretrained("hf/fawiki-small"), AutoModelForCausalLM.from_pretrained("hf/fawiki-small")
    print(tokenizer.decode(model.generate(**tokenizer("ایران کشوری است", return_tensors="pt"))[0], skip_special_tokens=True))

The directory holds config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
generation_config.json and a model card, README.md. No transformers architecture is "our GPT",
but two compute it exactly:

- rotary positions (the default): GPT-NeoX with sequential residuals (use_parallel_residual=False:
  x + attn(ln1(x)), then + mlp(ln2(x)), our pre-norm block), rotary on every channel of a head
  (rotary_pct=1) with the same half-split rotation and frequencies, exact GELU, and zero biases
  where we have none. NeoX lays out its fused query/key/value projection head by head (q, k, v of
  head 0, then of head 1 ...); ours is all queries, then all keys, then all values, so its rows are
  reordered. Llama-family models would need RMSNorm and a gated MLP, which we do not have.
- learned positions: GPT-2, whose Conv1D layers store each matrix transposed.

Settings no architecture computes exactly (norm="rmsnorm", qk_norm=True, logit_softcap,
value_embeddings) stop with an error.
The tokenizer normalizes text as ours does (bpe.normalize), written as tokenizers' normalizers, so
transformers users encode the text the model was trained on. Generation stops at the end of the
context: transformers does not restart it as sample.py does. Weights are written in the safetensors
format by write_safetensors below (an 8-byte length, a JSON header, raw little-endian tensors), so
exporting needs nothing beyond torch.
"""

import glob
import json
import os
import pathlib
import shutil
import sys
import tempfile

import torch

import bpe
import common
import sample
from model import load_checkpoint

DEFAULTS = dict(
    out_dir="out-fawiki-small",  # folder holding ckpt.pt; its eval_*.json reports go into the model card
    export_dir="",  # the transformers model directory to write; empty = hf/<name of out_dir>
    overwrite=False,  # replace export_dir if it exists and is not empty
)
SAFETENSORS_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
EVALUATION_COLUMNS = ("tokens", "cross_entropy", "perplexity", "bits_per_byte", "bleu", "chrf")  # of eval.py's results


# -----------------------------------------------------------------------------
# weights

def hf_weights(model, embeddings, blocks, layer_names, final_norm, head, transpose=False):
    """{their name: tensor}: our embeddings (named in `embeddings`), each block's LayerNorms and
    Linears (block i's under f"{blocks}.{i}.", named in `layer_names`), the final norm and an untied
    output head. Their LayerNorms and Linears always have a bias: zeros where ours has none
    (bias=False). transpose: a matrix goes in as GPT-2's Conv1D layers store it, (in, out); t()
    leaves a LayerNorm's vector as it is."""
    c, state = model.config, model.state_dict()
    tensors = {f"{theirs}.weight": state[f"{ours}.weight"] for ours, theirs in embeddings.items()}
    names = [(f"blocks.{i}.{ours}", f"{blocks}.{i}.{theirs}") for i in range(c.n_layer) for ours, theirs in layer_names]
    for ours, theirs in [*names, ("norm_f", final_norm)]:
        weight = state[f"{ours}.weight"]
        tensors[f"{theirs}.weight"] = weight.t() if transpose else weight
        tensors[f"{theirs}.bias"] = state.get(f"{ours}.bias", weight.new_zeros(weight.size(0)))
    if not c.tie_weights:
        tensors[f"{head}.weight"] = state["lm_head.weight"]
    return tensors


def model_files(model, eot_id):
    """(config.json as a dict, {name: tensor}) of the transformers model equal to `model`:
    GPTNeoXForCausalLM computing the rotary GPT, GPT2LMHeadModel the GPT with learned positions."""
    c = model.config
    # GPT-NeoX and GPT-2 use LayerNorm, do not normalise queries and keys, take values from the
    # hidden state alone and leave the logits as they are
    unexportable = {f"norm={c.norm!r}": c.norm != "layernorm", "qk_norm=True": c.qk_norm,
                    f"logit_softcap={c.logit_softcap}": bool(c.logit_softcap),
                    "value_embeddings=True": c.value_embeddings}
    refused = [setting for setting, used in unexportable.items() if used]
    if refused:
        raise common.UsageError(f"{refused[0]} cannot be exported: no transformers architecture computes it exactly")
    # transformers' "gelu" is the exact (erf) GELU, like F.gelu; its "relu2" is squared ReLU, like ours
    if c.pos_emb == "rope":
        # the untied head is embed_out, the name every transformers version reads
        tensors = hf_weights(model, {"wte": "gpt_neox.embed_in"}, "gpt_neox.layers",
                             (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm"),
                              ("attn.qkv", "attention.query_key_value"), ("attn.proj", "attention.dense"),
                              ("mlp.fc", "mlp.dense_h_to_4h"), ("mlp.proj", "mlp.dense_4h_to_h")),
                             "gpt_neox.final_layer_norm", "embed_out")
        # rows of our fused projection [all q; all k; all v] -> NeoX's [q, k, v of head 0; of head 1; ...]
        for name in [name for name in tensors if ".query_key_value." in name]:
            tensors[name] = tensors[name].unflatten(0, (3, c.n_head, -1)).transpose(0, 1).flatten(0, 2)
        fields = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox", "hidden_size": c.n_embd,
                  "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "intermediate_size": 4 * c.n_embd,
                  "max_position_embeddings": c.block_size, "rotary_pct": 1.0, "rotary_emb_base": 10000,
                  "use_parallel_residual": False, "attention_bias": True, "layer_norm_eps": 1e-5,
                  "attention_dropout": 0.0, "hidden_dropout": 0.0, "hidden_act": c.mlp}
    else:
        tensors = hf_weights(model, {"wte": "transformer.wte", "wpe": "transformer.wpe"}, "transformer.h",
                             (("norm1", "ln_1"), ("norm2", "ln_2"), ("attn.qkv", "attn.c_attn"),
                              ("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")),
                             "transformer.ln_f", "lm_head", transpose=True)
        fields = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
                  "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": 4 * c.n_embd,
                  "n_positions": c.block_size, "layer_norm_epsilon": 1e-5, "scale_attn_weights": True,
                  "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "activation_function": c.mlp}
    fields.update({"vocab_size": c.vocab_size, "tie_word_embeddings": c.tie_weights,
                   "bos_token_id": eot_id, "eos_token_id": eot_id, "use_cache": True,
                   "torch_dtype": str(model.wte.weight.dtype).removeprefix("torch.")})
    return fields, tensors


def write_safetensors(path, tensors):
    """Write {name: tensor} in the safetensors format: an 8-byte little-endian header length, a
    JSON header giving each tensor's dtype, shape and byte range, then the raw bytes in that order."""
    if sys.byteorder != "little":
        raise common.UsageError("safetensors stores little-endian bytes; this machine is big-endian")
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        blobs.append(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(blobs[-1])]}
        offset += len(blobs[-1])
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the tensors start 8-byte aligned
    with open(path, "wb") as f:
        f.writelines([len(text).to_bytes(8, "little"), text, *blobs])


# -----------------------------------------------------------------------------
# tokenizer

def byte_characters():
    """GPT-2's printable stand-in for each byte, the alphabet of byte-level BPE files: bytes that
    are printable Latin-1 characters other than the space (GPT-2's ranges ! to ~, ¡ to ¬ and ® to ÿ)
    stand for themselves, the other 68 take chars 256, 257, ... in byte order."""
    others = iter(range(256, 512))
    return {b: chr(b) if chr(b).isprintable() and b != ord(" ") else chr(next(others)) for b in range(256)}


def hf_normalizer(normalization):
    """bpe.normalize with these settings (None: no normalization) as tokenizers' normalizers, step
    for step. The character table becomes one Replace per string it gives, of the class of characters
    that become that string; no string it gives holds a character it changes, so this equals its
    str.translate. Then the ZWNJ rules and collapse_whitespace's substitutions, with bpe's own
    patterns (Onig reads them as the regex module does), and its strip."""
    if normalization is None:
        return None
    steps = []
    if normalization["normalize_text"]:
        sources = {}  # string -> the characters the table turns into it
        for code, letters in bpe.TRANSLATION_TABLES[normalization["remove_diacritics"]].items():
            sources[letters] = sources.get(letters, "") + chr(code)
        steps += [(f"[{characters}]", letters) for letters, characters in sources.items()]
        steps += [(bpe.ZWNJ_RUN.pattern, "\u200c"), (bpe.ZWNJ_OUTSIDE_WORD.pattern, "")]
    steps += [(bpe.OTHER_SPACE.pattern, " "), (bpe.SPACE_RUN.pattern, " "),
              (bpe.SPACE_AT_LINE_EDGE.pattern, "\n"), (bpe.BLANK_LINES.pattern, "\n\n")]
    replaces = [{"type": "Replace", "pattern": {"Regex": pattern}, "content": content} for pattern, content in steps]
    return {"type": "Sequence", "normalizers": [*replaces, {"type": "Strip", "strip_left": True, "strip_right": True}]}


def hf_tokenizer(tokenizer):
    """Our tokenizer in the Hugging Face tokenizers JSON format: our normalization, our split pattern
    as a Split pre-tokenizer, bytes mapped to characters, our merges in rank order, <|endoftext|> as a
    special token put before every text (a document starts after one, as in training) and a byte-level
    decoder. <|endoftext|> is found in the normalized text, as our encode finds it."""
    chars = byte_characters()
    strings = ["".join(chars[b] for b in tokenizer.token_bytes[i]) for i in range(256 + len(tokenizer.merges))]
    vocab = {token: i for i, token in enumerate(strings)}
    if len(vocab) < len(strings):  # a BPE can reach the same bytes by two merge paths; HF keeps one id per string
        i = next(i for i, token in enumerate(strings) if vocab[token] != i)  # the first of two such ids
        raise common.UsageError(f"tokens {i} and {vocab[strings[i]]} are the same bytes {tokenizer.token_bytes[i]!r}: "
                                f"the transformers tokenizer format cannot hold both")
    specials = [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": True, "special": True} for token, i in tokenizer.special_tokens.items()]
    eot = {"SpecialToken": {"id": bpe.EOT, "type_id": 0}}
    text_a, text_b = ({"Sequence": {"id": sequence, "type_id": i}} for i, sequence in enumerate("AB"))
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials,
        "normalizer": hf_normalizer(tokenizer.normalization),
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tokenizer.pattern_text}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing", "single": [eot, text_a], "pair": [eot, text_a, eot, text_b],
                           "special_tokens": {bpe.EOT: {"id": bpe.EOT, "ids": [tokenizer.eot_id],
                                                        "tokens": [bpe.EOT]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "vocab": {**vocab, **tokenizer.special_tokens},  # tokenizers' defaults for the
                  "merges": [[strings[left], strings[right]] for left, right in tokenizer.merges]},  # rest: plain BPE
    }


# -----------------------------------------------------------------------------
# the directory

def generation_config(eot_id, block_size):
    """sample.py's default decoding, in transformers' terms. transformers does not restart the context
    as sample.py does, so generation stops at its end: max_length counts the prompt, and a prompt that
    fills the context gets transformers' error rather than positions the model never saw."""
    return {"bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": eot_id, "max_length": block_size,
            "do_sample": not sample.DEFAULTS["greedy"],
            **{key: sample.DEFAULTS[key] for key in ("temperature", "top_k", "top_p", "repetition_penalty")}}


def figure(value):
    return f"{value:,.4f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def table(title, header, rows):
    """A section of the model card holding a Markdown table; none without rows."""
    return [f"## {title}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|",
            *("| " + " | ".join(map(figure, row)) + " |" for row in rows), ""] if rows else []


def evaluation_row(path):
    """A row of the model card's evaluation table, from one of eval.py's JSON reports."""
    report = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    name = os.path.basename(next(iter(report.get("input", {}).values()), path))
    split = f" ({report['split']} split)" if report.get("split") else ""
    return [f"`{name}`{split}", *(report.get("results", {}).get(key, "") for key in EVALUATION_COLUMNS)]


def model_card(model, tokenizer, ckpt, out_dir, architecture):
    """README.md: what the model is, from the checkpoint, prepare.py's meta.json and eval.py's reports."""
    c, ckpt, normalization = model.config, ckpt or {}, tokenizer.normalization
    config = ckpt.get("config") or {}
    lines = ["---", "language: fa", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [gpt, persian, from-scratch]", "---", "", "# A small Persian GPT", "",
             f"A {model.num_params() / 1e6:.2f} M-parameter GPT trained from scratch, exported as `{architecture}`: "
             f"{c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, context {c.block_size} tokens, {c.pos_emb} "
             f"positions, pre-norm LayerNorm, {c.mlp} MLP, {'tied' if c.tie_weights else 'untied'} output head.", "",
             "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             'tokenizer, model = AutoTokenizer.from_pretrained("."), AutoModelForCausalLM.from_pretrained(".")',
             'print(tokenizer.decode(model.generate(**tokenizer("ایران کشوری است", return_tensors="pt"))[0], '
             'skip_special_tokens=True))', "```", "", "## Tokenizer", "",
             f"Byte-level BPE of {tokenizer.vocab_size:,} ids that keeps Persian words (letters, diacritics, ZWNJ) "
             "whole and digits in threes, and puts `<|endoftext|>` before every text, as training did.", "",
             "It does not normalize text, as the training text was not." if normalization is None else
             f"It normalizes text as the training text was ({', '.join(f'{k}={v}' for k, v in normalization.items())}"
             "; normalize_text: Persian ی ک and digits for Arabic ones, letters for presentation forms, no kashida, "
             "ZWNJ only inside words; remove_diacritics: no short vowels; always: whitespace tidied)."
             + (" So `كتاب` and `کتاب` give the same ids." if normalization["normalize_text"] else ""), "",
             "## Generation", "",
             f"`generate` stops at the end of the context, {c.block_size} tokens counting the prompt (`max_length`): "
             "transformers does not restart the context as sample.py does. Other settings: sample.py's defaults.", ""]
    meta_path = os.path.join(config["data_dir"], "meta.json") if config.get("data_dir") else ""
    meta = json.loads(pathlib.Path(meta_path).read_text(encoding="utf-8")) if os.path.isfile(meta_path) else {}
    inputs = ", ".join(f"`{os.path.basename(i.get('path') or i.get('url', ''))}`" for i in meta.get("inputs", []))
    lines += table(f"Data (from {inputs})" if inputs else "Data", ["split", "documents", "tokens", "bytes of text"],
                   [[split, n["documents"], n["tokens"], n["bytes"]] for split, n in meta.get("splits", {}).items()])
    training = {"steps": ckpt.get("iter_num"), "training time (s)": ckpt.get("train_seconds"),
                "best val loss": ckpt.get("best_val_loss"), **{key: config.get(key) for key in (
                    "batch_size", "gradient_accumulation_steps", "learning_rate", "optimizer", "lr_schedule", "seed")}}
    lines += table("Training", ["", ""], [[key, value] for key, value in training.items() if value is not None])
    reports = sorted(glob.glob(os.path.join(out_dir, "eval_*.json"))) if out_dir else []
    lines += table("Evaluation (eval.py)", ["input", *EVALUATION_COLUMNS], list(map(evaluation_row, reports)))
    return "\n".join(lines)


def export(model, tokenizer, export_dir, overwrite=False, ckpt=None, out_dir=""):
    """Write the transformers directory for model and tokenizer into export_dir, all or nothing."""
    if tokenizer.eot_id is None:
        raise common.UsageError("the tokenizer has no <|endoftext|> token")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise common.UsageError(f"export_dir {export_dir} is a file")
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        raise common.UsageError(f"export_dir {export_dir} is not empty (use --overwrite=True to replace it)")
    fields, tensors = model_files(model, tokenizer.eot_id)
    files = {"config.json": fields, "tokenizer.json": hf_tokenizer(tokenizer),
             "tokenizer_config.json": {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": bpe.EOT,
                                       "eos_token": bpe.EOT, "pad_token": bpe.EOT,
                                       "model_max_length": model.config.block_size,
                                       "clean_up_tokenization_spaces": False,
                                       # no token_type_ids: NeoX's generate refuses them, GPT-2 adds them to its input
                                       "model_input_names": ["input_ids", "attention_mask"]},
             "generation_config.json": generation_config(tokenizer.eot_id, model.config.block_size),
             "README.md": model_card(model, tokenizer, ckpt, out_dir, fields["architectures"][0])}
    parent, name = os.path.split(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(dir=parent, prefix=f".{name}.")  # the new directory is written in here
    try:
        new = os.path.join(work, "new")
        os.mkdir(new)  # with the usual permissions, where mkdtemp's are private
        write_safetensors(os.path.join(new, "model.safetensors"), tensors)
        for file_name, content in files.items():
            with open(os.path.join(new, file_name), "w", encoding="utf-8") as f:
                f.write(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, indent=2))
        old = os.path.join(work, "old")
        if os.path.isdir(export_dir):  # the old one moves aside (to be deleted) only once the new one is whole
            os.rename(export_dir, old)
        try:
            os.rename(new, export_dir)
        except OSError:  # all or nothing: the old one goes back
            if os.path.isdir(old):
                os.rename(old, export_dir)
            raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    config = common.parse_config(DEFAULTS, argv)
    model, tokenizer, ckpt = load_checkpoint(os.path.join(config["out_dir"], "ckpt.pt"), "cpu")
    export_dir = config["export_dir"] or os.path.join("hf", os.path.basename(os.path.abspath(config["out_dir"])))
    export(model, tokenizer, export_dir, config["overwrite"], ckpt, config["out_dir"])
    print(f"wrote {export_dir}: load it with transformers' AutoModelForCausalLM and AutoTokenizer")


if __name__ == "__main__":
    common.run(main)
