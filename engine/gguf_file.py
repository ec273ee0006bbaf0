"""One GGUF file (llama.cpp, Ollama, LM Studio) from a Hugging Face model directory, written with ggml's own `gguf`
package; and an answer from such a file, loaded back through transformers.

    python -m engine.export RUN_DIR --gguf --quant q8_0 --out ~/task-api-gguf      # how a file gets written
    python -m engine.gguf_file ~/task-api-gguf/RUN-q8_0.gguf --prompt "Create a task: water the plants" --json

Only the llama architecture is mapped (LlamaForCausalLM: SmolLM2, Llama 1-3 without llama3 rope scaling, ...).
Tensor names come from `gguf.get_tensor_name_map(MODEL_ARCH.LLAMA, n_layers)`. q_proj/k_proj rows are permuted as
llama.cpp's convert_hf_to_gguf.py does (LlamaModel.permute): HF's rotary embedding pairs dimension i with i + d/2,
llama.cpp's pairs 2i with 2i + 1; transformers' GGUF loader undoes it (LlamaTensorProcessor._reverse_permute_weights).
Any other family, rope scaling or tokenizer kind gets a sentence and no file: a broken GGUF loads in llama.cpp and
then talks nonsense, which is worse than no file.
Exit codes of the CLI: 0 answered, 2 a file or prompt that cannot be used (the message says why).
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

# quant -> (type of 2-D weights, general.file_type); norms and other 1-D tensors stay F32, as llama.cpp keeps them
QUANTS = {"f16": ("F16", "MOSTLY_F16"), "bf16": ("BF16", "MOSTLY_BF16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0")}
# Smaller k-quants through llama.cpp's own binary when it is on PATH (this app never downloads one): they are
# made from an F16 file and the Python package has no quantizer for them.
QUANTIZE_BINARY = "llama-quantize"
BINARY_QUANTS = {"q4_k_m": "Q4_K_M"}
FAMILIES = {"LlamaForCausalLM": "LLAMA"}  # HF architecture -> gguf.MODEL_ARCH member
ROPE_TYPES = (None, "default", "linear")  # llama3/yarn/... need extra tensors or keys this writer does not write
SKIPPED_TENSOR = ".rotary_emb.inv_freq"  # recomputed from rope.freq_base by every loader


class GGUFError(ValueError):
    """A model this writer cannot turn into a GGUF; the message is for a person."""


def quant_choices() -> list[str]:
    """The quants offered here: the Python ones, plus Q4_K_M when llama.cpp's quantize binary is on PATH."""
    return list(QUANTS) + (list(BINARY_QUANTS) if shutil.which(QUANTIZE_BINARY) else [])


def unknown_quant(quant: str) -> str:
    if quant in BINARY_QUANTS:
        return (
            f"{quant.upper()} is made by llama.cpp's {QUANTIZE_BINARY}, which is not on PATH here (this app "
            "never downloads one). Build llama.cpp or install its package, or choose q8_0."
        )
    return f"Unknown GGUF quant '{quant}'. Choose one of: {', '.join(quant_choices())}."


