"""Start a backend worker inside the backend's environment.

Run as a script by the core: ``python bootstrap.py --package NAME=DIR ... MODULE JOB.json``. It makes the
named packages importable from exactly those directories (the core's ``ocrbench`` package and the
backend's package) without putting the core environment's site-packages on the path, then runs
``MODULE.main(JOB.json)``. Standard library only.
"""

import importlib
import importlib.util
import sys


def _register(name: str, directory: str) -> None:
    spec = importlib.util.spec_from_file_location(name, f"{directory}/__init__.py",
                                                  submodule_search_locations=[directory])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def main(argv: list[str]) -> None:
    packages, rest = [], list(argv)
    while rest and rest[0] == "--package":
        packages.append(rest[1].split("=", 1))
        rest = rest[2:]
    module, job = rest
    for name, directory in packages:
        _register(name, directory)
    importlib.import_module(module).main([job])


if __name__ == "__main__":
    sys.path.pop(0)  # this file's directory: keep ocrbench's modules from shadowing top-level names
    main(sys.argv[1:])
