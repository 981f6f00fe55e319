"""What a wheel of the package holds: every module directory is a package (setuptools'
find includes only directories with an __init__.py), and the shipped models are files."""

from pathlib import Path

from freecg_md.io import SHIPPED_MODELS, shipped_model

PACKAGE = Path(__file__).resolve().parents[1] / "freecg_md"


def test_every_directory_of_modules_is_a_package():
    missing = [str(d.relative_to(PACKAGE)) for d in PACKAGE.rglob("*")
               if d.is_dir() and "__pycache__" not in d.parts and any(d.glob("*.py"))
               and not (d / "__init__.py").is_file()]
    assert missing == []


def test_every_shipped_model_is_a_file_in_the_package():
    for name in SHIPPED_MODELS:
        path = shipped_model(name)
        assert path.is_file() and not path.is_symlink() and path.is_relative_to(PACKAGE)
