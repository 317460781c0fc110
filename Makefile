# ocrbench: everything a fresh machine needs is installed by these targets.
#   make captcha   the main job: the PyTorch captcha recipe end to end
#   make test      installs the core and the backend envs the tests use, lints (ruff), runs pytest, then
#                  `ocrbench smoke`
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ocrbench-installed
TEST_BACKENDS ?= pytorch mxnet tensorflow mindspore paddleocr

.PHONY: install envs browser lint test unit captcha clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,mlflow]'
	touch $(STAMP)

install: $(STAMP)

envs: install
	for backend in $(TEST_BACKENDS); do $(BIN)/ocrbench env install $$backend || exit 1; done

# headless Chromium for the HTML report's layout test (tests/test_compare.py), from Debian's packages
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }
	@chromium --version

comma := ,
empty :=
space := $(empty) $(empty)

lint: install
	$(BIN)/ruff check .

test: envs browser lint
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
