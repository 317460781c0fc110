# ocrbench: everything a fresh machine needs is installed by these targets.
#   make captcha   the main job: the PyTorch captcha recipe end to end
#   make test      installs the core and the backend envs the tests use, lints (ruff), runs pytest, then
#                  `ocrbench smoke`
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ocrbench-installed
TEST_BACKENDS ?= pytorch mxnet tensorflow mindspore paddleocr

.PHONY: install envs lint test unit captcha clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

envs: install
	for backend in $(TEST_BACKENDS); do $(BIN)/ocrbench env install $$backend || exit 1; done

comma := ,
empty :=
space := $(empty) $(empty)

lint: install
	$(BIN)/ruff check .

test: envs lint
	$(BIN)/python -m pytest -q -ra
	$(BIN)/ocrbench smoke --backend $(subst $(space),$(comma),$(strip $(TEST_BACKENDS))) \
		--junit build/smoke-junit.xml --out build/smoke-runs

unit: install
	$(BIN)/python -m pytest -q -m "not e2e"

captcha: install
	$(BIN)/ocrbench env install pytorch
	$(BIN)/ocrbench run recipes/captcha_pytorch.yml

clean:
	rm -rf $(VENV) runs build *.egg-info
