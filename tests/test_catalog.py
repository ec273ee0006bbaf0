"""The offline model catalog (engine/assets/models): every published config.json there loads, estimates, and gives
the parameter count its publisher states (engine/catalog.py, vram.Shape)."""

import pytest

from engine import catalog, vram
from engine.estimate import EstimateRequest, estimate_run

# Parameters each publisher states, in billions, and where. "card": the model card on the Hugging Face Hub (its
# "Number of Parameters" or the size it names); "Hub size": the parameter total the Hub shows for the published
# safetensors; "Hub files": the published bf16 safetensors' bytes / 2. Gemma 3 4B/12B/27B are multimodal: the count
# is the language model alone, embedding + non-embedding parameters of the Gemma 3 Technical Report (arXiv
# 2503.19786, Table 1), without its 417M-parameter SigLIP vision encoder, which Shape does not read.
PUBLISHED_B = {
    "HuggingFaceTB/SmolLM2-135M": (0.135, "card: 135M"),
    "HuggingFaceTB/SmolLM2-135M-Instruct": (0.135, "card: 135M"),
    "HuggingFaceTB/SmolLM2-360M": (0.360, "card: 360M"),
    "HuggingFaceTB/SmolLM2-1.7B": (1.7, "card: 1.7B"),
    "HuggingFaceTB/SmolLM3-3B": (3.075, "Hub files: 4.97 GB + 1.18 GB of bf16 safetensors (the card says 3B)"),
    "Qwen/Qwen2.5-0.5B": (0.49, "card: Number of Parameters 0.49B"),
    "Qwen/Qwen2.5-1.5B": (1.54, "card: Number of Parameters 1.54B"),
    "Qwen/Qwen2.5-7B": (7.61, "card: Number of Parameters 7.61B"),
    "Qwen/Qwen2.5-14B": (14.7, "card: Number of Parameters 14.7B"),
    "Qwen/Qwen3-0.6B": (0.6, "card: Number of Parameters 0.6B"),
    "Qwen/Qwen3-1.7B": (1.7, "card: Number of Parameters 1.7B"),
    "Qwen/Qwen3-4B": (4.0, "card: Number of Parameters 4.0B"),
    "Qwen/Qwen3-8B": (8.2, "card: Number of Parameters 8.2B"),
    "Qwen/Qwen3-14B": (14.8, "card: Number of Parameters 14.8B"),
    "Qwen/Qwen3-32B": (32.8, "card: Number of Parameters 32.8B"),
    "Qwen/Qwen3-30B-A3B": (30.5, "card: Number of Parameters 30.5B in total and 3.3B activated"),
    "google/gemma-2-2b": (2.61, "Hub size: 2.61B"),
    "google/gemma-3-1b-pt": (1.000, "Gemma 3 report Table 1: 302M embedding + 698M non-embedding"),
    "google/gemma-3-4b-pt": (3.884, "Gemma 3 report Table 1: 675M embedding + 3,209M non-embedding"),
    "google/gemma-3-12b-pt": (11.771, "Gemma 3 report Table 1: 1,012M embedding + 10,759M non-embedding"),
    "google/gemma-3-27b-pt": (27.016, "Gemma 3 report Table 1: 1,416M embedding + 25,600M non-embedding"),
    "meta-llama/Llama-2-13b-hf": (13.0, "card: 13B"),
    "meta-llama/Llama-3.1-8B": (8.03, "Hub size: 8.03B"),
    "meta-llama/Llama-3.1-70B": (70.6, "Hub size: 70.6B"),
    "meta-llama/Llama-3.2-1B": (1.23, "card: 1.23B"),
    "meta-llama/Llama-3.2-3B": (3.21, "card: 3.21B"),
    "meta-llama/Llama-3.3-70B-Instruct": (70.0, "card: 70B"),
    "microsoft/Phi-3-mini-4k-instruct": (3.8, "card: 3.8B parameters"),
    "microsoft/Phi-4-mini-instruct": (3.8, "card: 3.8B parameters"),
    "mistralai/Mistral-7B-v0.3": (7.25, "Hub size: 7.25B"),
    "mistralai/Mistral-Small-24B-Base-2501": (24.0, "card: 24B parameters"),
    "openai/gpt-oss-20b": (21.0, "card: 21B parameters with 3.6B active"),
}


def test_every_catalog_file_loads_and_has_a_published_count():
    names = [entry.name for entry in catalog.entries()]
    assert len(names) == len(set(names)) >= 32
    assert sorted(names) == sorted(PUBLISHED_B), "a catalog model without a published count, or a count without one"


@pytest.mark.parametrize("name", sorted(PUBLISHED_B))
def test_param_count_within_2_percent_of_the_published_one(name):
    billions, source = PUBLISHED_B[name]
    computed = vram.Shape.from_config(catalog.load_config(name)).params() / 1e9
    assert computed == pytest.approx(billions, rel=0.02), f"{name}: {computed:.3f}B vs {billions}B ({source})"


@pytest.mark.parametrize("name", sorted(PUBLISHED_B))
def test_every_catalog_model_estimates(name):
    est = estimate_run(EstimateRequest(model=name))
    assert est.peak_gib > 0


def test_mixture_of_experts_fields():
    moe = {"Qwen/Qwen3-30B-A3B": (128, 8, 768), "openai/gpt-oss-20b": (32, 4, 2880)}
    for entry in catalog.entries():
        shape = vram.Shape.from_config(entry.config)
        if entry.name in moe:
            assert (shape.experts, shape.active_experts, shape.intermediate) == moe[entry.name]
        else:
            assert (shape.experts, shape.active_experts) == (1, 1)
    # every expert's weights count: 128 experts x 3 projections x 2048 x 768 x 48 layers are 29.0B of the 30.5B
    qwen = vram.Shape.from_config(catalog.load_config("Qwen/Qwen3-30B-A3B"))
    assert qwen.linear_params() > 128 * 3 * 2048 * 768 * 48


def test_gemma3_and_qwen3_attention_is_wider_than_hidden():
    # Qwen3-0.6B: 16 heads of 128 (q 2048 wide) on hidden 1024; Gemma-3 4B: 8 x 256 on 2560, the heads and vocab
    # from Gemma3TextConfig's defaults, as its published text_config leaves them out
    q06 = vram.Shape.from_config(catalog.load_config("Qwen/Qwen3-0.6B"))
    g4 = vram.Shape.from_config(catalog.load_config("google/gemma-3-4b-pt"))
    assert (q06.hidden, q06.q_width, q06.kv_width, q06.qk_norm) == (1024, 2048, 1024, True)
    assert (g4.hidden, g4.q_width, g4.kv_width, g4.vocab, g4.tied, g4.norms_per_layer) == (
        2560,
        2048,
        1024,
        262208,
        True,
        4,
    )