def check_supported(model_dir: Path, tokenizer_dir: Path | None = None) -> dict:
    """config.json of a model this writer maps, or GGUFError with a sentence naming what is not supported. No torch."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    arch = (config.get("architectures") or ["?"])[0]
    if arch not in FAMILIES:
        raise GGUFError(
            f"GGUF export does not support the {config.get('model_type', '?')} family ({arch}) yet: "
            f"only {', '.join(FAMILIES)} (SmolLM2, Llama) is mapped. Export the merged model instead and "
            "convert it with llama.cpp's convert_hf_to_gguf.py. No file was written."
        )
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type")) not in ROPE_TYPES:
        raise GGUFError(
            f"GGUF export does not write {rope.get('rope_type')!r} rope scaling yet (only plain and "
            "linear); use llama.cpp's convert_hf_to_gguf.py on the merged model. No file was written."
        )
    tokenizer_json = Path(tokenizer_dir or model_dir) / "tokenizer.json"
    tokenizer = json.loads(tokenizer_json.read_text()).get("model", {}) if tokenizer_json.is_file() else {}
    if tokenizer.get("type") != "BPE" or tokenizer.get("byte_fallback"):
        raise GGUFError(
            "GGUF export writes byte-level BPE tokenizers (GPT-2 style, as SmolLM2 and Llama 3 have); "
            "this model's is a sentencepiece-style one. Use llama.cpp's convert_hf_to_gguf.py on the "
            "merged model. No file was written."
        )
    return config


def rope_theta(config: dict) -> float:
    return float((config.get("rope_parameters") or {}).get("rope_theta") or config.get("rope_theta") or 10000.0)


def permute(weights, n_head: int):
    """llama.cpp's LlamaModel.permute: within each head, rows (two halves) -> (interleaved pairs)."""
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _tensors(model_dir: Path):
    """(HF name, float32 numpy array) of every tensor in the directory's safetensors files."""
    from safetensors import safe_open

    for part in sorted(Path(model_dir).glob("*.safetensors")):
        with safe_open(str(part), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name).float().numpy()


def _add_tokenizer(writer, model_dir: Path, vocab_size: int, pre: str) -> None:
    """tokenizer.ggml.* and tokenizer.chat_template as llama.cpp's get_vocab_base + gguf.SpecialVocab write them."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            types.append(
                gguf.TokenType.NORMAL
                if i not in added
                else gguf.TokenType.CONTROL
                if added[i].special
                else gguf.TokenType.USER_DEFINED
            )
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=vocab_size)  # merges, bos/eos/pad, template
    if not special.merges:
        raise GGUFError(f"{model_dir}/tokenizer.json has no merges, so the GGUF's tokenizer would not work.")
    special.add_to_gguf(writer, quiet=True)
    if "bos" not in special.add_special_token:  # say it: llama.cpp's default for a BPE vocabulary is to add one
        probe = tokenizer("a")["input_ids"]
        writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def write(model_dir, path, quant: str = "q8_0", name: str = "model", pre: str = "default") -> dict:
    """Write `path` (.gguf) from an HF llama directory; {"tensors", "types"}. Raises GGUFError before writing."""
    if quant in BINARY_QUANTS:
        return _write_with_binary(model_dir, Path(path), quant, name, pre)
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType as QT

    model_dir, path = Path(model_dir), Path(path)
    config = check_supported(model_dir)
    if quant not in QUANTS:
        raise GGUFError(unknown_quant(quant))
    weight_type, file_type = QT[QUANTS[quant][0]], gguf.LlamaFileType[QUANTS[quant][1]]
    arch = gguf.MODEL_ARCH[FAMILIES[config["architectures"][0]]]
    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    head_dim = config.get("head_dim") or config["hidden_size"] // n_head
    names = gguf.get_tensor_name_map(arch, n_layers)

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(name)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_context_length(config.get("max_position_embeddings", 2048))
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(n_layers)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(rope["factor"])
    writer.add_layer_norm_rms_eps(config.get("rms_norm_eps", 1e-6))
    _add_tokenizer(writer, model_dir, config["vocab_size"], pre)

    types = {}
    for hf_name, data in _tensors(model_dir):
        if hf_name.endswith(SKIPPED_TENSOR) or (hf_name == "lm_head.weight" and config.get("tie_word_embeddings")):
            continue  # a tied output layer is token_embd itself, in llama.cpp as in HF
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise GGUFError(
                f"Tensor {hf_name} has no GGUF name in the llama map, so this model is not a plain "
                "llama; use llama.cpp's convert_hf_to_gguf.py. No file was written."
            )
        if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
            data = permute(data, n_head)
        elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
            data = permute(data, n_kv)
        kind = weight_type if data.ndim == 2 else QT.F32
        try:
            packed = gguf.quants.quantize(data, kind)
        except gguf.quants.QuantError:  # rows not a multiple of the block size: F16, as llama.cpp falls back
            kind, packed = QT.F16, data.astype(np.float16)
        writer.add_tensor(gguf_name, packed, raw_dtype=kind if packed.dtype == np.uint8 else None)
        types[kind.name] = types.get(kind.name, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": sum(types.values()), "types": types}


def _write_with_binary(model_dir: Path, path: Path, quant: str, name: str, pre: str) -> dict:
    binary = shutil.which(QUANTIZE_BINARY)
    if binary is None:
        raise GGUFError(unknown_quant(quant))
    f16 = path.with_name(path.stem + ".f16-input.gguf")
    try:
        result = write(model_dir, f16, "f16", name, pre)
        done = subprocess.run([binary, str(f16), str(path), BINARY_QUANTS[quant]], capture_output=True, text=True)
        if done.returncode != 0 or not path.is_file():
            raise GGUFError(f"{QUANTIZE_BINARY} failed ({(done.stderr or done.stdout).strip()[-300:]}).")
    finally:
        f16.unlink(missing_ok=True)
    return {**result, "types": {BINARY_QUANTS[quant]: result["tensors"]}, "quantized_by": binary}


def read_metadata(path) -> dict:
    """The scalar and string metadata of a GGUF file (arrays as their length). No torch."""
    import gguf

    fields = {}
    for key, field in gguf.GGUFReader(path).fields.items():
        if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
            fields[key] = len(field.data)
        else:
            fields[key] = field.contents()
    return fields


def _from_gguf(loaded_class, path: Path):
    """engine.generate.Loaded with the GGUF file as "the base" (no run, no adapter): the same chat template and
    greedy decoding as every other answer in the app, from weights dequantized by transformers' GGUF loader."""

    class FromGGUF(loaded_class):
        def __init__(self):  # noqa: D107  (Loaded.__init__ loads from a directory; this loads from one file)
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from engine.generate import set_threads

            set_threads()
            self.adapter, self._tuned = False, None
            self.tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
            self._base = AutoModelForCausalLM.from_pretrained(
                str(path.parent), gguf_file=path.name, dtype=torch.float32
            ).eval()
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.tokenizer.padding_side = "left"
            self.context = int(getattr(self._base.config, "max_position_embeddings", 0) or 2048)

    return FromGGUF()


