# Set-up and everyday commands. Every target is idempotent: stamps in .venv/ record what is
# already installed, so a second `make test` starts the tests within seconds.
#
# Pick your own torch build by overriding TORCH_SPEC, e.g.
#   make test TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124"
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
STAMPS := $(VENV)/.stamps

.PHONY: install demo test lint bench data train ship clean-venv

$(STAMPS)/venv:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel
	mkdir -p $(STAMPS) && touch $@

# torch first, as its own overridable step, so nothing later pulls a different build.
$(STAMPS)/torch: $(STAMPS)/venv
	$(PIP) install $(TORCH_SPEC)
	touch $@

# torch-cluster compiles against the installed torch (15-25 min on 2 cores, once; pip
# caches the wheel). Build isolation is off because the build must import that torch.
$(STAMPS)/torch-cluster: $(STAMPS)/torch
	$(PIP) install --no-build-isolation "torch-cluster>=1.6"
	touch $@

# The fused CPU kernels (freecg_md/nn/cpu/csrc) compile on first use; building them here keeps
# that minute out of the first MD run. A failed build only warns: torch operations are used.
$(STAMPS)/package: $(STAMPS)/torch-cluster pyproject.toml
	$(PIP) install -e ".[data,analysis,openmm,dev]"
	$(PY) -c "from freecg_md.nn.cpu.kernels import load_kernels; load_kernels()"
	touch $@

install: $(STAMPS)/package

# --resume: a finished run is kept (only its plots are redrawn), an interrupted one continues.
demo: install
	$(PY) simulations/remd_chignolin.py --resume

test: install
	OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

bench: install
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_calculator.py
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_replicas.py
	OMP_WAIT_POLICY=PASSIVE $(PY) benchmarks/bench_gbn2.py

# Reference data for the chignolin model (resumable; about an hour of labelling on 2 cores).
data: install
	scripts/make_chignolin_data.sh 2

# Train the chignolin model and its ablation without group CG as shipped: 5 epochs on the
# first data part, then one epoch of fine-tuning on both parts (configs/*_finetune.json).
# Every run resumes exactly where it stopped; finished runs are kept.
train: install
	$(PY) -m freecg_md.train configs/chignolin.json --resume --max-epochs 5
	$(PY) -m freecg_md.train configs/chignolin_ablation.json --resume --max-epochs 5
	$(PY) -m freecg_md.train configs/chignolin_finetune.json --resume
	$(PY) -m freecg_md.train configs/chignolin_ablation_finetune.json --resume

# The shipped models: each run's best weights so far, measured on its test split. The
# default, its committee partner and the ablation at equal data are round 2 of
# studies/active_learning/ (round2.sh exports them there).
ship: install
	$(PY) -m freecg_md.train.export configs/chignolin_finetune.json models/chignolin_v1.pt \
	  --description "$(CLASSICAL_DOMAIN)"
	$(PY) -m freecg_md.train.export configs/chignolin_ablation_finetune.json \
	  models/chignolin_visnet_v1.pt --description "$(CLASSICAL_DOMAIN)"
	cp runs/active/round_2/round2_m0.pt models/chignolin.pt
	cp runs/active/round_2/round2_m1.pt models/chignolin_m1.pt
	cp runs/active/round_2/round2_ablation.pt models/chignolin_visnet.pt
	for m in models/chignolin.pt models/chignolin_m1.pt models/chignolin_visnet.pt; do \
	  $(PY) -m freecg_md.cli domain $$m $(AL_DATA) --temperatures 300 350 400 450 520 600 \
	    --reference "GFN2-xTB (tblite), ALPB(water), charge -2" --description "$(AL_DOMAIN)"; \
	done

AL_DATA = data/chignolin/labelled data/chignolin/labelled_flexible \
	data/chignolin/active_round1/md_300_450K data/chignolin/active_round1/md_500K \
	data/chignolin/active_round1/md_600K data/chignolin/active_round2/md_committee
CLASSICAL_DOMAIN = CLN025 chignolin (YYDPETGTWY) protonated at pH 7, 166 atoms, net charge -2, \
	in conformations from amber14/GBn2 MD
AL_DOMAIN = CLN025 chignolin (YYDPETGTWY) protonated at pH 7, 166 atoms, net charge -2, in \
	conformations from amber14/GBn2 MD and from the FreeCG models' own MD at 300-600 K (two \
	rounds of active learning)

clean-venv:
	rm -rf $(VENV)
