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

Settings no architecture computes exactly (norm="rmsnorm", qk_norm=True) stop with an error.
Weights are written in the safetensors format by write_safetensors below (an 8-byte length, a
JSON header, raw little-endian tensors), so exporting needs nothing beyond torch.
"""

import datetime
import glob
import json
import os
import shutil
import sys
import tempfile

import torch

import common
import sample

DEFAULTS = dict(
    out_dir="out-fawiki-small",  # folder holding ckpt.pt; its eval_*.json reports go into the model card
    export_dir="",  # the transformers model directory to write; empty = hf/<name of out_dir>
    overwrite=False,  # replace export_dir if it exists and is not empty
)
EOT = "<|endoftext|>"
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


# -----------------------------------------------------------------------------
# weights

def check_exportable(config):
    """Refuse, in one line, a model that no transformers architecture computes exactly."""
    if config.norm != "layernorm":
        raise common.UsageError(f"norm={config.norm!r} cannot be exported: GPT-NeoX and GPT-2, the "
                                f"architectures that match our blocks, use LayerNorm")
    if config.qk_norm:
        raise common.UsageError("qk_norm=True cannot be exported: GPT-NeoX and GPT-2 have no "
                                "normalisation of queries and keys")


def bias_or_zeros(state, name):
    """The bias of our Linear or LayerNorm `name`, or zeros where it has none (bias=False)."""
    bias = state.get(f"{name}.bias")
    return bias if bias is not None else state[f"{name}.weight"].new_zeros(state[f"{name}.weight"].size(0))


def copy_norm(tensors, state, ours, theirs):
    """Our LayerNorm `ours` as their LayerNorm `theirs`, which always has a bias."""
    tensors[f"{theirs}.weight"] = state[f"{ours}.weight"]
    tensors[f"{theirs}.bias"] = bias_or_zeros(state, ours)


def qkv_by_head(t, n_head):
    """Rows [all q; all k; all v] of our fused projection -> [q, k, v of head 0; of head 1; ...]."""
    return t.reshape(3, n_head, t.size(0) // (3 * n_head), -1).transpose(0, 1).reshape(t.shape)


def neox_state(model):
    """(config.json fields, tensors) of GPTNeoXForCausalLM computing the rotary GPT."""
    c, state = model.config, model.state_dict()
    tensors = {"gpt_neox.embed_in.weight": state["wte.weight"]}
    for i in range(c.n_layer):
        ours, theirs = f"blocks.{i}.", f"gpt_neox.layers.{i}."
        for our_norm, their_norm in (("norm1", "input_layernorm"), ("norm2", "post_attention_layernorm")):
            copy_norm(tensors, state, ours + our_norm, theirs + their_norm)
        tensors[f"{theirs}attention.query_key_value.weight"] = qkv_by_head(state[f"{ours}attn.qkv.weight"], c.n_head)
        tensors[f"{theirs}attention.dense.weight"] = state[f"{ours}attn.proj.weight"]
        if c.bias:  # attention_bias=False leaves NeoX's attention without biases, like ours
            tensors[f"{theirs}attention.query_key_value.bias"] = qkv_by_head(state[f"{ours}attn.qkv.bias"], c.n_head)
            tensors[f"{theirs}attention.dense.bias"] = state[f"{ours}attn.proj.bias"]
        for our_linear, their_linear in (("mlp.fc", "mlp.dense_h_to_4h"), ("mlp.proj", "mlp.dense_4h_to_h")):
            tensors[f"{theirs}{their_linear}.weight"] = state[f"{ours}{our_linear}.weight"]
            tensors[f"{theirs}{their_linear}.bias"] = bias_or_zeros(state, ours + our_linear)  # NeoX's MLP has biases
    copy_norm(tensors, state, "norm_f", "gpt_neox.final_layer_norm")
    if not c.tie_weights:
        tensors["embed_out.weight"] = state["lm_head.weight"]  # the name every transformers version reads
    fields = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox",
              "hidden_size": c.n_embd, "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head,
              "intermediate_size": 4 * c.n_embd, "max_position_embeddings": c.block_size,
              "rotary_pct": 1.0, "rotary_emb_base": 10000, "use_parallel_residual": False,
              "attention_bias": c.bias, "layer_norm_eps": 1e-5, "attention_dropout": 0.0, "hidden_dropout": 0.0}
    return fields, tensors


def gpt2_state(model):
    """(config.json fields, tensors) of GPT2LMHeadModel computing the GPT with learned positions."""
    c, state = model.config, model.state_dict()
    tensors = {"transformer.wte.weight": state["wte.weight"], "transformer.wpe.weight": state["wpe.weight"]}
    for i in range(c.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for our_norm, their_norm in (("norm1", "ln_1"), ("norm2", "ln_2")):
            copy_norm(tensors, state, ours + our_norm, theirs + their_norm)
        for our_linear, their_linear in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                                         ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            tensors[f"{theirs}{their_linear}.weight"] = state[f"{ours}{our_linear}.weight"].T  # Conv1D: (in, out)
            tensors[f"{theirs}{their_linear}.bias"] = bias_or_zeros(state, ours + our_linear)
    copy_norm(tensors, state, "norm_f", "transformer.ln_f")
    if not c.tie_weights:
        tensors["lm_head.weight"] = state["lm_head.weight"]
    fields = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
              "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head, "n_inner": 4 * c.n_embd,
              "n_positions": c.block_size, "layer_norm_epsilon": 1e-5, "scale_attn_weights": True,
              "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}
    return fields, tensors


def model_files(model, eot_id):
    """(config.json as a dict, {name: tensor}) of the transformers model equal to `model`."""
    c = model.config
    check_exportable(c)
    fields, tensors = (neox_state if c.pos_emb == "rope" else gpt2_state)(model)
    # transformers' "gelu" is the exact (erf) GELU, like F.gelu; its "relu2" is squared ReLU, like ours
    fields.update({"hidden_act" if c.pos_emb == "rope" else "activation_function": c.mlp,
                   "vocab_size": c.vocab_size, "tie_word_embeddings": c.tie_weights,
                   "bos_token_id": eot_id, "eos_token_id": eot_id, "use_cache": True,
                   "torch_dtype": str(model.wte.weight.dtype).removeprefix("torch.")})
    return fields, tensors


def write_safetensors(path, tensors, metadata=None):
    """Write {name: tensor} in the safetensors format: an 8-byte little-endian header length, a
    JSON header giving each tensor's dtype, shape and byte range, then the raw bytes in that order."""
    if sys.byteorder != "little":
        raise common.UsageError("safetensors stores little-endian bytes; this machine is big-endian")
    header, offset, blobs = {"__metadata__": metadata or {"format": "pt"}}, 0, []
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise common.UsageError(f"cannot export {name}: dtype {tensor.dtype} is not float32/16 or bfloat16")
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": SAFETENSORS_DTYPES[tensor.dtype], "shape": list(tensor.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the tensors start 8-byte aligned
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for data in blobs:
            f.write(data)


