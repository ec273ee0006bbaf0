"""An Ollama `Modelfile` next to an exported GGUF: the chat template in Ollama's Go-template syntax, the model's
default system prompt and its end-of-turn stop tokens.

    ollama create task-api -f Modelfile && ollama run task-api

The Go template is written only for a chat format recognised by rendering the model's own Jinja template
(tokenizer.apply_chat_template) on probe conversations and comparing with that format's known rendering: ChatML
(`<|im_start|>role ... <|im_end|>`, SmolLM2, Qwen, ...) is the one recognised today. Any other format gets a
Modelfile without TEMPLATE (Ollama then picks a template from the file's own tokenizer.chat_template when it knows
it) and a sentence saying so. Ollama puts the SYSTEM line first as a system message when a chat has none, which is
what SmolLM2's Jinja template does with its default prompt.
"""

import json
import urllib.request

OLLAMA_URL = "http://127.0.0.1:11434"  # Ollama's default address
CHATML_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""
PROBE = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]


def chatml(messages: list[dict]) -> str:
    """ChatML as CHATML_TEMPLATE renders it, with the generation prompt."""
    return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + "<|im_start|>assistant\n"


def default_system(tokenizer) -> str | None:
    """The system prompt the Jinja template adds when a chat has none ("" if it adds none); None if not ChatML."""
    render = tokenizer.apply_chat_template(PROBE, tokenize=False, add_generation_prompt=True)
    given = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, *PROBE], tokenize=False, add_generation_prompt=True
    )
    if given != chatml([{"role": "system", "content": "S"}, *PROBE]):
        return None
    if render == chatml(PROBE):
        return ""
    head = "<|im_start|>system\n"
    if render.startswith(head) and render.endswith(chatml(PROBE)):
        system = render[len(head) : -len(chatml(PROBE))]
        if system.endswith("<|im_end|>\n") and render == chatml([{"role": "system", "content": system[:-11]}, *PROBE]):
            return system[:-11]
    return None


def _quoted(text: str) -> str:
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile(gguf_name: str, tokenizer) -> tuple[str, str | None]:
    """(Modelfile text, a sentence when the chat template could not be carried over, else None)."""
    lines = [f"FROM ./{gguf_name}"]
    system = default_system(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    stops = []
    note = None
    if system is None:
        note = (
            "The chat template is not ChatML, so the Modelfile has no TEMPLATE: Ollama uses the template in the "
            "GGUF if it recognises it (check with `ollama show NAME --template`)."
        )
    else:
        lines.append(f"TEMPLATE {_quoted(CHATML_TEMPLATE)}")
        if system:
            lines.append(f"SYSTEM {_quoted(system)}")
        stops += ["<|im_end|>", "<|im_start|>"]
    eos = tokenizer.eos_token
    if eos and eos not in stops:
        stops.append(eos)
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    return "\n".join(lines) + "\n", note


def ollama_name(text: str) -> str:
    """A model name Ollama accepts (lower-case letters, digits, '-', '_', '.'), from a run's directory name."""
    clean = "".join(c if c.isalnum() or c in "-_." else "-" for c in text.lower()).strip("-._")
    return clean or "tunewise-model"


def create_command(name: str) -> str:
    return f"ollama create {name} -f Modelfile"


def ollama_running(timeout_s: float = 0.5) -> bool:
    """Whether an Ollama server answers on this machine (its /api/version)."""
    try:
        with urllib.request.urlopen(f"{OLLAMA_URL}/api/version", timeout=timeout_s) as r:
            return r.status == 200
    except OSError:
        return False
