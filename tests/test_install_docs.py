"""The install commands the README gives (issue 23, 13) name what exists: the package is not
on any index, so it is installed from the clone or from a wheel built from it, and the wheel
named is the one ``pip wheel .`` builds for this version."""

import re
from pathlib import Path

import dt4h_spacy

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


def test_no_install_command_names_the_package_on_an_index():
    assert not re.search(r"pip install [\"']?dt4h[-_]spacy\[", README)
    assert 'pip install ".[ray]"' in README


def test_the_wheel_the_readme_names_is_this_versions():
    named = set(re.findall(r"dt4h_spacy-([\w.]+)-py3-none-any\.whl", README))
    assert named == {dt4h_spacy.__version__}