# -----------------------------------------------------------------------------
# tokenizer

def byte_characters():
    """GPT-2's printable stand-in for each byte, the alphabet of byte-level BPE files: bytes that
    are printable Latin-1 characters stand for themselves, the other 68 take chars 256, 257, ..."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + n) for n, b in enumerate(others)}}


def hf_tokenizer(tokenizer):
    """Our tokenizer in the Hugging Face tokenizers JSON format: our split pattern as a Split
    pre-tokenizer, bytes mapped to characters, our merges in rank order, <|endoftext|> as a special
    token put before every text (a document starts after one, as in training) and a byte-level decoder."""
    chars = byte_characters()
    vocab = {}
    for i in range(256 + len(tokenizer.merges)):
        token = "".join(chars[b] for b in tokenizer.token_bytes[i])
        if token in vocab:  # a BPE can reach the same bytes by two merge paths; HF keeps one id per string
            raise common.UsageError(f"tokens {vocab[token]} and {i} are the same bytes {tokenizer.token_bytes[i]!r}: "
                                    f"the transformers tokenizer format cannot hold both")
        vocab[token] = i
    merges = [["".join(chars[b] for b in tokenizer.token_bytes[a]), "".join(chars[b] for b in tokenizer.token_bytes[b])]
              for a, b in tokenizer.merges]
    specials = [{"id": i, "content": token, "single_word": False, "lstrip": False, "rstrip": False,
                 "normalized": False, "special": True} for token, i in tokenizer.special_tokens.items()]
    vocab.update(tokenizer.special_tokens)
    eot = {"SpecialToken": {"id": EOT, "type_id": 0}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": specials, "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tokenizer.pattern_text}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [eot, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [eot, {"Sequence": {"id": "A", "type_id": 0}}, eot, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {EOT: {"id": EOT, "ids": [tokenizer.eot_id], "tokens": [EOT]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


# -----------------------------------------------------------------------------
# the directory

def generation_config(eot_id):
    """sample.py's default decoding, in transformers' terms."""
    d = sample.DEFAULTS
    return {"bos_token_id": eot_id, "eos_token_id": eot_id, "pad_token_id": eot_id,
            "do_sample": not d["greedy"], "max_new_tokens": d["max_new_tokens"], "temperature": d["temperature"],
            "top_k": d["top_k"], "top_p": d["top_p"], "repetition_penalty": d["repetition_penalty"]}


def figure(value, digits=4):
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def model_card(model, tokenizer, ckpt, out_dir, architecture):
    """README.md: what the model is, from the checkpoint, prepare.py's meta.json and eval.py's reports."""
    c, config = model.config, (ckpt or {}).get("config") or {}
    lines = ["---", "language: fa", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [gpt, persian, from-scratch]", "---", "",
             "# A small Persian GPT", "",
             f"A {model.num_params() / 1e6:.2f} M-parameter GPT trained from scratch, exported as "
             f"`{architecture}` (which computes it exactly).", "",
             "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
             'tokenizer, model = AutoTokenizer.from_pretrained("."), AutoModelForCausalLM.from_pretrained(".")',
             'print(tokenizer.decode(model.generate(**tokenizer("ایران کشوری است", return_tensors="pt"))[0], '
             'skip_special_tokens=True))', "```", "",
             "## Model", "",
             f"{c.n_layer} layers, {c.n_head} heads, width {c.n_embd}, context {c.block_size} tokens, "
             f"{'rotary' if c.pos_emb == 'rope' else 'learned'} positions, pre-norm LayerNorm, "
             f"{'GELU' if c.mlp == 'gelu' else 'squared-ReLU'} MLP, "
             f"{'output head tied to the embedding' if c.tie_weights else 'untied output head'}.", "",
             "## Tokenizer", "",
             f"Byte-level BPE of {tokenizer.vocab_size:,} ids ({len(tokenizer.merges):,} merges) with a split "
             "pattern that keeps Persian letters, diacritics and the ZWNJ inside words together and cuts digits "
             "into runs of at most three. `<|endoftext|>` separates documents; the tokenizer puts one before "
             "every text, as the model read every document after one in training.", "",
             "The training text was normalized before tokenization (Arabic ي ك → Persian ی ک, Arabic-Indic "
             "digits → Persian digits, kashida and, by default, short-vowel marks removed, ZWNJ tidied). "
             "This tokenizer does not do that: normalize new text the same way for the best results.", ""]
    meta_path = os.path.join(config.get("data_dir", ""), "meta.json")
    if config.get("data_dir") and os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        lines += ["## Data", "", "| split | documents | tokens | bytes of text |", "|---|---|---|---|"]
        lines += [f"| {split} | {figure(n['documents'])} | {figure(n['tokens'])} | {figure(n['bytes'])} |"
                  for split, n in meta.get("splits", {}).items()]
        inputs = [os.path.basename(i.get("path") or i.get("url", "")) for i in meta.get("inputs", [])]
        lines += ["", f"Inputs: {', '.join(f'`{name}`' for name in inputs)}.", ""]
    if ckpt:
        training = {"steps": ckpt.get("iter_num"), "training time (s)": ckpt.get("train_seconds"),
                    "best val loss": ckpt.get("best_val_loss"),
                    **{key: config.get(key) for key in ("batch_size", "gradient_accumulation_steps",
                                                         "learning_rate", "optimizer", "lr_schedule", "seed")}}
        lines += ["## Training", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {figure(value)} |" for key, value in training.items() if value is not None]
        lines.append("")
    reports = sorted(glob.glob(os.path.join(out_dir, "eval_*.json"))) if out_dir else []
    if reports:
        lines += ["## Evaluation (eval.py)", "",
                  "| input | tokens | cross-entropy | perplexity | bits per byte | BLEU | chrF |", "|---|---|---|---|---|---|---|"]
        for path in reports:
            with open(path, encoding="utf-8") as f:
                report = json.load(f)
            r = report.get("results", {})
            name = os.path.basename(next(iter(report.get("input", {}).values()), path))
            split = f" ({report['split']} split)" if report.get("split") else ""
            lines.append(" | ".join([f"| `{name}`{split}", *(figure(r.get(key, "")) for key in
                                     ("tokens", "cross_entropy", "perplexity", "bits_per_byte", "bleu", "chrf"))]) + " |")
        lines.append("")
    lines.append(f"Exported {datetime.date.today().isoformat()} by `export.py`.")
    return "\n".join(lines) + "\n"


def export(model, tokenizer, export_dir, overwrite=False, ckpt=None, out_dir=""):
    """Write the transformers directory for model and tokenizer into export_dir, all or nothing."""
    if tokenizer.eot_id is None:
        raise common.UsageError("the tokenizer has no <|endoftext|> token")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise common.UsageError(f"export_dir {export_dir} is a file")
    if os.path.isdir(export_dir) and os.listdir(export_dir) and not overwrite:
        raise common.UsageError(f"export_dir {export_dir} is not empty (use --overwrite=True to replace it)")
    fields, tensors = model_files(model, tokenizer.eot_id)
    parent = os.path.dirname(os.path.abspath(export_dir))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(os.path.abspath(export_dir))}.")
    try:
        write_safetensors(os.path.join(tmp, "model.safetensors"), tensors)
        files = {
            "config.json": fields,
            "tokenizer.json": hf_tokenizer(tokenizer),
            "tokenizer_config.json": {
                "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": EOT, "eos_token": EOT, "pad_token": EOT,
                "model_max_length": model.config.block_size, "clean_up_tokenization_spaces": False},
            "generation_config.json": generation_config(tokenizer.eot_id),
        }
        for name, content in files.items():
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                json.dump(content, f, ensure_ascii=False, indent=2)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(model, tokenizer, ckpt, out_dir, fields["architectures"][0]))
        os.chmod(tmp, 0o777 & ~common.current_umask())  # mkdtemp makes a private directory
        if os.path.isdir(export_dir):  # move the old one aside, put the new one in, then delete the old
            old = tempfile.mkdtemp(dir=parent, prefix=".old-export.")
            os.rename(export_dir, os.path.join(old, "dir"))
            os.rename(tmp, export_dir)
            shutil.rmtree(old)
        else:
            os.rename(tmp, export_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    config, positional = common.configure(DEFAULTS, sys.argv[1:] if argv is None else argv)
    if positional:
        raise common.UsageError(f"unexpected argument {positional[0]!r} (use --key=value)")
    from model import load_out_dir_checkpoint
    model, tokenizer, ckpt = load_out_dir_checkpoint(config["out_dir"], "cpu")
    export_dir = config["export_dir"] or os.path.join("hf", os.path.basename(os.path.abspath(config["out_dir"])))
    export(model, tokenizer, export_dir, config["overwrite"], ckpt, config["out_dir"])
    print(f"wrote {export_dir}: load it with transformers' AutoModelForCausalLM and AutoTokenizer")


if __name__ == "__main__":
    common.run(main)