def answer_main(argv=None) -> int:
    """python -m engine.gguf_file FILE --prompt TEXT [--json]: a greedy answer from the file itself."""
    from engine import access, users
    from engine.generate import MAX_NEW_TOKENS, Loaded, ResultError
    from engine.runs import sidejobs

    p = argparse.ArgumentParser(prog="python -m engine.gguf_file", description="Answer a prompt with a GGUF file.")
    p.add_argument("gguf", type=Path)
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    p.add_argument("--json", action="store_true")
    p.add_argument("--as", dest="acting", metavar="NAME", help="act as this workshop account (its paths only)")
    a = p.parse_args(argv)
    try:
        actor = users.acting(a.acting)
        path = access.confine(a.gguf, actor, "GGUF file")
        if path.suffix != ".gguf" or not path.is_file():
            raise ResultError(f"{path} is not a .gguf file. Export one first (Try & Export, GGUF).")
        if not a.prompt.strip():
            raise ResultError("The prompt is empty; type a request for the model.")
        started = time.time()
        with sidejobs.one_at_a_time(actor, f"an answer from {path.name}"):
            loaded = _from_gguf(Loaded, path)
            text = loaded.generate([a.prompt], "base", max_new_tokens=a.max_new_tokens)[0]
    except (ResultError, access.AccessError, users.AuthError, sidejobs.Busy) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = {
        "prompt": a.prompt,
        "answers": {"gguf": text},
        "file": str(path),
        "seconds": round(time.time() - started, 2),
    }
    print(json.dumps(result, ensure_ascii=False) if a.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(answer_main())
